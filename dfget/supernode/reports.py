"""What clients report: piece results (carried by pulls and ``/peer/piece/suc``), holders that
failed them, their peer server going down, and how their download ended.

Reports change scheduling state and the metrics; their answers are the Go supernode's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from dfget.net.server import TEXT
from dfget.protocol.codes import CDN_CID_PREFIX, CODE_PEER_DOWN_OK, CODE_PIECE_REPORT_OK
from dfget.protocol.pieces import piece_data_len
from dfget.protocol.ranges import PieceRange, RangeError
from dfget.protocol.wire import decimal, lower_keys
from dfget.supernode.cdn_copy import recheck_cdn
from dfget.supernode.replies import Reply, answer, refuse
from dfget.supernode.scheduling import UPSTREAM
from dfget.supernode.state import SupernodeState
from dfget.supernode.tasks import Task


def piece_success(state: SupernodeState, query: Mapping[str, str]) -> Reply:
    """``/peer/piece/suc``: the client stored a piece and may now serve it."""
    tid, cid = query.get("taskId", ""), query.get("cid", "")
    with state.lock:
        task = state.tasks.get(tid)
        if task is None or cid not in task.clients:
            return refuse(f"taskID({tid}) clientID({cid}): unknown")
        piece = piece_of(task, query.get("pieceRange", ""))
        if piece is None:
            return refuse(f"invalid pieceRange {query.get('pieceRange', '')!r}")
        now = state.clock()
        task.last_access = task.clients[cid].last_seen = now
        holder = holder_id(query.get("dstCid", ""))
        record(state, task, cid, piece, holder, True, now, announce=True)
    return answer(CODE_PIECE_REPORT_OK)


def piece_error(state: SupernodeState, query: Mapping[str, str]) -> Reply:
    """``/peer/piece/error``: blacklist a peer holder; recheck the CDN when it is the holder."""
    tid, cid = query.get("taskId", ""), query.get("srcCid", "")
    holder = holder_id(query.get("dstCid", ""))
    recheck: tuple[Task, int, int | None, str] | None = None
    with state.lock:
        task = state.tasks.get(tid)
        if task is not None and cid in task.clients and holder is not None:
            state.metrics.inc("piece_errors_total", holder=_holder_kind(state, holder))
            if holder != UPSTREAM:
                task.scheduler.piece_error(cid, holder)
            elif state.local:
                piece = piece_of(task, query.get("range", ""))
                recheck = (task, task.cdn_generation, piece, query.get("errorType", ""))
    if recheck is not None:
        recheck_cdn(state, *recheck)
    return Reply(200, b"", TEXT)


def service_down(state: SupernodeState, query: Mapping[str, str]) -> Reply:
    """``/peer/service/down``: the client's peer server is gone; stop offering it at once."""
    tid, cid = query.get("taskId", ""), query.get("cid", "")
    with state.lock:
        task = state.tasks.get(tid)
        client = task.clients.get(cid) if task is not None else None
        if task is None or client is None:
            return refuse(f"taskID({tid}) clientID({cid}): unknown")
        task.scheduler.service_down(cid)
        client.down_since = state.clock()
    return answer(CODE_PEER_DOWN_OK)


def download_report(state: SupernodeState, body: bytes) -> Reply:
    """``POST /task/metrics``: count the outcome; v1 answers a bare ``null``."""
    try:
        report = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return refuse("malformed JSON body")
    if not isinstance(report, dict):
        return refuse("the body must be a JSON object")
    fields = lower_keys(report)
    tid, cid = str(fields.get("taskid") or ""), str(fields.get("cid") or "")
    with state.lock:
        task = state.tasks.get(tid)
        if task is not None:
            # Finished or failed, it pulls no more: a piece it had running (say it was
            # interrupted) must not keep the others waiting for it to land there.
            task.scheduler.stop_running(cid)
    state.metrics.inc(
        "downloads_total",
        result="success" if fields.get("success") is True else "failure",
        backsource_reason=_reason_label(fields.get("backsourcereason")),
    )
    return Reply(200, b"null\n")


def record(
    state: SupernodeState,
    task: Task,
    cid: str,
    piece: int,
    holder: str | None,
    success: bool,
    now: float,
    *,
    announce: bool,
) -> None:
    """Hand a piece result to the task's scheduler and count it; called with the lock held."""
    stored = task.scheduler.report(cid, piece, holder, success, now, announce=announce)
    kind = _holder_kind(state, holder)
    if stored:
        state.metrics.inc("pieces_total", holder=kind)
        size = task.piece_size - 5 if state.local else task.piece_size
        if task.length >= 0:
            size = piece_data_len(piece, task.length, task.piece_size, state.local)
        state.metrics.inc("piece_bytes_total", size, holder=kind)
    elif not success:
        state.metrics.inc("piece_errors_total", holder=kind)


def piece_of(task: Task, text: str) -> int | None:
    """The piece a reported range names, None when it is malformed or past the end."""
    try:
        rng = PieceRange.parse(text)
    except RangeError:
        return None
    count = task.scheduler.piece_count
    piece = rng.start // task.piece_size
    return piece if count is None or piece < count else None


def holder_id(dst_cid: str) -> str | None:
    """The scheduler's id of a reported holder: every CDN cid names the upstream holder."""
    if not dst_cid:
        return None
    return UPSTREAM if dst_cid.startswith(CDN_CID_PREFIX) else dst_cid


def _holder_kind(state: SupernodeState, holder: str | None) -> str:
    if holder is None:
        return "unknown"
    if holder == UPSTREAM:
        return "cdn" if state.local else "source"
    return "peer"


def _reason_label(value: object) -> str:
    """A back-source reason as a metrics label: v1's numbers (0-10, +1000 with --notbs), not
    whatever string a client sends (each new label would grow the metrics for ever)."""
    reason = decimal(str(value or "0"), 4)
    return str(reason) if reason is not None and reason < 2000 else "other"
