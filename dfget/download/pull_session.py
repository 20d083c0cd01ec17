"""The pull loop of one registration: ask the supernode for pieces, fetch them, report.

A :class:`PullSession` owns the loop's state: the pieces in flight, those assigned again while
a fetch from before a migration still runs, the reports still owed to the supernode, and the
failures per piece. The pull backoff resets whenever a piece lands; a stall (no new byte for
STALL_SECONDS) or a piece failing MAX_PIECE_FAILURES times hands over to the source through
P2PFallback, and only the ranges still missing go there.
"""

from __future__ import annotations

import logging
import queue
import time
from collections import deque
from typing import TYPE_CHECKING

from dfget.download.pacing import STALL_SECONDS, Backoff, StallWatch, WorkerPool
from dfget.download.piece_fetch import PieceResult
from dfget.errors import Cancelled, P2PFallback
from dfget.protocol.codes import (
    CODE_PEER_CONTINUE,
    CODE_PEER_FINISH,
    CODE_PEER_LIMITED,
    CODE_PEER_WAIT,
    CODE_SUCCESS,
    REASON_NONE,
    REASON_P2P_ERROR,
    RESULT_FAILED,
    RESULT_SEMI_SUCCESS,
    STATUS_RUNNING,
)
from dfget.protocol.messages import PieceReport, PieceTask, PullAnswer, SupernodeError

if TYPE_CHECKING:
    from dfget.download.p2p import P2PDownload

log = logging.getLogger(__name__)

MAX_PIECE_FAILURES = 5
MAX_IN_FLIGHT = 4  # the v1 supernode runs at most 4 pieces per client
MERGE_RUNNING = 2  # after a stored piece, pull only when at most this many still run (v1)
IDLE_PULL_SECONDS = 2.0  # pull at least this often while pieces run
EXPECTED_CODES = (CODE_PEER_CONTINUE, CODE_PEER_WAIT, CODE_PEER_LIMITED, CODE_SUCCESS)


class PullSession:
    """Pulls until the supernode says the task is done; :meth:`run` returns the file length."""

    def __init__(self, download: P2PDownload) -> None:
        self.download = download
        self.report = PieceReport()
        self.backoff = Backoff()
        self.in_flight: dict[int, PieceTask] = {}
        self.reassigned: dict[int, PieceTask] = {}
        self.owed: deque[PieceReport] = deque()  # reports due before any other
        self.failures: dict[int, int] = {}
        self.stall = StallWatch(download.progress)
        self._results: queue.SimpleQueue[PieceResult | BaseException] = queue.SimpleQueue()
        self.workers = WorkerPool(MAX_IN_FLIGHT, self._fetch_into_results)

    def run(self) -> int:
        download = self.download
        try:
            while True:
                if download.cancel.expired():
                    raise P2PFallback(REASON_NONE, "P2P download timed out")
                if self.stall.stalled():
                    raise P2PFallback(REASON_P2P_ERROR, f"no data arrived for {STALL_SECONDS:.0f}s")
                link = download.link
                download.announcer.release(link)
                try:
                    answer = link.api.pull(link.registration, download.identity.cid, self.report)
                except SupernodeError as exc:
                    self._migrate(f"pull failed: {exc}")
                    continue
                log.debug(
                    "pull (%s %s) -> %d with %d piece(s)",
                    self.report.range or "start",
                    self.report.result,
                    answer.code,
                    len(answer.pieces),
                )
                if answer.code == CODE_PEER_FINISH:
                    download.state.md5 = answer.md5
                    if not download.announcer.announced:
                        return self._finish()
                    # The supernode counts our announced pieces as stored: wait for them.
                elif answer.code not in EXPECTED_CODES:
                    self._migrate(f"answered code {answer.code} {answer.msg}".strip())
                    continue
                self._start(answer)
                if answer.code == CODE_PEER_WAIT or not self.in_flight:
                    wait = self.backoff.next()
                else:
                    wait = IDLE_PULL_SECONDS
                if self._await_results(wait):
                    self.backoff.reset()
        finally:
            # Stop fetches still running (the source may take over their ranges) and wait.
            download.cancel.cancel()
            self.workers.close()
            self._account_stragglers()
            download.announcer.give_up(self.in_flight, download.link)

    def _migrate(self, why: str) -> None:
        self.download.migrate(why)
        self.report = PieceReport()

    def _start(self, answer: PullAnswer) -> None:
        """Start the fetches a 601 assigned."""
        if answer.code != CODE_PEER_CONTINUE:
            return
        download = self.download
        for task in answer.pieces:
            if download.have(task):
                # Already on disk (e.g. from before a migration): tell the supernode.
                self.owed.append(
                    PieceReport(task.cid, task.range, RESULT_SEMI_SUCCESS, STATUS_RUNNING)
                )
            elif task.piece_num not in self.in_flight:
                self.in_flight[task.piece_num] = task
                download.announcer.announce(task, download.link)
                self.workers.submit(task)
            else:
                # Assigned again while a fetch from before a migration still runs: this
                # supernode waits for a result of its own assignment, and a failure naming
                # the old holder would not release it.
                self.reassigned[task.piece_num] = task

    def _await_results(self, wait: float) -> bool:
        """Handle piece results until the next pull is due; True if a piece landed meanwhile.

        Due at once for a failure (the supernode must hand the piece out again) and for a piece
        already on disk that the supernode does not know of; RELEASE_GATHER_SECONDS after an
        announced piece landed (its origin slot is freed right before the pull, see
        announce.py); after another stored piece only when at most MERGE_RUNNING pieces still
        run, as v1 does: /peer/piece/suc has told the supernode already, so the pull carries
        only the newest result, and pulls are fewer than pieces. Otherwise after ``wait``.
        """
        announcer = self.download.announcer
        deadline = time.monotonic() + wait
        landed = False
        while True:
            landed_now = False
            due = deadline if not announcer.releases else min(deadline, announcer.release_due)
            for result in self._drain(max(0.0, due - time.monotonic())):
                if self._handle(result):
                    landed = landed_now = True
            if self.owed:
                self.report = self.owed.popleft()
                return landed
            now = time.monotonic()
            if announcer.releases and now >= announcer.release_due:
                return landed
            if (landed_now and len(self.in_flight) <= MERGE_RUNNING) or now >= deadline:
                return landed

    def _handle(self, result: PieceResult) -> bool:
        """Account one result; True if the piece landed. A failed piece is fetched again (when
        the supernode assigned it again, or counts it as ours) or reported failed."""
        task = result.task
        self.in_flight.pop(task.piece_num, None)
        self.download.account(result)
        again = self.reassigned.pop(task.piece_num, None)
        if result.ok:
            self.report = PieceReport(task.cid, task.range, RESULT_SEMI_SUCCESS, STATUS_RUNNING)
            return True
        count = self.failures[task.piece_num] = self.failures.get(task.piece_num, 0) + 1
        if count >= MAX_PIECE_FAILURES:
            raise P2PFallback(
                REASON_P2P_ERROR,
                f"piece {task.piece_num} failed {count} times, last from "
                f"{result.kind} {result.holder}: {result.error}",
            )
        if again is None and task.piece_num in self.download.announcer.announced:
            again = task  # the supernode counts it as ours already
        if again is not None:
            self.in_flight[again.piece_num] = again
            self.workers.submit(again)
        else:
            self.owed.appendleft(PieceReport(task.cid, task.range, RESULT_FAILED, STATUS_RUNNING))
        return False

    def _fetch_into_results(self, task: PieceTask, buffer: bytearray) -> None:
        try:
            self._results.put(self.download.fetcher.fetch(task, buffer))
        except Cancelled:
            pass
        except BaseException as exc:  # re-raised by the loop
            self._results.put(exc)

    def _drain(self, wait: float) -> list[PieceResult]:
        results: list[PieceResult] = []
        try:
            item = self._results.get(timeout=wait) if wait > 0 else self._results.get_nowait()
            while True:
                if isinstance(item, BaseException):
                    raise item
                results.append(item)
                item = self._results.get_nowait()
        except queue.Empty:
            return results

    def _account_stragglers(self) -> None:
        """Pieces that landed while the loop was leaving are on disk, and the source will not
        fetch them again: count them (and report them) like any other."""
        while True:
            try:
                item = self._results.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, PieceResult) and item.ok:
                self.download.account(item)

    def _finish(self) -> int:
        download = self.download
        registration = download.link.registration
        if self.in_flight:
            for result in self._drain(0.0):
                download.account(result)
        length = (
            registration.file_length if registration.file_length >= 0 else download.state.max_end
        )
        missing = download.target.missing(length)
        if missing:
            raise P2PFallback(
                REASON_P2P_ERROR,
                "the supernode reported the download complete but "
                f"{len(missing)} range(s) are missing",
            )
        return length
