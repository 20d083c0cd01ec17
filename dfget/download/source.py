"""Downloading from the source URL: one streaming request per missing range, like curl.

The first request asks for the whole first missing range with a Range header (``bytes=S-``
for a whole file) and streams it into the target: a 206 proves range support and gives the
length (from Content-Range), a 200 means no ranges and the body is streamed from byte 0. So a
whole-file download is one GET, as with curl and Go dfget, and a registry logs one request per
blob. Other missing ranges (what P2P did not deliver) are one request each; ``connections`` > 1
splits them over that many parallel connections. A stream that breaks continues from its last
byte with a Range request. Statuses are strict (a 404 page never becomes a file), resets and
short bodies are retried per range with bounded backoff, and the user's headers never follow a
redirect to another scheme, host or port.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from dfget.download.accounting import SOURCE, Accounting
from dfget.download.cancel import Cancel
from dfget.download.pipeline import Pipeline
from dfget.download.progress import Progress
from dfget.download.source_requests import (
    Retry,
    SourceRequests,
    content_range,
    content_range_total,
    network_error,
)
from dfget.download.target import Target
from dfget.errors import (
    Cancelled,
    DfgetError,
    DownloadTimeout,
    NetworkError,
    SourceHTTPError,
    source_http_error,
)
from dfget.net.client import Response
from dfget.net.endpoint import TLS, Endpoint
from dfget.net.heads import WireError
from dfget.net.tokenbucket import TokenBucket
from dfget.redact import redact_url

log = logging.getLogger(__name__)
T = TypeVar("T")

MIN_PART = 4 * 1024 * 1024  # with --connections N, no part is smaller
MAX_ATTEMPTS = 5


@dataclass(slots=True)
class SourceInfo:
    """What the probe learnt about the source."""

    endpoint: Endpoint
    length: int | None
    ranges: bool
    etag: str = ""
    last_modified: str = ""


class SourceFetcher:
    """Fetches bytes of one URL into a Target; shared by plain and fallback downloads."""

    def __init__(
        self,
        url: str,
        headers: Sequence[tuple[str, str]],
        target: Target,
        *,
        tls: TLS | None,
        progress: Progress,
        accounting: Accounting,
        bucket: TokenBucket,
        cancel: Cancel,
        io_timeout: float = 30.0,
    ) -> None:
        self.url = redact_url(url)
        self.origin = Endpoint.parse(url)
        self.requests = SourceRequests(
            self.url, self.origin, headers, tls=tls, cancel=cancel, io_timeout=io_timeout
        )
        self.target = target
        self.progress = progress
        self.accounting = accounting
        self.bucket = bucket
        self.cancel = cancel
        self.info: SourceInfo | None = None

    def close(self) -> None:
        self.requests.close()

    # -- body -----------------------------------------------------------------------------

    def _receive(self, response: Response, offset: int, end: int | None) -> int:
        """Copy the body into the target from ``offset``; returns the offset reached. Every
        byte received is stored, also when the stream breaks (Retry says how far it got)."""
        started = offset
        t0 = time.monotonic()
        failure: BaseException | None = None
        pipeline = Pipeline(self._store)
        try:
            while end is None or offset < end:
                self.cancel.check()
                if self.cancel.expired():
                    # Checked here too: a source without ranges sends everything in one response.
                    raise DownloadTimeout(f"{self.url}: download did not finish within the timeout")
                view = pipeline.buffer()
                want = len(view) if end is None else min(len(view), end - offset)
                count, failure = _fill(response, view[:want])
                pipeline.submit(offset, count)
                offset += count
                self.bucket.consume(count)
                if failure is not None or count < want:
                    break
        finally:
            self.cancel.unwatch(response.connection.sock)
            pipeline.close()
        if failure is not None:
            if self.cancel.is_set():
                raise Cancelled() from failure
            self.accounting.record(
                SOURCE, self.origin.authority, offset - started, time.monotonic() - t0, pieces=0
            )
            raise Retry(network_error(self.origin, failure), offset) from failure
        self.accounting.record(
            SOURCE,
            self.origin.authority,
            offset - started,
            time.monotonic() - t0,
            range=f"{started}-{offset - 1}",
        )
        response.release()
        return offset

    def _store(self, offset: int, data: memoryview) -> None:
        self.target.store(offset, data)
        self.progress.add(len(data))

    # -- public ---------------------------------------------------------------------------

    def probe(self, start: int = 0, stop: int | None = None) -> SourceInfo:
        """GET [start, stop) (to the end when ``stop`` is None) with a Range header and stream
        it into the target, learning the length and range support on the way.

        A stream that breaks after a 206 continues from its last byte with a Range request
        (the break counts as its first failed attempt). A source without ranges sends the whole
        body here, and a break starts it again.
        """
        return self._with_retries(lambda: self._probe_once(start, stop))

    def _probe_once(self, start: int, stop: int | None) -> SourceInfo:
        asked = f"bytes={start}-" if stop is None else f"bytes={start}-{stop - 1}"
        endpoint, response = self.requests.open(self.origin, [("Range", asked)])
        etag, modified = response.header("etag"), response.header("last-modified")
        if response.status == 206:
            first, end, total = content_range(response)
            if first != start or total is None:
                self.requests.finish(response)
                raise SourceHTTPError(self.url, 206, f"unexpected Content-Range for {asked}")
            self.info = SourceInfo(endpoint, total, True, etag, modified)
            self.target_length(total)
            self.target.describe_source(total, etag, modified)
            try:
                reached = self._receive(response, start, end + 1)
                if reached > end:
                    return self.info
                error: DfgetError = NetworkError(f"{self.url}: short body at byte {reached}")
            except Retry as retry:
                reached, error = retry.reached or start, retry.error
            self._backoff(1, error)
            self._fetch_range(reached, end + 1, attempt=1)
            return self.info
        if response.status == 416:
            total = content_range_total(response)
            self.requests.finish(response)
            if total == 0:
                self.info = SourceInfo(endpoint, 0, True, etag, modified)
                return self.info
            raise source_http_error(self.url, 416, "range not satisfiable")
        if response.status != 200:
            raise self.requests.fail_status(endpoint, response)
        length = response.content_length
        self.info = SourceInfo(endpoint, length, False, etag, modified)
        self.target_length(length)
        self.target.describe_source(length, etag, modified)
        reached = self._receive(response, 0, length)
        if length is not None and reached != length:
            raise Retry(NetworkError(f"{self.url}: body ended after {reached} of {length} bytes"))
        self.info.length = reached
        return self.info

    def identity(self) -> tuple[int | None, str, str]:
        """Length, ETag and Last-Modified of the source now, from a one-byte ranged GET.

        Used before resuming, to notice a source that changed since the partial data came.
        """
        return self._with_retries(self._identity_once)

    def _identity_once(self) -> tuple[int | None, str, str]:
        endpoint, response = self.requests.open(self.origin, [("Range", "bytes=0-0")])
        etag, modified = response.header("etag"), response.header("last-modified")
        if response.status == 206:
            length = content_range(response)[2]
            response.read(16)
        elif response.status == 200:
            length = response.content_length
        elif response.status == 416:
            length = content_range_total(response)
        else:
            raise self.requests.fail_status(endpoint, response)
        self.requests.finish(response)
        return length, etag, modified

    def target_length(self, length: int | None) -> None:
        if length is not None:
            self.progress.start(length)

    def fetch_ranges(self, ranges: Sequence[tuple[int, int]], connections: int) -> None:
        """Fetch [start, end) ranges, one request each, over ``connections`` connections (more
        than one: split into that many parts); each retried on its own, resuming mid-range."""
        assert self.info is not None and self.info.ranges
        work: queue.SimpleQueue[tuple[int, int]] = queue.SimpleQueue()
        chunks = list(ranges)
        if connections > 1:
            total = sum(end - start for start, end in ranges)
            part = max(MIN_PART, -(-total // connections))
            chunks = [c for start, end in ranges for c in _split(start, end, part)]
        for chunk in chunks:
            work.put(chunk)
        errors: list[BaseException] = []

        def worker() -> None:
            while not errors:
                try:
                    start, end = work.get_nowait()
                except queue.Empty:
                    return
                try:
                    self._fetch_range(start, end)
                except BaseException as exc:  # handed to the caller
                    errors.append(exc)
                    self.cancel.cancel()
                    return

        threads = [
            threading.Thread(target=worker, name=f"source-{i}", daemon=True)
            for i in range(max(1, min(connections, len(chunks))))
        ]
        for thread in threads:
            thread.start()
        timed_out = False
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(timeout=0.5)
                    if self.cancel.expired() and not self.cancel.is_set():
                        timed_out = True
                        self.cancel.cancel()
        except BaseException:
            # A signal: stop the workers before the caller discards the file they write to.
            self.cancel.cancel()
            for thread in threads:
                thread.join(timeout=5)
            raise
        if timed_out and errors:
            # The workers only saw the cancellation; the reason is the deadline, not a signal.
            raise DownloadTimeout(f"{self.url}: download did not finish within the timeout")
        if errors:
            real = [e for e in errors if not isinstance(e, Cancelled)]
            raise real[0] if real else errors[0]

    def _fetch_range(self, start: int, end: int, attempt: int = 0) -> None:
        assert self.info is not None
        offset = start
        while offset < end:
            try:
                endpoint, response = self.requests.open(
                    self.info.endpoint, [("Range", f"bytes={offset}-{end - 1}")]
                )
                if response.status != 206:
                    if response.status == 200:
                        self.requests.finish(response)
                        raise SourceHTTPError(
                            self.url, 200, "the source stopped honouring Range requests"
                        )
                    raise self.requests.fail_status(endpoint, response)
                got = content_range(response)
                if got[0] != offset or got[1] != end - 1:
                    self.requests.finish(response)
                    raise SourceHTTPError(
                        self.url, 206, f"asked for bytes {offset}-{end - 1}, got {got[0]}-{got[1]}"
                    )
                offset = self._receive(response, offset, end)
                if offset < end:
                    raise Retry(NetworkError(f"{self.url}: short body at byte {offset}"))
            except Retry as retry:
                offset = retry.reached or offset  # what the broken body brought stays
                attempt += 1
                self._backoff(attempt, retry.error)

    def _with_retries(self, once: Callable[[], T]) -> T:
        """``once()`` until it stops raising Retry; the last error when attempts run out."""
        attempt = 0
        while True:
            try:
                return once()
            except Retry as retry:
                attempt += 1
                self._backoff(attempt, retry.error)

    def _backoff(self, attempt: int, error: DfgetError) -> None:
        if attempt >= MAX_ATTEMPTS:
            raise error
        if self.cancel.expired():
            raise DownloadTimeout(f"download timed out; last error: {error}")
        delay = min(4.0, 0.25 * 2 ** (attempt - 1)) * (0.5 + random.random())
        log.info(
            "%s; retrying in %.2fs (attempt %d of %d)", error, delay, attempt + 1, MAX_ATTEMPTS
        )
        if self.cancel.wait(self.cancel.remaining(delay)):
            raise Cancelled()


def _fill(response: Response, view: memoryview) -> tuple[int, BaseException | None]:
    """Read into ``view`` until it is full or the body ends; returns the count and the error
    that stopped it, if any (the bytes read before it count)."""
    count = 0
    try:
        while count < len(view):
            got = response.readinto(view[count:])
            if not got:
                break
            count += got
    except (OSError, WireError) as exc:
        return count, exc
    return count, None


def _split(start: int, end: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(s + size, end)) for s in range(start, end, size)]
