"""The P2P side of a download: register with a supernode, pull pieces, account for them.

Better than v1.0.6 where it is weak: failover walks every supernode and wraps around
(registration.py); pieces already on disk survive a migration; the pull backoff resets whenever
a piece lands and a stall hands over to the source only the ranges still missing
(pull_session.py); the timeout cancels the piece fetches; every piece is checked (length, frame,
md5) before it is written (piece_fetch.py); metrics are sent once (reporting.py).

The supernode API comes in through ``connect`` (a node -> :class:`SupernodeApi`), so the whole
P2P side runs in-process against a stand-in supernode in the tests.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dfget.config import Node, Settings
from dfget.download.accounting import SOURCE, Accounting
from dfget.download.announce import EarlyAnnouncer
from dfget.download.cancel import Cancel
from dfget.download.network import Identity
from dfget.download.piece_fetch import Layout, PieceFetcher, PieceResult
from dfget.download.progress import Progress
from dfget.download.pull_session import PullSession
from dfget.download.registration import Registrar
from dfget.download.reporting import Link, Reports
from dfget.download.target import Target
from dfget.errors import P2PFallback
from dfget.net.client import Pool
from dfget.net.endpoint import Endpoint
from dfget.net.tokenbucket import TokenBucket
from dfget.protocol.codes import REASON_P2P_ERROR
from dfget.protocol.messages import PieceTask, Registration
from dfget.protocol.pieces import piece_count
from dfget.protocol.supernode import RequestCount, SupernodeApi, SupernodeClient, new_http_client
from dfget.redact import Scrubber

if TYPE_CHECKING:
    import httpx

    from dfget.uploader.spawn import ServerStart

log = logging.getLogger(__name__)

RATE_REFRESH_SECONDS = 3.0


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
        nodes: Sequence[Node],
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
        connect: Callable[[Node], SupernodeApi] | None = None,
    ) -> None:
        self.settings = settings
        self.identity = identity
        self.target = target
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
        self.requests = RequestCount()
        self._http: httpx.Client | None = None
        self.registrar = Registrar(
            settings,
            identity,
            nodes,
            task_key,
            self.headers,
            connect or self._http_client_for,
            cancel,
            self.scrub,
        )
        self.state.tried = self.registrar.tried
        self.reports = Reports(identity.cid, self.scrub, server)
        self.announcer = EarlyAnnouncer(self.reports)
        self._closing = threading.Event()
        if self.reports.server_port:
            threading.Thread(target=self._refresh_rate, daemon=True, name="rate").start()

    @property
    def link(self) -> Link:
        """The supernode this download is registered with (only once :meth:`run` started)."""
        assert self.reports.link is not None
        return self.reports.link

    def run(self, started: float) -> int:
        """Register, then pull until done; the deadline defaults to v1's length/minrate rule."""
        registration = self._register()
        if self.on_registered is not None:
            self.on_registered(registration)
        if self.cancel.deadline is None:
            timeout = self.settings.download_timeout(max(registration.file_length, 0))
            self.cancel.deadline = started + timeout
        return PullSession(self).run()

    def _register(self, exclude: str = "") -> Registration:
        api, registration = self.registrar.register(self.reports.server_port, exclude)
        self.reports.link = Link(api, registration)
        self._adopt(registration)
        return registration

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
        self.announcer.share(
            self.target.work_path,
            self.identity.task_file_name,
            self.state.pieces_total,
            layout.wrapped,
            self.link,
        )
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

    def migrate(self, why: str) -> None:
        """Re-register elsewhere, keeping every piece already on disk."""
        why = self.scrub(why)
        current = self.link.api.node.address
        log.warning("supernode %s: %s; migrating", current, why)
        if len(self.registrar.nodes) <= 1:
            raise P2PFallback(REASON_P2P_ERROR, f"supernode {current}: {why}")
        try:
            self._register(exclude=current)
        except P2PFallback as exc:
            raise P2PFallback(REASON_P2P_ERROR, f"supernode {current}: {why}; {exc}") from exc

    def have(self, task: PieceTask) -> bool:
        """Whether the piece's bytes are on disk already."""
        start = self.layout.offset(task.piece_num)
        length = self.layout.data_len(task.piece_num)
        return length is not None and length > 0 and self.target.covers(start, start + length)

    def account(self, result: PieceResult) -> None:
        """Count a piece result, and tell the supernode: a stored piece makes us its holder, a
        failed one may make its holder a suspect."""
        task = result.task
        if not result.ok:
            self._account_failure(result)
            return
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
        if not self.announcer.stored(task):
            self.reports.stored_later(self.link, task.cid, task.range)
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

    def _account_failure(self, result: PieceResult) -> None:
        task = result.task
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
        if result.error_type:
            self.reports.piece_error(
                result.error_type, task, f"{result.kind} {result.holder}", result.real_md5
            )

    def report_corrupt(self, delivery: Delivery) -> None:
        """Tell the supernode a holder's piece was wrong."""
        self.reports.corrupt(delivery.task, delivery.holder)

    def withdraw(self) -> None:
        """The download failed and its pieces left our peer server: tell the supernode, which
        would otherwise keep sending peers to us for pieces we no longer serve."""
        if self.reports.server_port:
            self.reports.service_down()

    @property
    def all_pieces_md5_verified(self) -> bool:
        return (
            self.state.pieces_total > 0
            and self.state.md5_verified_pieces >= self.state.pieces_total
        )

    def metrics(self, success: bool, reason: int, duration: float, length: int) -> None:
        """POST /task/metrics once (v1 sends it twice)."""
        if self.state.registration is None:
            return
        self.reports.metrics(
            {
                "IP": self.identity.ip,
                "backsourceReason": str(reason),
                "cID": self.identity.cid,
                "callSystem": self.settings.callsystem,
                "duration": round(duration, 9),
                "fileLength": length,
                "port": self.reports.server_port,
                "success": success,
                "taskId": self.state.registration.task_id,
            }
        )

    def _http_client_for(self, node: Node) -> SupernodeClient:
        """The real supernode API; one keep-alive HTTP client for every supernode call."""
        if self._http is None:
            self._http = new_http_client()
        return SupernodeClient(node, self._http, self.requests)

    def _refresh_rate(self) -> None:
        """Ask our peer server for this download's share every 3 s, as v1 does.

        The call also keeps the server alive (it exits after --alivetime without such
        activity), and with --totallimit the granted share becomes our download limit.
        """
        from dfget.protocol import peer_server

        host = peer_server.loopback_for(self.identity.ip)
        requested = self.settings.locallimit
        while not self._closing.wait(RATE_REFRESH_SECONDS) and self.reports.server_port:
            granted = peer_server.rate(
                host, self.reports.server_port, self.identity.task_file_name, requested
            )
            if requested and 0 < granted <= requested:
                self.bucket.set_rate(granted)

    def close(self) -> None:
        self.announcer.close()
        self._closing.set()
        self.reports.close()
        if self._http is not None:
            self._http.close()
