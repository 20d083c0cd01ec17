"""The local CDN: fetch a task's source once and lay it out as wrapped pieces.

The cache file ``<repo>/download/<id[:3]>/<id>`` holds piece ``k`` at ``k*P`` in the v1 wrapped
layout, so the download port can serve any piece with a plain byte range. Each piece's md5 is
published through ``on_piece`` as soon as the piece is on disk, so clients start pulling long
before the whole file has arrived.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from dfget.errors import Refused
from dfget.protocol.pieces import FRAME_OVERHEAD, TAIL, frame_head
from dfget.protocol.wire import decimal
from dfget.redact import redact_url
from dfget.supernode.source import Source

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
DECIDE_TIMEOUT = 60.0
"""A fill whose registration never decides (a bug, or a crash) gives up instead of leaking."""


class CdnError(Refused):
    """The CDN fetch failed; the task is marked failed and retried by the next registration."""


@dataclass(frozen=True, slots=True)
class CdnResult:
    length: int
    """Raw bytes received."""
    md5: str
    """md5 of the raw stream (the 600 answer's ``md5``)."""
    pieces: int
    wrapped_length: int


def cache_path(repo: Path, task_id: str) -> Path:
    return repo / "download" / task_id[:3] / task_id


def download_path(task_id: str) -> str:
    """URL path of a task's cache file on the download port."""
    return f"/download/{task_id[:3]}/{task_id}"


def piece_md5(frame_parts: tuple[bytes, ...]) -> str:
    """``"<md5 of the wrapped piece>:<wrapped length>"`` as published in piece tasks."""
    digest = hashlib.md5()
    for part in frame_parts:
        digest.update(part)
    return f"{digest.hexdigest()}:{sum(len(part) for part in frame_parts)}"


@dataclass(frozen=True, slots=True)
class CdnLayout:
    """Where and how the fill writes: decided by the registration once the head is known."""

    path: Path
    piece_size: int
    expected_length: int
    expected_md5: str
    on_piece: Callable[[int, str], None]
    """Called with ``(piece number, piece md5)`` as each piece lands on disk."""
    on_done: Callable[[CdnResult | None, str], None]
    """Called once at the end with the result, or None and the reason of the failure."""
    max_length: int
    """A source that sends more (its length was unknown) fails the fill."""


@dataclass(frozen=True, slots=True)
class Head:
    status: int
    content_length: str | None
    error: str = ""


class Fill:
    """One CDN fetch of a source, in its own thread.

    Its response head doubles as the registration's length probe: v1 sent one GET to probe the
    length (and threw the body away) and a second GET to fill the cache; we send one. The
    registration waits for :meth:`head`, derives the piece size from the length, then either
    starts the fill (:meth:`begin` with a :class:`CdnLayout`) or drops it (:meth:`abandon`).
    """

    def __init__(self, source: Source) -> None:
        self.stop = threading.Event()
        self._source = source
        self._head: Head | None = None
        self._head_ready = threading.Event()
        self._layout: CdnLayout | None = None
        self._decided = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cdn-fill", daemon=True)

    def start(self) -> Fill:
        self._thread.start()
        return self

    def head(self, timeout: float) -> Head | None:
        """The response head, or None when it did not arrive within ``timeout``."""
        return self._head if self._head_ready.wait(timeout) else None

    def begin(self, layout: CdnLayout) -> None:
        self._layout = layout
        self._decided.set()

    def abandon(self) -> None:
        self.stop.set()
        self._decided.set()

    def _run(self) -> None:
        try:
            result = self._fetch()
        except CdnError as exc:
            self._publish_head(Head(0, None, str(exc)))
            self._decided.wait(DECIDE_TIMEOUT)
            if self._layout is not None and not self.stop.is_set():
                self._layout.on_done(None, str(exc))
            return
        if result is not None and self._layout is not None:
            self._layout.on_done(result, "")

    def _publish_head(self, head: Head) -> None:
        if not self._head_ready.is_set():
            self._head = head
            self._head_ready.set()

    def _fetch(self) -> CdnResult | None:
        timeout = httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
        try:
            with (
                self._source.client(timeout) as client,
                client.stream(
                    "GET", self._source.url, headers=self._source.request_headers()
                ) as response,
            ):
                status = response.status_code
                self._publish_head(Head(status, response.headers.get("Content-Length")))
                self._decided.wait(DECIDE_TIMEOUT)
                layout = self._layout
                if layout is None or self.stop.is_set():
                    return None
                if status not in ((200, 206) if self._source.ranged else (200,)):
                    raise CdnError(f"source answered {status}")
                return _store(response, layout, self.stop)
        except httpx.HTTPError as exc:
            raise CdnError(f"fetching {redact_url(self._source.url)}: {exc}") from exc


class _StreamMd5:
    """md5 of the raw stream in its own thread, so it runs beside the piece md5s on another
    core: with both md5s in the fetching thread, hashing bounded the fill's speed."""

    def __init__(self) -> None:
        self._hash = hashlib.md5()
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=4)
        self._thread = threading.Thread(target=self._run, name="cdn-md5", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            self._hash.update(data)

    def update(self, data: bytes) -> None:
        self._queue.put(data)

    def hexdigest(self) -> str:
        self._queue.put(None)
        self._thread.join()
        return self._hash.hexdigest()


def _store(response: httpx.Response, layout: CdnLayout, stop: threading.Event) -> CdnResult:
    """Cut the body into wrapped pieces at ``k*P`` and check length and md5 at the end."""
    piece_size = layout.piece_size
    capacity = piece_size - FRAME_OVERHEAD
    layout.path.parent.mkdir(parents=True, exist_ok=True)
    raw_md5 = _StreamMd5()
    buffer = bytearray(capacity)
    filled = pieces = total = 0
    try:
        # A fresh inode: an abandoned fill still writing its last piece cannot touch this copy.
        layout.path.unlink(missing_ok=True)
        fd = os.open(layout.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as exc:
        raw_md5.hexdigest()
        raise CdnError(f"cannot create {layout.path}: {exc}") from exc

    def emit(data: bytes) -> None:
        nonlocal pieces
        raw_md5.update(data)
        parts = (frame_head(len(data), piece_size), data, TAIL)
        os.pwritev(fd, parts, pieces * piece_size)
        layout.on_piece(pieces, piece_md5(parts))
        pieces += 1

    try:
        for chunk in response.iter_raw():
            view = memoryview(chunk)
            total += len(view)
            if total > layout.max_length:
                raise CdnError(f"source sent more than {layout.max_length} bytes")
            while view:
                count = min(capacity - filled, len(view))
                buffer[filled : filled + count] = view[:count]
                filled += count
                view = view[count:]
                if filled == capacity:
                    emit(bytes(buffer))
                    filled = 0
            if stop.is_set():
                raise CdnError("task removed while the CDN was fetching it")
        if filled or pieces == 0:
            emit(bytes(buffer[:filled]))
    except OSError as exc:
        raise CdnError(f"writing {layout.path}: {exc}") from exc
    finally:
        os.close(fd)
        digest = raw_md5.hexdigest()
    if layout.expected_length > 0 and total != layout.expected_length:
        raise CdnError(f"source sent {total} bytes, expected {layout.expected_length}")
    if layout.expected_md5 and digest != layout.expected_md5:
        raise CdnError(f"source md5 {digest} does not match the expected {layout.expected_md5}")
    return CdnResult(total, digest, pieces, total + FRAME_OVERHEAD * pieces)


def verify_piece(path: Path, piece: int, piece_size: int, expected: str) -> bool:
    """Whether the cached piece still has the md5 published for it (after a client's complaint)."""
    _, _, length_text = expected.partition(":")
    length = decimal(length_text) or piece_size
    try:
        with open(path, "rb") as file:
            data = os.pread(file.fileno(), length, piece * piece_size)
    except OSError:
        return False
    return len(data) == length and piece_md5((data,)) == expected
