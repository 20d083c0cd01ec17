"""A task's upstream copy: starting its fill, taking in its pieces and its end, and rebuilding
it when a client's complaint about it proves true.

Each (re)start bumps the task's ``cdn_generation``; a fill's callbacks carry the generation they
were started with, so a superseded fill (or one of an expired task) changes nothing. In the
source pattern there is no copy: the origin is the upstream holder and has every piece.
"""

from __future__ import annotations

import logging

from dfget.protocol.codes import ERROR_FILE_MD5_NOT_MATCH, ERROR_FILE_NOT_EXIST
from dfget.supernode import cdn
from dfget.supernode.state import SupernodeState
from dfget.supernode.tasks import CdnStatus, Task

log = logging.getLogger(__name__)


def start_cdn(state: SupernodeState, task: Task) -> None:
    """(Re)start filling the task's upstream copy; called with the lock held.

    A new task's fill is already running (its head was the length probe); a failed or
    damaged copy gets a fresh fill.
    """
    task.cdn_generation += 1
    if not state.local:
        task.scheduler.mark_all_ready()
        task.cdn_status = CdnStatus.SUCCESS
        return
    fill = task.fill
    if fill is None or fill.stop.is_set() or task.cdn_status is not CdnStatus.WAITING:
        if fill is not None:
            fill.abandon()
        fill = task.fill = cdn.Fill(task.source).start()
    task.cdn_status = CdnStatus.RUNNING
    task.piece_md5.clear()
    task.scheduler.reset_ready()
    generation = task.cdn_generation

    def on_piece(piece: int, md5: str) -> None:
        with state.lock:
            if _current(state, task, generation):
                task.piece_md5[piece] = md5
                task.scheduler.mark_ready(piece)

    def on_done(result: cdn.CdnResult | None, error: str) -> None:
        _cdn_done(state, task, generation, result, error)

    fill.begin(
        cdn.CdnLayout(
            cdn.cache_path(state.repo, task.id),
            task.piece_size,
            task.length,
            task.md5,
            on_piece,
            on_done,
            state.options.max_file_length,
        )
    )


def recheck_cdn(
    state: SupernodeState, task: Task, generation: int, piece: int | None, error: str
) -> None:
    """Rebuild the CDN copy if a client's complaint about it turns out to be true."""
    path = cdn.cache_path(state.repo, task.id)
    if error == ERROR_FILE_NOT_EXIST:
        broken = not path.is_file()
    elif error == ERROR_FILE_MD5_NOT_MATCH and piece is not None:
        with state.lock:
            expected = task.piece_md5.get(piece)
        broken = expected is not None and not cdn.verify_piece(
            path, piece, task.piece_size, expected
        )
    else:
        broken = False
    if broken:
        with state.lock:
            if _current(state, task, generation):
                log.warning("CDN copy of task %s is damaged; fetching it again", task.id)
                start_cdn(state, task)


def _current(state: SupernodeState, task: Task, generation: int) -> bool:
    return state.tasks.get(task.id) is task and task.cdn_generation == generation


def _cdn_done(
    state: SupernodeState,
    task: Task,
    generation: int,
    result: cdn.CdnResult | None,
    error: str,
) -> None:
    state.metrics.inc("cdn_fetches_total", result="success" if result else "failure")
    with state.lock:
        if not _current(state, task, generation):
            return
        if result is None:
            log.warning("CDN of task %s failed: %s", task.id, error)
            task.cdn_status = CdnStatus.FAILED
            return
        task.length = result.length
        task.file_md5 = result.md5
        task.wrapped_length = result.wrapped_length
        task.scheduler.set_piece_count(result.pieces)
        task.cdn_status = CdnStatus.SUCCESS
    state.metrics.inc("cdn_source_bytes_total", result.length)
    log.info("CDN of task %s done: %d bytes, md5 %s", task.id, result.length, result.md5)
