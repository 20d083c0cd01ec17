"""A supernode API in-process, for driving the P2P side of a download without processes.

:class:`StandInSupernode` implements :class:`dfget.protocol.supernode.SupernodeApi` with a
small scheduler of its own (source pattern: raw pieces): each pull hands out up to four pieces
nobody reported, from wherever ``holder`` says (by default the origin URL, so the real piece
fetcher moves real bytes over a socket), and answers 600 once every piece was reported stored.
Every call is recorded; ``script`` can replace the answer of a given pull.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dfget.config import Node
from dfget.protocol.codes import (
    CDN_SOURCE_SOURCE,
    CODE_PEER_CONTINUE,
    CODE_PEER_FINISH,
    CODE_PEER_WAIT,
    CODE_SUCCESS,
    RESULT_FAILED,
    RESULT_SEMI_SUCCESS,
)
from dfget.protocol.messages import (
    PieceErrorReport,
    PieceReport,
    PieceTask,
    PullAnswer,
    RegisterRequest,
    Registration,
    SupernodeError,
)
from dfget.protocol.pieces import piece_count
from dfget.protocol.ranges import PieceRange

TASK_ID = "a" * 64
PER_PULL = 4


@dataclass(frozen=True)
class Holder:
    """Where a piece is sent: ``path`` is a URL for the origin, else a peer path."""

    path: str
    cid: str = "source"
    peer_ip: str = ""
    peer_port: int = 0


@dataclass
class StandInSupernode:
    node: Node
    length: int
    piece_size: int
    holder: Callable[[int, int], Holder]  # (piece, times handed out before) -> holder
    task_id: str = TASK_ID
    register_code: int = CODE_SUCCESS
    reachable: bool = True
    script: dict[int, PullAnswer | Exception] = field(default_factory=dict)  # by pull number
    registrations: list[RegisterRequest] = field(default_factory=list)
    pulls: list[PieceReport] = field(default_factory=list)
    stored_reports: list[tuple[str, str]] = field(default_factory=list)  # (dst_cid, range)
    stored_task_ids: set[str] = field(default_factory=set)  # task ids /peer/piece/suc named
    errors: list[PieceErrorReport] = field(default_factory=list)
    metrics_sent: list[dict[str, Any]] = field(default_factory=list)
    downs: int = 0
    stored: set[int] = field(default_factory=set)
    handed_out: dict[int, int] = field(default_factory=dict)  # piece -> times
    running: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def pieces(self) -> int:
        return piece_count(self.length, self.piece_size, wrapped=False)

    @property
    def registration(self) -> Registration:
        return Registration(
            self.node, self.task_id, self.length, self.piece_size, CDN_SOURCE_SOURCE
        )

    def register(self, request: RegisterRequest) -> tuple[int, Registration | None, str]:
        if not self.reachable:
            raise SupernodeError(f"{self.node.address}: connection refused")
        self.registrations.append(request)
        if self.register_code != CODE_SUCCESS:
            return self.register_code, None, "refused"
        return CODE_SUCCESS, self.registration, ""

    def pull(self, registration: Registration, cid: str, report: PieceReport) -> PullAnswer:
        piece_range, result = report.range, report.result
        with self.lock:
            self.pulls.append(report)
            scripted = self.script.get(len(self.pulls))
            if isinstance(scripted, Exception):
                raise scripted
            if scripted is not None:
                return scripted
            if piece_range:
                piece = PieceRange.parse(piece_range).piece_num()
                self.running.discard(piece)
                if result == RESULT_SEMI_SUCCESS:
                    self.stored.add(piece)
                elif result == RESULT_FAILED:
                    self.stored.discard(piece)
            if len(self.stored) >= self.pieces:
                return PullAnswer(CODE_PEER_FINISH)
            free = [
                p for p in range(self.pieces) if p not in self.stored and p not in self.running
            ][:PER_PULL]
            if not free:
                return PullAnswer(CODE_PEER_WAIT)
            return PullAnswer(CODE_PEER_CONTINUE, pieces=[self._task(p) for p in free])

    def _task(self, piece: int) -> PieceTask:
        times = self.handed_out.get(piece, 0)
        self.handed_out[piece] = times + 1
        self.running.add(piece)
        holder = self.holder(piece, times)
        return PieceTask(
            range=str(PieceRange.of_piece(piece, self.piece_size)),
            piece_num=piece,
            piece_size=self.piece_size,
            piece_md5="",
            cid=holder.cid,
            peer_ip=holder.peer_ip,
            peer_port=holder.peer_port,
            path=holder.path,
        )

    def piece_success(self, task_id: str, cid: str, dst_cid: str, piece_range: str) -> None:
        with self.lock:
            self.stored_reports.append((dst_cid, piece_range))
            self.stored_task_ids.add(task_id)
            piece = PieceRange.parse(piece_range).piece_num()
            self.stored.add(piece)
            self.running.discard(piece)

    def piece_error(self, report: PieceErrorReport) -> None:
        with self.lock:
            self.errors.append(report)

    def metrics(self, body: dict[str, Any]) -> None:
        self.metrics_sent.append(body)

    def service_down(self, task_id: str, cid: str) -> bool:
        self.downs += 1
        return True
