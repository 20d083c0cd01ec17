"""The P2P download: register with a supernode, pull piece tasks, fetch, report.

Better than v1.0.6 where it is weak: failover walks every supernode and wraps
around; pieces already on disk survive a migration; the pull backoff resets whenever a piece
lands; a stall or a dead end hands over to the source only the ranges still missing (the caller
does that, from :class:`P2PFallback`); the timeout cancels the piece fetches; every piece is
checked (length, frame, md5) before it is written; metrics are sent once.
"""

from __future__ import annotations

import logging
import queue
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dfget import PROTOCOL_VERSION
from dfget.config import Node, Settings
from dfget.download.accounting import SOURCE, Accounting
from dfget.download.cancel import Cancel, Cancelled
from dfget.download.piece_fetch import Layout, PieceFetcher, PieceResult
from dfget.download.progress import Progress
from dfget.download.target import Target
from dfget.errors import SupernodeAuthError
from dfget.net.client import Endpoint, Pool
from dfget.net.tokenbucket import TokenBucket
from dfget.protocol.codes import (
    CODE_NEED_AUTH,
    CODE_PEER_CONTINUE,
    CODE_PEER_FINISH,
    CODE_PEER_LIMITED,
    CODE_PEER_WAIT,
    CODE_SUCCESS,
    CODE_URL_NOT_REACHABLE,
    CODE_WAIT_AUTH,
    ERROR_FILE_MD5_NOT_MATCH,
    RESULT_FAILED,
    RESULT_INVALID,
    RESULT_SEMI_SUCCESS,
    STATUS_RUNNING,
    STATUS_START,
)
from dfget.protocol.pieces import piece_count
from dfget.protocol.supernode import (
    PieceTask,
    Registration,
    RequestCount,
    SupernodeClient,
    SupernodeError,
    new_http_client,
    node_order,
    service_down,
)
from dfget.protocol.taskid import task_url
from dfget.redact import SENSITIVE_HEADERS, Scrubber
from dfget.uploader.pending import FETCHING, LOST, STORED, PendingPieces, pending_path

if TYPE_CHECKING:
    from dfget.uploader.spawn import ServerStart

from dfget.download.network import Identity
from dfget.download.pacing import STALL_SECONDS, Backoff, StallWatch, WorkerPool

log = logging.getLogger(__name__)

# v1 back-source reasons.
REASON_NONE = 0
REASON_REGISTER_FAILED = 1
REASON_P2P_ERROR = 3
REASON_NO_SUPERNODE = 8

MAX_PIECE_FAILURES = 5
RATE_REFRESH_SECONDS = 3.0
MAX_IN_FLIGHT = 4  # the v1 supernode runs at most 4 pieces per client
MERGE_RUNNING = 2  # after a stored piece, pull only when at most this many still run (v1)
IDLE_PULL_SECONDS = 2.0  # pull at least this often while pieces run
RELEASE_GATHER_SECONDS = 0.02  # origin slots freed within this time go with one pull


class P2PFallback(Exception):
    """P2P cannot (or can no longer) deliver; the caller fetches what is missing elsewhere."""

    def __init__(self, reason: int, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class _Report:
    """What the next pull tells the supernode about one piece."""

    dst_cid: str = ""
    range: str = ""
    result: int = RESULT_INVALID
    status: int = STATUS_START


@dataclass(frozen=True, slots=True)
class Delivery:
    """Raw bytes [start, end) that a peer or the CDN delivered: suspects if the file's digest
    turns out wrong although every piece passed its own checks."""

    start: int
    end: int
    kind: str
    holder: str
    task: PieceTask


@dataclass
class P2PState:
    """What survives a migration between supernodes."""

    registration: Registration | None = None
    md5: str = ""
    md5_verified_pieces: int = 0
    pieces_total: int = 0
    max_end: int = 0
    tried: list[str] = field(default_factory=list)


class P2PDownload:
    """One P2P attempt. :meth:`run` returns the file length or raises P2PFallback."""

    def __init__(
        self,
        settings: Settings,
        identity: Identity,
        nodes: list[Node],
        target: Target,
        *,
        server: ServerStart | None,
        headers: Sequence[tuple[str, str]],
        accounting: Accounting,
        progress: Progress,
        bucket: TokenBucket,
        cancel: Cancel,
        pool: Pool,
        task_key: str,
        on_registered: Callable[[Registration], None] | None = None,
    ) -> None:
        self.settings = settings
        self.identity = identity
        self.nodes = node_order(nodes, task_key)
        self.target = target
        self.server = server
        self.server_port = server.port() if server is not None else 0  # 0: not serving
        self.headers = list(headers)
        self.scrub = Scrubber(settings.url, self.headers)  # for what supernodes say back
        self.accounting = accounting
        self.progress = progress
        self.bucket = bucket
        self.cancel = cancel
        self.pool = pool
        self.on_registered = on_registered
        self.state = P2PState()
        self.delivered: list[Delivery] = []
        self.http = new_http_client()
        self.requests = RequestCount()
        self._results: queue.SimpleQueue[PieceResult | BaseException] = queue.SimpleQueue()
        self._success_reports: queue.SimpleQueue[tuple[SupernodeClient, str, str] | None] = (
            queue.SimpleQueue()
        )
        self._announcer = ThreadPoolExecutor(MAX_IN_FLIGHT, thread_name_prefix="announce")
        self._reporter = threading.Thread(target=self._report_successes, daemon=True)
        self._reporter.start()
        self._closing = threading.Event()
        if self.server_port:
            threading.Thread(target=self._refresh_rate, daemon=True, name="rate").start()
        self.client: SupernodeClient | None = None
        self.pending: PendingPieces | None = None
        self._announced: set[int] = set()
        self._releases: list[PieceTask] = []
        self._release_due = 0.0

    # -- registration ---------------------------------------------------------------------

    def register_body(self, node: Node) -> dict[str, Any]:
        s = self.settings
        body: dict[str, Any] = {
            "superNodeIp": node.host,
            "rawUrl": s.url,
            "taskUrl": task_url(s.url, s.filters),
            "cid": self.identity.cid,
            "ip": self.identity.ip,
            "hostName": socket.gethostname(),
            "port": self.server_port,
            "path": f"/peer/file/{self.identity.task_file_name}",
            "version": PROTOCOL_VERSION,
        }
        if s.md5:
            body["md5"] = s.md5
        elif s.identifier:
            body["identifier"] = s.identifier
        if s.callsystem:
            body["callSystem"] = s.callsystem
        headers = [
            f"{n}: {v}"
            for n, v in self.headers
            if s.supernode_credentials or n.lower() not in SENSITIVE_HEADERS
        ]
        if headers:
            body["headers"] = headers
        if s.dfdaemon:
            body["dfdaemon"] = True
        if s.insecure:
            body["insecure"] = True
        if s.cacerts:
            body["rootCAs"] = [_b64_file(path) for path in s.cacerts]
        return body

    def register(self, exclude: str = "") -> Registration:
        """Walk the nodes in task order (wrapping around), skipping ``exclude``."""
        errors: list[str] = []
        for node in self.nodes:
            if node.address == exclude:
                continue
            self.cancel.check()
            client = SupernodeClient(node, self.http, self.requests)
            for _attempt in range(3):
                try:
                    code, registration, msg = client.register(self.register_body(node))
                except SupernodeError as exc:
                    errors.append(self.scrub(str(exc)))
                    break
                if code == CODE_WAIT_AUTH:
                    time.sleep(1)
                    continue
                if code == CODE_SUCCESS and registration is not None:
                    self.client = client
                    self.state.tried.append(node.address)
                    log.info(
                        "registered at supernode %s: task %s, %d bytes, piece size %d, cdn %s",
                        node.address,
                        registration.task_id,
                        registration.file_length,
                        registration.piece_size,
                        registration.cdn_source,
                    )
                    return registration
                if code == CODE_NEED_AUTH:
                    raise SupernodeAuthError(
                        f"supernode {node.address}: the source requires authentication"
                    )
                errors.append(self.scrub(f"{node.address}: code {code} {msg}".strip()))
                if code == CODE_URL_NOT_REACHABLE:
                    raise P2PFallback(REASON_REGISTER_FAILED, "; ".join(errors))
                break
        message = "registration failed: " + ("; ".join(errors) or "no supernode left")
        if ":" in self.identity.ip and errors:
            message += (
                f" (this peer's address {self.identity.ip} is IPv6; Dragonfly 1.0.6 supernodes"
                " accept IPv4 peers only: give an IPv4 address with --ip)"
            )
        raise P2PFallback(REASON_REGISTER_FAILED, message)

    # -- the pull loop --------------------------------------------------------------------

    def run(self, started: float) -> int:
        """Register, then pull until done; the deadline defaults to v1's length/minrate rule."""
        registration = self.register()
        self._adopt(registration)
        if self.on_registered is not None:
            self.on_registered(registration)
        if self.cancel.deadline is None:
            timeout = self.settings.download_timeout(max(registration.file_length, 0))
            self.cancel.deadline = started + timeout
        return self._loop()

    def _adopt(self, registration: Registration) -> None:
        previous = self.state.registration
        self.state.registration = registration
        if registration.file_length >= 0:
            self.progress.start(registration.file_length)
        if previous is not None and previous.piece_size != registration.piece_size:
            # Raw bytes stay where they are; only the piece numbering changes.
            log.info(
                "piece size changed from %d to %d", previous.piece_size, registration.piece_size
            )
        layout = Layout(registration.file_length, registration.piece_size, registration.cdn_source)
        self.layout = layout
        self.state.pieces_total = (
            piece_count(registration.file_length, registration.piece_size, layout.wrapped)
            if registration.file_length >= 0
            else 0
        )
        self._share_pending(layout)
        self.fetcher = PieceFetcher(
            layout,
            self.target,
            self.pool,
            user_headers=self.headers,
            source_origin=Endpoint.parse(self.settings.url).origin,
            cancel=self.cancel,
            bucket=self.bucket,
            progress=self.progress,
            timeout=registration.piece_size / max(self.settings.minrate, 1) + 10,
        )

    def _loop(self) -> int:
        report = _Report()
        backoff = Backoff()
        in_flight: dict[int, PieceTask] = {}
        reassigned: dict[int, PieceTask] = {}
        pending: deque[_Report] = deque()
        stall = StallWatch(self.progress)
        failures: dict[int, int] = {}
        workers = WorkerPool(MAX_IN_FLIGHT, self._fetch_into_results)
        try:
            while True:
                if self.cancel.expired():
                    raise P2PFallback(REASON_NONE, "P2P download timed out")
                if stall.stalled():
                    raise P2PFallback(REASON_P2P_ERROR, f"no data arrived for {STALL_SECONDS:.0f}s")
                assert self.client is not None and self.state.registration is not None
                if self._releases:
                    self._await_server()  # as before any report that sends peers to us
                while self._releases:
                    done = self._releases.pop()
                    self._piece_success(self.client, done.cid, done.range)
                try:
                    answer = self.client.pull(
                        self.state.registration,
                        self.identity.cid,
                        report.dst_cid,
                        report.range,
                        report.result,
                        report.status,
                    )
                except SupernodeError as exc:
                    report = self._migrate(f"pull failed: {exc}")
                    continue
                log.debug(
                    "pull (%s %s) -> %d with %d piece(s)",
                    report.range or "start",
                    report.result,
                    answer.code,
                    len(answer.pieces),
                )
                if answer.code == CODE_PEER_FINISH:
                    self.state.md5 = answer.md5
                    if not self._announced:
                        return self._finish(in_flight)
                    # The supernode counts our announced pieces as stored: wait for them.
                started = 0
                if answer.code == CODE_PEER_CONTINUE:
                    for task in answer.pieces:
                        if self._have(task):
                            # Already on disk (e.g. from before a migration): tell the supernode.
                            pending.append(
                                _Report(task.cid, task.range, RESULT_SEMI_SUCCESS, STATUS_RUNNING)
                            )
                        elif task.piece_num not in in_flight:
                            in_flight[task.piece_num] = task
                            self._announce_early(task)
                            workers.submit(task)
                            started += 1
                        else:
                            # Assigned again while a fetch from before a migration still runs:
                            # this supernode waits for a result of its own assignment, and a
                            # failure naming the old holder would not release it.
                            reassigned[task.piece_num] = task
                elif answer.code not in (
                    CODE_PEER_WAIT,
                    CODE_PEER_LIMITED,
                    CODE_SUCCESS,
                    CODE_PEER_FINISH,
                ):
                    report = self._migrate(f"answered code {answer.code} {answer.msg}".strip())
                    continue
                if answer.code == CODE_PEER_WAIT or not in_flight:
                    wait = backoff.next()
                else:
                    wait = IDLE_PULL_SECONDS
                report, landed = self._await_results(
                    report, wait, in_flight, reassigned, pending, failures, workers
                )
                if landed:
                    backoff.reset()
        finally:
            # Stop fetches still running (the source may take over their ranges) and wait.
            self.cancel.cancel()
            workers.close()
            self._account_stragglers()
            self._give_up_announced(in_flight)

    def _await_results(
        self,
        report: _Report,
        wait: float,
        in_flight: dict[int, PieceTask],
        reassigned: dict[int, PieceTask],
        pending: deque[_Report],
        failures: dict[int, int],
        workers: WorkerPool,
    ) -> tuple[_Report, bool]:
        """Handle piece results until the next pull is due; returns what it reports and
        whether a piece landed meanwhile.

        Due at once for a failure (the supernode must hand the piece out again) and for a piece
        already on disk that the supernode does not know of; RELEASE_GATHER_SECONDS after an
        announced piece landed (its origin slot is freed right before the pull, see
        _announce_early); after another stored piece only when at most MERGE_RUNNING pieces
        still run, as v1 does: /peer/piece/suc has told the supernode already, so the pull
        carries only the newest result, and pulls are fewer than pieces. Otherwise after
        ``wait``.
        """
        deadline = time.monotonic() + wait
        landed = False
        while True:
            landed_now = False
            due = deadline if not self._releases else min(deadline, self._release_due)
            for result in self._drain(max(0.0, due - time.monotonic())):
                in_flight.pop(result.task.piece_num, None)
                self._account(result)
                again = reassigned.pop(result.task.piece_num, None)
                if result.ok:
                    landed = landed_now = True
                    report = _Report(
                        result.task.cid, result.task.range, RESULT_SEMI_SUCCESS, STATUS_RUNNING
                    )
                    continue
                count = failures[result.task.piece_num] = failures.get(result.task.piece_num, 0) + 1
                if count >= MAX_PIECE_FAILURES:
                    raise P2PFallback(
                        REASON_P2P_ERROR,
                        f"piece {result.task.piece_num} failed {count} times, last from "
                        f"{result.kind} {result.holder}: {result.error}",
                    )
                if again is None and result.task.piece_num in self._announced:
                    again = result.task  # the supernode counts it as ours already
                if again is not None:
                    in_flight[again.piece_num] = again
                    workers.submit(again)
                else:
                    pending.appendleft(
                        _Report(result.task.cid, result.task.range, RESULT_FAILED, STATUS_RUNNING)
                    )
            if pending:
                return pending.popleft(), landed
            now = time.monotonic()
            if self._releases and now >= self._release_due:
                return report, landed
            if (landed_now and len(in_flight) <= MERGE_RUNNING) or now >= deadline:
                return report, landed

    def _migrate(self, why: str) -> _Report:
        """Re-register elsewhere, keeping every piece already on disk; the next pull starts over."""
        why = self.scrub(why)
        current = self.client.node.address if self.client else ""
        log.warning("supernode %s: %s; migrating", current, why)
        if len(self.nodes) <= 1:
            raise P2PFallback(REASON_P2P_ERROR, f"supernode {current}: {why}")
        try:
            registration = self.register(exclude=current)
        except P2PFallback as exc:
            raise P2PFallback(REASON_P2P_ERROR, f"supernode {current}: {why}; {exc}") from exc
        self._adopt(registration)
        return _Report()

    def _account_stragglers(self) -> None:
        """Pieces that landed while the loop was leaving are on disk, and the source will not
        fetch them again: count them (and report them) like any other."""
        while True:
            try:
                item = self._results.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, PieceResult) and item.ok:
                self._account(item)

    # -- early announcement of origin pieces (dfget/uploader/pending.py) --------------------

    def _share_pending(self, layout: Layout) -> None:
        """In the source pattern, with our peer server serving the work file, open the file
        that tells it which announced pieces are still being fetched."""
        if self.pending is not None:
            if self.pending.pieces == self.state.pieces_total and not layout.wrapped:
                return  # a migration to a supernode with the same layout
            # Another layout numbers pieces differently: announced ones are given up.
            self._give_up_announced({})
            self.pending.close()
            self.pending = None
        work = self.target.work_path
        name = self.identity.task_file_name
        if layout.wrapped or not self.server_port or work.name != f"{name}.service":
            return
        if self.state.pieces_total <= 0:
            return
        try:
            self.pending = PendingPieces(pending_path(work.parent, name), self.state.pieces_total)
        except OSError as exc:
            log.info("pieces will be reported once stored: %s", exc.strerror or exc)

    def _announce_early(self, task: PieceTask) -> None:
        """Report an origin piece as ours when its fetch starts, not when it ends.

        v1 sends the pieces nobody holds to the origin first, and a piece being fetched has no
        holder: each client asking meanwhile would fetch it from the origin too. Announced at
        once, it has a holder, the others get the pieces nobody fetches yet, and those that need
        this one wait at our peer server until it lands.

        The announcement names this client as where the piece came from, so v1 does not count
        it as the end of an origin fetch: the task's origin slot (four per task) stays taken
        until the normal report naming the supernode, sent once the piece is stored (or given
        up), and the origin never serves more pieces of the task at once than v1 allows.
        Sent at once, beside the fetch: our listening socket is bound already, so a peer that
        comes before our server has started waits in its backlog.

        What remains is the few milliseconds between the assignment and the announcement: a
        client that gets a freed origin slot then may be given the same piece. Slots are freed
        by the pull loop right before it pulls, so the client that frees one mostly takes it
        again, and its own pieces are never handed to it twice.
        """
        if self.pending is None or "://" not in task.path or self.client is None:
            return
        self.pending.mark(task.piece_num, FETCHING)
        self._announced.add(task.piece_num)
        self._announcer.submit(self._piece_success, self.client, self.identity.cid, task.range)

    def _give_up_announced(self, in_flight: dict[int, PieceTask]) -> None:
        """Announced pieces that never landed: peers waiting for them are told at once, and
        their origin slots are freed."""
        if self.pending is None:
            return
        for piece in self._announced:
            self.pending.mark(piece, LOST)
            task = in_flight.get(piece)
            if task is not None:
                self._releases.append(task)
        self._announced.clear()
        if self.client is not None:
            for task in self._releases:
                self._success_reports.put((self.client, task.cid, task.range))
        self._releases.clear()

    def _have(self, task: PieceTask) -> bool:
        start = self.layout.offset(task.piece_num)
        length = self.layout.data_len(task.piece_num)
        return length is not None and length > 0 and self.target.covers(start, start + length)

    def _fetch_into_results(self, task: PieceTask, buffer: bytearray) -> None:
        try:
            self._results.put(self.fetcher.fetch(task, buffer))
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

    def _account(self, result: PieceResult) -> None:
        task = result.task
        if result.ok:
            self.accounting.record(
                result.kind,
                result.holder,
                result.nbytes,
                result.seconds,
                task.cid,
                piece=task.piece_num,
                range=task.range,
                wire_bytes=result.wire_bytes,
            )
            if task.md5:
                self.state.md5_verified_pieces += 1
            self.state.max_end = max(self.state.max_end, result.end)
            assert self.client is not None
            if task.piece_num in self._announced:
                self._announced.discard(task.piece_num)
                assert self.pending is not None
                self.pending.mark(task.piece_num, STORED)
                # This report names the supernode and so frees the piece's origin slot: sent
                # by the pull loop right before its next pull, which then most likely takes
                # the slot itself (see _announce_early), together with the slots of the pieces
                # that land within RELEASE_GATHER_SECONDS.
                if not self._releases:
                    self._release_due = time.monotonic() + RELEASE_GATHER_SECONDS
                self._releases.append(task)
            else:
                self._success_reports.put((self.client, task.cid, task.range))
            log.debug(
                "piece %d range %s from %s %s: %d bytes in %.0f ms",
                task.piece_num,
                task.range,
                result.kind,
                result.holder,
                result.nbytes,
                result.seconds * 1000,
            )
            if result.kind == SOURCE:
                self.accounting.source_assigned()
            else:
                self.delivered.append(
                    Delivery(result.start, result.end, result.kind, result.holder, task)
                )
            return
        self.accounting.failure(
            result.kind,
            result.holder,
            task.cid,
            piece=task.piece_num,
            range=task.range,
            error=result.error,
        )
        log.warning(
            "piece %d from %s %s failed: %s",
            task.piece_num,
            result.kind,
            result.holder,
            result.error,
        )
        if result.error_type and self.client is not None and self.state.registration is not None:
            kind, endpoint_holder = result.kind, result.holder
            try:
                self.client.piece_error(
                    result.error_type,
                    self.identity.cid,
                    task.cid,
                    task.peer_ip,
                    self.state.registration.task_id,
                    task.range,
                    result.real_md5,
                    task.md5 if result.real_md5 else "",
                )
            except SupernodeError as exc:
                log.info(
                    "piece error report for %s %s failed: %s",
                    kind,
                    endpoint_holder,
                    self.scrub(str(exc)),
                )

    def report_corrupt(self, delivery: Delivery) -> None:
        """Tell the supernode a holder's piece was wrong (found after the download, when the
        file digest failed and the source's bytes differed from the holder's)."""
        registration = self.state.registration
        if self.client is None or registration is None:
            return
        task = delivery.task
        try:
            self.client.piece_error(
                ERROR_FILE_MD5_NOT_MATCH,
                self.identity.cid,
                task.cid,
                task.peer_ip,
                registration.task_id,
                task.range,
            )
        except SupernodeError as exc:
            log.info(
                "corrupt piece report for %s failed: %s", delivery.holder, self.scrub(str(exc))
            )

    def withdraw(self) -> None:
        """The download failed and its pieces left our peer server: tell the supernode, which
        would otherwise keep sending peers to us for pieces we no longer serve."""
        if self.server_port:
            self._service_down()

    def _service_down(self) -> None:
        registration = self.state.registration
        if registration is None:
            return
        if not service_down(registration.node.address, registration.task_id, self.identity.cid):
            log.info("service-down report to %s failed", registration.node.address)

    def _report_successes(self) -> None:
        """/peer/piece/suc in the background, in order."""
        while True:
            item = self._success_reports.get()
            if item is None:
                return
            self._await_server()
            self._piece_success(*item)

    def _piece_success(self, client: SupernodeClient, dst_cid: str, piece_range: str) -> None:
        """One /peer/piece/suc, 3 attempts."""
        assert self.state.registration is not None
        for attempt in range(3):
            try:
                client.piece_success(
                    self.state.registration.task_id, self.identity.cid, dst_cid, piece_range
                )
                return
            except SupernodeError as exc:
                log.info(
                    "piece success report failed (attempt %d): %s",
                    attempt + 1,
                    self.scrub(str(exc)),
                )
                time.sleep(random.uniform(0.05, 0.55))

    def _await_server(self) -> None:
        """Before a success report sends other peers to us: our peer server, which started
        while we registered, must be up. If it never came, take back the advertised port."""
        if self.server is None or self.server.ready() or not self.server_port:
            return
        log.warning("the peer server did not start: telling the supernode we serve nothing")
        self.server_port = 0  # first, for any registration from now on
        self._service_down()

    def _finish(self, in_flight: dict[int, PieceTask]) -> int:
        registration = self.state.registration
        assert registration is not None
        if in_flight:
            for result in self._drain(0.0):
                self._account(result)
        length = registration.file_length if registration.file_length >= 0 else self.state.max_end
        missing = self.target.missing(length)
        if missing:
            raise P2PFallback(
                REASON_P2P_ERROR,
                "the supernode reported the download complete but "
                f"{len(missing)} range(s) are missing",
            )
        return length

    @property
    def all_pieces_md5_verified(self) -> bool:
        return (
            self.state.pieces_total > 0
            and self.state.md5_verified_pieces >= self.state.pieces_total
        )

    def metrics(self, success: bool, reason: int, duration: float, length: int) -> None:
        """POST /task/metrics once (v1 sends it twice)."""
        if self.client is None or self.state.registration is None:
            return
        body = {
            "IP": self.identity.ip,
            "backsourceReason": str(reason),
            "cID": self.identity.cid,
            "callSystem": self.settings.callsystem,
            "duration": round(duration, 9),
            "fileLength": length,
            "port": self.server_port,
            "success": success,
            "taskId": self.state.registration.task_id,
        }
        try:
            self.client.metrics({k: v for k, v in body.items() if v not in ("", 0, None)})
        except SupernodeError as exc:
            log.info("metrics report failed: %s", self.scrub(str(exc)))

    def _refresh_rate(self) -> None:
        """Ask our peer server for this download's share every 3 s, as v1 does.

        The call also keeps the server alive (it exits after --alivetime without such
        activity), and with --totallimit the granted share becomes our download limit.
        """
        from dfget.protocol import peer_server

        host = peer_server.loopback_for(self.identity.ip)
        requested = self.settings.locallimit
        while not self._closing.wait(RATE_REFRESH_SECONDS) and self.server_port:
            granted = peer_server.rate(
                host, self.server_port, self.identity.task_file_name, requested
            )
            if requested and 0 < granted <= requested:
                self.bucket.set_rate(granted)

    def close(self) -> None:
        if self.pending is not None:
            self.pending.close()
        self._closing.set()
        self._success_reports.put(None)
        self._reporter.join(timeout=3)
        self._announcer.shutdown(wait=True)
        self.http.close()


def _b64_file(path: str) -> str:
    import base64

    return base64.b64encode(Path(path).read_bytes()).decode()
