"""Putting one piece on the wire: response head + frame head, zero-copy file range, tail byte.

The response head and the 4-byte frame head go out in one write, the data with ``sendfile``
straight from the page cache, then the tail byte; the socket is corked meanwhile so the kernel
coalesces the small writes with the data instead of sending tiny segments. Between our own
peers a piece may instead travel zstd-compressed when that saves at least a tenth.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

from dfget.errors import LocalIOError
from dfget.net.heads import response_head
from dfget.net.tokenbucket import TokenBucket

ZSTD_LEVEL = 3
MIN_SAVING = 0.10
SAMPLE_SIZE = 64 * 1024
COMPRESS_CHUNK = 1024 * 1024
SEND_CHUNK = 256 * 1024
COMPRESSORS = max(2, os.cpu_count() or 2)  # pieces compressed at once


class _Compressors:
    """A few zstd compressors with a read buffer each, made once and shared by all handler
    threads: a context per thread would leave its memory in that thread's malloc arena (16
    threads compressing 15 MiB pieces grew the server by 60 MiB before this)."""

    def __init__(self, count: int) -> None:
        self._free: queue.SimpleQueue[tuple[Any, memoryview]] = queue.SimpleQueue()
        self._made = 0
        self._count = count
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def borrow(self) -> Iterator[tuple[Any, memoryview]]:
        with self._lock:
            make = self._made < self._count and self._free.empty()
            self._made += make
        if make:
            import zstandard

            item = (
                zstandard.ZstdCompressor(level=ZSTD_LEVEL),
                memoryview(bytearray(COMPRESS_CHUNK)),
            )
        else:
            item = self._free.get()
        try:
            yield item
        finally:
            self._free.put(item)


_compressors = _Compressors(COMPRESSORS)


class ShortFile(LocalIOError, OSError):
    """The file ended before the range we announced (it shrank while being served)."""


@dataclass(frozen=True, slots=True)
class Body:
    """A response body: ``prefix`` + ``count`` bytes of ``fd`` at ``offset`` + ``suffix``."""

    fd: int
    offset: int
    count: int
    prefix: bytes = b""
    suffix: bytes = b""

    @property
    def length(self) -> int:
        return len(self.prefix) + self.count + len(self.suffix)


def piece_head(length: int, encoding: str | None = None) -> bytes:
    """A 206 head with the headers a v1 uploader sends, in its order."""
    headers = [
        ("Content-Length", str(length)),
        ("Content-Type", "application/octet-stream"),
        ("Date", formatdate(usegmt=True)),
    ]
    if encoding:
        headers.append(("Content-Encoding", encoding))
    return response_head(206, headers)


def wants_zstd(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` value offers zstd (only our own downloader does)."""
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() == "zstd":
            return params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def send(
    sock: socket.socket, body: Body, bucket: TokenBucket | None, zstd: bool, deadline: float
) -> None:
    """Send a complete 206 response for ``body`` by ``deadline`` (monotonic); raises OSError
    if the client goes away or is too slow, or the file shrinks (the connection must then be
    closed: the announced length is a lie)."""
    packed = _compressed(body) if zstd else None
    idle = sock.gettimeout()
    clock = _Deadline(sock, deadline, idle)
    try:
        with _corked(sock):
            if packed is not None:
                clock.sendall(piece_head(len(packed), "zstd"))
                _send_bytes(clock, packed, bucket)
                return
            clock.sendall(piece_head(body.length) + body.prefix)
            _send_file_range(clock, body, bucket)
            clock.sendall(body.suffix)
    finally:
        sock.settimeout(idle)


class _Deadline:
    """Writes to ``sock`` that each wait at most the idle timeout and all end by ``deadline``:
    a reader that takes a byte now and then cannot hold an upload slot for ever."""

    def __init__(self, sock: socket.socket, deadline: float, idle: float | None) -> None:
        self.sock = sock
        self.deadline = deadline
        self.idle = idle

    def wait(self) -> float:
        """Seconds the next wait may take; TimeoutError past the deadline."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the client reads too slowly")
        return min(left, self.idle) if self.idle else left

    def sendall(self, data: bytes | memoryview) -> None:
        self.sock.settimeout(self.wait())
        self.sock.sendall(data)


def _compressed(body: Body) -> bytes | None:
    """The zstd frame of the whole body if it is at least MIN_SAVING smaller, else None.

    A sample from the middle of the piece is tried first: compressing an incompressible 4 MiB
    piece costs more CPU than sending it (measured: 6 ms to 12 ms per piece on loopback). The
    file is read and compressed a chunk at a time: memory holds the frame, not the piece too.
    """
    with _compressors.borrow() as (compressor, buffer):
        sample_at = body.offset + max(0, body.count // 2 - SAMPLE_SIZE // 2)
        sample = os.pread(body.fd, min(SAMPLE_SIZE, body.count), sample_at)
        if len(compressor.compress(sample)) > len(sample) * (1 - MIN_SAVING):
            return None
        stream = compressor.compressobj(size=body.length)
        parts = [stream.compress(body.prefix)]
        for offset in range(body.offset, body.offset + body.count, COMPRESS_CHUNK):
            want = min(COMPRESS_CHUNK, body.offset + body.count - offset)
            got = os.preadv(body.fd, [buffer[:want]], offset)
            if got != want:
                missing = body.offset + body.count - offset - got
                raise ShortFile(f"file ended {missing} bytes early")
            parts.append(stream.compress(buffer[:want]))
        parts += [stream.compress(body.suffix), stream.flush()]
    packed = b"".join(parts)
    return packed if len(packed) <= body.length * (1 - MIN_SAVING) else None


def _send_bytes(sock: _Deadline, data: bytes, bucket: TokenBucket | None) -> None:
    """In chunks, so that the idle timeout bounds each write, not the whole frame."""
    view = memoryview(data)
    step = bucket.chunk if bucket is not None else SEND_CHUNK
    for start in range(0, len(view), step):
        chunk = view[start : start + step]
        if bucket is not None:
            bucket.consume(len(chunk))
        sock.sendall(chunk)


def _send_file_range(sock: _Deadline, body: Body, bucket: TokenBucket | None) -> None:
    offset, remaining = body.offset, body.count
    while remaining > 0:
        step = remaining if bucket is None else min(remaining, bucket.chunk)
        if bucket is not None:
            bucket.consume(step)
        sent = _sendfile(sock, body.fd, offset, step)
        if sent < step:
            raise ShortFile(f"file ended {remaining - sent} bytes early")
        offset += sent
        remaining -= sent


def _sendfile(sock: _Deadline, fd: int, offset: int, count: int) -> int:
    """``os.sendfile`` until ``count`` bytes are out or the file ends; returns bytes sent.

    A socket with a timeout is non-blocking underneath, so a full send buffer shows up as
    EAGAIN: wait for room up to the idle timeout and the deadline (an idle or slow reader is
    dropped, not waited for forever), then go on from where the partial send stopped.
    """
    out = sock.sock.fileno()
    poller: select.poll | None = None
    done = 0
    while done < count:
        try:
            sent = os.sendfile(out, fd, offset + done, count - done)
        except BlockingIOError:
            if poller is None:
                poller = select.poll()
                poller.register(out, select.POLLOUT)
            if not poller.poll(sock.wait() * 1000):
                raise TimeoutError("client stopped reading") from None
            continue
        if sent == 0:
            break
        done += sent
    return done


@contextlib.contextmanager
def _corked(sock: socket.socket) -> Iterator[None]:
    cork = getattr(socket, "TCP_CORK", None)
    if cork is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        yield
        return
    sock.setsockopt(socket.IPPROTO_TCP, cork, 1)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, cork, 0)
