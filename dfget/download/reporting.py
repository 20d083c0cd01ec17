"""What a download tells its supernode beside the pull loop: stored pieces
(``/peer/piece/suc``, in the background and in order), bad pieces (``/peer/piece/error``), a
withdrawn peer server (``/peer/service/down``) and the download's metrics (once; v1 sends them
twice)."""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dfget.protocol.codes import ERROR_FILE_MD5_NOT_MATCH
from dfget.protocol.messages import PieceErrorReport, PieceTask, Registration, SupernodeError
from dfget.protocol.supernode import SupernodeApi
from dfget.redact import Scrubber

if TYPE_CHECKING:
    from dfget.uploader.spawn import ServerStart

log = logging.getLogger(__name__)

SUCCESS_ATTEMPTS = 3
ANNOUNCERS = 4  # the v1 supernode runs at most 4 pieces per client


@dataclass(frozen=True, slots=True)
class Link:
    """The supernode a download is registered with, and the registration."""

    api: SupernodeApi
    registration: Registration


class Reports:
    """Reports to the current supernode (``link``, replaced on a migration)."""

    def __init__(self, cid: str, scrub: Scrubber, server: ServerStart | None) -> None:
        self.cid = cid
        self.scrub = scrub
        self.server = server
        self.server_port = server.port() if server is not None else 0  # 0: not serving
        self.link: Link | None = None
        self._queue: queue.SimpleQueue[tuple[Link, str, str] | None] = queue.SimpleQueue()
        self._announcer = ThreadPoolExecutor(ANNOUNCERS, thread_name_prefix="announce")
        self._thread = threading.Thread(target=self._send_queued, daemon=True)
        self._thread.start()

    def stored_later(self, link: Link, dst_cid: str, piece_range: str) -> None:
        """Queue a /peer/piece/suc; the background thread sends them in order, each to the
        supernode of ``link`` with that registration's task id (a migration meanwhile does not
        send it to the new supernode with the old task id, or the reverse)."""
        self._queue.put((link, dst_cid, piece_range))

    def announce(self, link: Link, piece_range: str) -> None:
        """/peer/piece/suc naming this client, at once, beside the fetch (see announce.py)."""
        self._announcer.submit(self.stored, link, self.cid, piece_range)

    def stored(self, link: Link, dst_cid: str, piece_range: str) -> None:
        """One /peer/piece/suc, SUCCESS_ATTEMPTS attempts."""
        task_id = link.registration.task_id
        for attempt in range(SUCCESS_ATTEMPTS):
            try:
                link.api.piece_success(task_id, self.cid, dst_cid, piece_range)
                return
            except SupernodeError as exc:
                log.info(
                    "piece success report failed (attempt %d): %s",
                    attempt + 1,
                    self.scrub(str(exc)),
                )
                time.sleep(random.uniform(0.05, 0.55))

    def piece_error(
        self, error_type: str, task: PieceTask, holder: str, real_md5: str = ""
    ) -> None:
        """/peer/piece/error for a holder's piece, so the supernode stops sending us there."""
        if self.link is None:
            return
        try:
            self.link.api.piece_error(
                PieceErrorReport(
                    error_type,
                    self.cid,
                    task.cid,
                    task.peer_ip,
                    self.link.registration.task_id,
                    task.range,
                    real_md5,
                    task.md5 if real_md5 else "",
                )
            )
        except SupernodeError as exc:
            log.info("piece error report for %s failed: %s", holder, self.scrub(str(exc)))

    def corrupt(self, task: PieceTask, holder: str) -> None:
        """A holder's piece was wrong (found after the download: the file digest failed and
        the source's bytes differed from the holder's)."""
        self.piece_error(ERROR_FILE_MD5_NOT_MATCH, task, holder)

    def service_down(self) -> None:
        """Our peer server no longer serves this task's pieces."""
        if self.link is None:
            return
        if not self.link.api.service_down(self.link.registration.task_id, self.cid):
            log.info("service-down report to %s failed", self.link.api.node.address)

    def await_server(self) -> None:
        """Before a success report sends other peers to us: our peer server, which started
        while we registered, must be up. If it never came, take back the advertised port."""
        if self.server is None or self.server.ready() or not self.server_port:
            return
        log.warning("the peer server did not start: telling the supernode we serve nothing")
        self.server_port = 0  # first, for any registration from now on
        self.service_down()

    def metrics(self, body: dict[str, Any]) -> None:
        """POST /task/metrics; empty values left out, as dfget 1.0.6 does."""
        if self.link is None:
            return
        try:
            self.link.api.metrics({k: v for k, v in body.items() if v not in ("", 0, None)})
        except SupernodeError as exc:
            log.info("metrics report failed: %s", self.scrub(str(exc)))

    def _send_queued(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            self.await_server()
            self.stored(*item)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=3)
        self._announcer.shutdown(wait=True)
