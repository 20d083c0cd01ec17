"""The state the request handlers share: tasks, the host-wide upload limit and activity.

Kept apart from the HTTP layer so the decisions (which data dir a caller may name, what rate to
grant, when the server counts as idle) read as plain code and can be tested without sockets.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from dfget.net.tokenbucket import TokenBucket
from dfget.uploader import shares, status
from dfget.uploader.options import ServerOptions
from dfget.uploader.served_task import ServedTask, Unservable
from dfget.uploader.store import TaskStore

log = logging.getLogger(__name__)

MAX_UPLOADS = 64  # concurrent piece uploads; more requests wait for a slot ...
SLOT_WAIT = 10.0  # ... this long at most, then 503
MIN_UPLOAD_RATE = 64 * 1024  # a piece must leave at least this fast (v1's --minrate) ...
UPLOAD_GRACE = 30.0  # ... after this head start
MIN_STALE_AFTER = 600.0  # an unfinished download idle this long is considered dead


@dataclass(frozen=True, slots=True)
class Clock:
    """Where the peer server reads the time; tests move a fake one instead of sleeping."""

    wall: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic


class Uploader:
    def __init__(
        self, options: ServerOptions, on_drop: Callable[[ServedTask], None], clock: Clock = Clock()
    ) -> None:
        self.home = options.home.resolve()
        self.data_dir = options.data_dir.resolve()
        self.clock = clock
        self.store = TaskStore(
            self.data_dir,
            expiretime=options.expiretime,
            stale_after=max(options.expiretime or 0.0, MIN_STALE_AFTER),
            on_drop=on_drop,
            policy=options.policy,
            clock=clock.wall,
        )
        self.bucket: TokenBucket | None = None
        self.set_total_limit(options.totallimit)
        self._slots = threading.BoundedSemaphore(MAX_UPLOADS)
        self._lock = threading.Lock()
        self._active = 0
        self._last_activity = clock.monotonic()
        self.port = 0  # set once listening; with status_dir, for the status file
        self.status_dir: Path | None = None

    def housekeep(self) -> None:
        """One collection pass (the server's main loop runs it periodically), then the status
        operators read."""
        self.store.collect()
        self.publish_status()

    def finished(self, name: str) -> None:
        """After a download finished: its restart record, the budget, the status."""
        self.store.record(name)
        self.store.enforce_budget()
        self.publish_status()

    def publish_status(self) -> None:
        if self.status_dir is None:
            return
        try:
            limits = self.store.policy.limits(self.data_dir)
        except OSError:
            limits = None
        try:
            status.write(self.status_dir, self.store, limits, self.port)
        except OSError as exc:
            log.warning("cannot write the cache status in %s: %s", self.status_dir, exc)

    @property
    def total_limit(self) -> int:
        bucket = self.bucket
        return bucket.rate if bucket is not None else 0

    def set_total_limit(self, rate: int) -> None:
        """Apply a host-wide limit (``--totallimit`` or a ``/check/``'s ``totalLimit``); 0 or
        less keeps the current one, like v1. The same rate keeps the bucket's state."""
        if rate > 0 and rate != self.total_limit:
            self.bucket = TokenBucket(rate)
            log.info("host-wide upload limit set to %d B/s", rate)

    def grant(self, name: str, requested: int) -> int:
        """The rate for one download's ``/rate/`` request, fair to the other unfinished ones."""
        unfinished = self.store.request_rate(name, requested)
        return shares.grant(requested, self.total_limit, unfinished)

    def data_dir_for(self, header: str) -> Path | None:
        """The data dir a ``/check/`` (from this host) may name, or None for the configured one.

        v1 lets any caller choose any directory (and then serves files from it). We accept it
        only inside our work home (or our data dir itself).
        """
        if not header or header == str(self.data_dir):
            return None
        path = Path(header)
        resolved = path.resolve() if path.is_absolute() else None
        if resolved == self.data_dir:
            return None
        if resolved is not None and resolved != self.home and resolved.is_relative_to(self.home):
            return resolved
        log.warning("ignoring dataDir %s: outside the work home %s", header, self.home)
        return None

    def touch(self) -> None:
        """Record activity that keeps the server alive (pieces, ``/rate/``, ``/check/``)."""
        self._last_activity = self.clock.monotonic()

    @contextlib.contextmanager
    def uploading(self) -> Iterator[None]:
        """One piece upload: waits up to SLOT_WAIT for a free slot (else Unservable 503, so
        readers that hold every slot cannot queue everyone else for ever); the server is not
        idle meanwhile."""
        with self._lock:
            self._active += 1
        try:
            if not self._slots.acquire(timeout=SLOT_WAIT):
                log.warning(
                    "all %d upload slots busy for %.0f s: answering 503", MAX_UPLOADS, SLOT_WAIT
                )
                raise Unservable(503, "busy")
            try:
                yield
            finally:
                self._slots.release()
        finally:
            with self._lock:
                self._active -= 1
                self._last_activity = self.clock.monotonic()

    def upload_deadline(self, length: int) -> float:
        """When an upload of ``length`` bytes starting now must be done: a reader slower than
        MIN_UPLOAD_RATE (or than its share of a host-wide limit) gives its slot back."""
        rate = MIN_UPLOAD_RATE
        if self.total_limit:
            rate = max(1024, min(rate, self.total_limit // MAX_UPLOADS))
        return time.monotonic() + UPLOAD_GRACE + length / rate

    def idle_for(self) -> float:
        with self._lock:
            return 0.0 if self._active else self.clock.monotonic() - self._last_activity
