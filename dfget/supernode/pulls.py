"""``GET /peer/task``: a client's pull records the piece result it carries, then gets work.

The answers follow the Go supernode's, texts included: 601 with piece tasks (or without any
while the client runs its limit), 602 to wait, 600 with the file's length and md5 at the end.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dfget.protocol.codes import (
    CDN_CID_PREFIX,
    CODE_PARAM_ERROR,
    CODE_PEER_CONTINUE,
    CODE_PEER_FINISH,
    CODE_PEER_WAIT,
    CODE_SYSTEM_ERROR,
    CODE_TARGET_NOT_FOUND,
)
from dfget.protocol.ranges import PieceRange
from dfget.supernode import cdn
from dfget.supernode.replies import Reply, answer
from dfget.supernode.reports import holder_id, piece_of, record
from dfget.supernode.scheduling import UPSTREAM, Assignment, PieceOutcome
from dfget.supernode.state import SupernodeState
from dfget.supernode.tasks import CdnStatus, Client, Task

WAIT_TEXT = '{"Code":9,"Msg":"peer should wait"}'
CONTINUE_TEXT = '{"Code":10,"Msg":"peer continue"}'


def pull(state: SupernodeState, query: Mapping[str, str]) -> Reply:
    """Record the reported piece result, then hand out work."""
    tid, cid = query.get("taskId", ""), query.get("srcCid", "")
    reply = _pull(state, tid, cid, query)
    state.metrics.inc("pulls_total", code=str(reply.code))
    return reply


def _pull(state: SupernodeState, tid: str, cid: str, query: Mapping[str, str]) -> Reply:
    if not tid or not cid:
        return answer(CODE_PARAM_ERROR, msg="taskId and srcCid are required")
    with state.lock:
        task = state.tasks.get(tid)
        client = task.clients.get(cid) if task is not None else None
        if task is None or client is None:
            return answer(CODE_TARGET_NOT_FOUND, msg=f"taskID({tid}) clientID({cid}): unknown")
        now = state.clock()
        task.last_access = client.last_seen = now
        status = query.get("status", "")
        if status in ("701", "702"):
            problem = _apply_result(state, task, cid, query, now)
            if problem:
                return answer(CODE_PARAM_ERROR, msg=problem)
        elif status != "700":
            return answer(CODE_PARAM_ERROR, msg=f"invalid status {status!r}")
        return _work_for(state, task, client, now)


def _apply_result(
    state: SupernodeState, task: Task, cid: str, query: Mapping[str, str], now: float
) -> str:
    """Apply the piece result carried by a pull; returns a problem text or ""."""
    success = {"503": True, "501": True, "500": False}.get(query.get("result", ""))
    if success is None:
        return f"invalid result {query.get('result', '')!r}"
    piece = piece_of(task, query.get("range", ""))
    if piece is None:
        return f"invalid range {query.get('range', '')!r}"
    holder = holder_id(query.get("dstCid", ""))
    record(state, task, cid, piece, holder, success, now, announce=False)
    return ""


def _work_for(state: SupernodeState, task: Task, client: Client, now: float) -> Reply:
    if task.cdn_status is CdnStatus.FAILED:
        return answer(CODE_SYSTEM_ERROR, msg=f"taskID({task.id}): the CDN failed")
    decision = task.scheduler.schedule(client.cid, now)
    outcome = decision.outcome
    if outcome is PieceOutcome.FINISHED:
        if task.cdn_status is CdnStatus.SUCCESS:
            return answer(CODE_PEER_FINISH, _finish_data(state, task))
        outcome = PieceOutcome.NOTHING_AVAILABLE
    if outcome is PieceOutcome.ASSIGNED:
        ordered = sorted(decision.assignments, key=lambda item: item.piece)
        pieces = [_piece_task(state, task, client, a) for a in ordered]
        return answer(CODE_PEER_CONTINUE, pieces)
    ids = f"taskID({task.id}) clientID({client.cid})"
    if outcome is PieceOutcome.LIMITED:
        return answer(CODE_PEER_CONTINUE, msg=f"{ids}: {CONTINUE_TEXT}")
    if outcome is PieceOutcome.NOTHING_AVAILABLE:
        done = task.scheduler.done_count(client.cid)
        counts = f"clientSucCount:{done},cdnSucCount:{task.scheduler.ready_count}"
        return answer(CODE_PEER_WAIT, msg=f"{counts}: {WAIT_TEXT}")
    if outcome is PieceOutcome.ALL_RUNNING:
        return answer(CODE_PEER_WAIT, msg=f"{ids}: {WAIT_TEXT}")
    return answer(CODE_PEER_WAIT, msg=WAIT_TEXT)


def _finish_data(state: SupernodeState, task: Task) -> dict[str, Any]:
    if not state.local:
        return {"fileLength": 0, "md5": ""}
    return {"fileLength": task.wrapped_length, "md5": task.file_md5}


def _piece_task(
    state: SupernodeState, task: Task, client: Client, assignment: Assignment
) -> dict[str, Any]:
    """One element of a 601 answer, keys in the Go order."""
    if assignment.holder == UPSTREAM:
        cid = f"{CDN_CID_PREFIX}{client.cdn_ip}~{task.id}"
        ip, port = client.cdn_ip, state.options.download_port
        path = cdn.download_path(task.id) if state.local else client.raw_url
    else:
        holder = task.clients[assignment.holder]
        cid, ip, port, path = holder.cid, holder.ip, holder.port, holder.path
    return {
        "range": str(PieceRange.of_piece(assignment.piece, task.piece_size)),
        "pieceNum": assignment.piece,
        "pieceSize": task.piece_size,
        "pieceMd5": task.piece_md5.get(assignment.piece, ""),
        "cid": cid,
        "peerIp": ip,
        "peerPort": port,
        "path": path,
        "downLink": 0,
    }
