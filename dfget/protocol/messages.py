"""The supernode API's requests and answers as typed values; every field of an answer is
checked here, where it enters, so the rest of the downloader never sees an unchecked value."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from dfget import PROTOCOL_VERSION
from dfget.config import Node
from dfget.errors import NetworkError
from dfget.protocol.codes import (
    CDN_SOURCE_SOURCE,
    CDN_SOURCE_SUPERNODE,
    CODE_PEER_CONTINUE,
    CODE_SUCCESS,
    RESULT_INVALID,
    STATUS_START,
)
from dfget.protocol.pieces import MAX_PIECE_SIZE, MiB, piece_count
from dfget.protocol.ranges import PieceRange


class SupernodeError(NetworkError):
    """A supernode call failed: transport error, non-200 HTTP status or unusable body."""


@dataclass(frozen=True, slots=True)
class RegisterRequest:
    """What dfget tells a supernode when it registers a download (``/peer/registry``); the
    client adds the supernode's own address. Keys go out in dfget 1.0.6's order, optional ones
    only when set."""

    raw_url: str
    task_url: str
    cid: str
    ip: str
    host_name: str
    port: int  # our peer server's; 0: this peer serves nothing
    path: str
    md5: str = ""
    identifier: str = ""
    call_system: str = ""
    headers: tuple[str, ...] = ()
    dfdaemon: bool = False
    insecure: bool = False
    root_cas: tuple[str, ...] = ()  # base64 PEM files

    def as_json(self, supernode_ip: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "superNodeIp": supernode_ip,
            "rawUrl": self.raw_url,
            "taskUrl": self.task_url,
            "cid": self.cid,
            "ip": self.ip,
            "hostName": self.host_name,
            "port": self.port,
            "path": self.path,
            "version": PROTOCOL_VERSION,
        }
        if self.md5:
            body["md5"] = self.md5
        elif self.identifier:
            body["identifier"] = self.identifier
        optional = {
            "callSystem": self.call_system,
            "headers": list(self.headers),
            "dfdaemon": self.dfdaemon,
            "insecure": self.insecure,
            "rootCAs": list(self.root_cas),
        }
        body.update((key, value) for key, value in optional.items() if value)
        return body


@dataclass(frozen=True, slots=True)
class PieceReport:
    """What a pull (``/peer/task``) tells the supernode about one piece: its holder, range,
    result and status; the first pull of a download reports nothing (status 700)."""

    dst_cid: str = ""
    range: str = ""
    result: int = RESULT_INVALID
    status: int = STATUS_START


@dataclass(frozen=True, slots=True)
class PieceErrorReport:
    """``/peer/piece/error``: a holder's piece was missing or wrong."""

    error_type: str
    src_cid: str
    dst_cid: str
    dst_ip: str
    task_id: str
    range: str
    real_md5: str = ""
    expected_md5: str = ""

    def query(self) -> list[tuple[str, object]]:
        """The query parameters, in dfget 1.0.6's order."""
        return [
            ("errorType", self.error_type),
            ("srcCid", self.src_cid),
            ("dstCid", self.dst_cid),
            ("dstIp", self.dst_ip),
            ("taskId", self.task_id),
            ("range", self.range),
            ("realMd5", self.real_md5),
            ("expectedMd5", self.expected_md5),
        ]


@dataclass(frozen=True, slots=True)
class Registration:
    node: Node
    task_id: str
    file_length: int
    piece_size: int
    cdn_source: str

    @classmethod
    def from_envelope(
        cls, envelope: dict[str, Any], node: Node
    ) -> tuple[int, Registration | None, str]:
        """``(code, registration, msg)`` of a /peer/registry answer; a registration only
        with code 200."""
        code = number(envelope, "code", 0, 999)
        msg = text(envelope, "msg")
        if code != CODE_SUCCESS:
            return code, None, msg
        return code, cls.from_answer(envelope.get("data"), node), msg

    @classmethod
    def from_answer(cls, data: object, node: Node) -> Registration:
        """The ``data`` of a 200 registration answer, every field checked: a task id of 64
        hex digits, a known cdnSource, a length up to 1 PiB, a piece size up to v1's 15 MiB
        (wrapped pieces: whole MiB, or their frame heads would be ambiguous)."""
        if not isinstance(data, dict):
            raise SupernodeError("supernode sent a registration answer without data")
        registration = cls(
            node=node,
            task_id=text(data, "taskId"),
            file_length=number(data, "fileLength", -1, MAX_FILE_LENGTH, default=-1),
            piece_size=number(data, "pieceSize", 6, MAX_PIECE_SIZE),
            cdn_source=text(data, "cdnSource") or CDN_SOURCE_SUPERNODE,
        )
        if not re.fullmatch(r"[0-9a-f]{64}", registration.task_id):
            raise SupernodeError(f"supernode sent taskId {registration.task_id[:70]!r}")
        if registration.cdn_source not in (CDN_SOURCE_SUPERNODE, CDN_SOURCE_SOURCE):
            raise SupernodeError(f"supernode sent cdnSource {registration.cdn_source[:40]!r}")
        if registration.cdn_source == CDN_SOURCE_SUPERNODE and registration.piece_size % MiB:
            raise SupernodeError(
                f"supernode sent pieceSize {registration.piece_size} for wrapped pieces"
            )
        return registration


@dataclass(frozen=True, slots=True)
class PieceTask:
    """One piece assignment of a 601 answer."""

    range: str
    piece_num: int
    piece_size: int
    piece_md5: str
    cid: str
    peer_ip: str
    peer_port: int
    path: str

    @classmethod
    def from_json(cls, item: dict[str, Any], registration: Registration) -> PieceTask:
        """A piece task checked against the registration: the registered piece size, a piece
        inside the file, its own range; anything else is the supernode's error."""
        task = cls(
            range=text(item, "range"),
            piece_num=number(item, "pieceNum", 0, MAX_PIECES),
            piece_size=number(item, "pieceSize", 0, MAX_PIECE_SIZE),
            piece_md5=text(item, "pieceMd5"),
            cid=text(item, "cid"),
            peer_ip=text(item, "peerIp"),
            peer_port=number(item, "peerPort", 0, 65535),
            path=text(item, "path"),
        )
        size = registration.piece_size
        if task.piece_size != size:
            raise SupernodeError(f"supernode sent pieceSize {task.piece_size}, registered {size}")
        if task.range != str(PieceRange.of_piece(task.piece_num, size)):
            raise SupernodeError(f"supernode sent piece {task.piece_num} as {task.range[:40]!r}")
        length = registration.file_length
        wrapped = registration.cdn_source != CDN_SOURCE_SOURCE
        if length >= 0 and task.piece_num >= piece_count(length, size, wrapped):
            raise SupernodeError(f"supernode sent piece {task.piece_num}, past the end of the file")
        return task

    @property
    def md5(self) -> str:
        """The bare md5 hex of the wrapped piece ('' when unknown)."""
        return self.piece_md5.split(":", 1)[0]


MAX_FILE_LENGTH = 1 << 50
MAX_TASKS_PER_ANSWER = 64  # v1 hands out at most 4 pieces per pull
MAX_PIECES = MAX_FILE_LENGTH // 5


def number(item: dict[str, Any], name: str, low: int, high: int, default: int = 0) -> int:
    """An integer field of a supernode answer, within [low, high]."""
    value = item.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SupernodeError(f"supernode sent {name}={str(value)[:40]!r}")
    return value


def text(item: dict[str, Any], name: str) -> str:
    value = item.get(name) or ""
    if not isinstance(value, str) or len(value) > 8192:
        raise SupernodeError(f"supernode sent a {type(value).__name__} as {name}")
    return value


@dataclass(slots=True)
class PullAnswer:
    code: int
    msg: str = ""
    pieces: list[PieceTask] = field(default_factory=list)
    md5: str = ""

    @classmethod
    def from_envelope(cls, envelope: dict[str, Any], registration: Registration) -> PullAnswer:
        """A /peer/task answer: a 601's piece list (at most MAX_TASKS_PER_ANSWER tasks, each
        checked against the registration) or a 600's md5 (32 hex digits)."""
        answer = cls(number(envelope, "code", 0, 999), text(envelope, "msg"))
        data = envelope.get("data")
        if answer.code == CODE_PEER_CONTINUE and isinstance(data, list):
            if len(data) > MAX_TASKS_PER_ANSWER or not all(isinstance(i, dict) for i in data):
                raise SupernodeError("supernode sent an unusable piece list")
            answer.pieces = [PieceTask.from_json(item, registration) for item in data]
        elif isinstance(data, dict):
            answer.md5 = text(data, "md5")
            if answer.md5 and not re.fullmatch(r"[0-9a-f]{32}", answer.md5):
                raise SupernodeError(f"supernode sent md5 {answer.md5[:40]!r}")
        return answer
