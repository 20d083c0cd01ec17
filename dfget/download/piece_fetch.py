"""Fetching one assigned piece from its holder: a peer server, the supernode CDN or the origin.

Every piece is checked before a byte of it is written: exact length, frame head and tail (v1
checks neither) and the CDN's piece md5 when the supernode gave one. Only then does the raw
data go to its offset in the work file.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

from dfget import PROTOCOL_VERSION
from dfget.download.accounting import CDN, PEER, SOURCE
from dfget.download.cancel import Cancel
from dfget.download.progress import Progress
from dfget.download.target import Target
from dfget.net.client import Pool
from dfget.net.endpoint import Endpoint
from dfget.net.heads import WireError
from dfget.net.tokenbucket import TokenBucket
from dfget.protocol.codes import (
    CDN_CID_PREFIX,
    CDN_SOURCE_SOURCE,
    ERROR_FILE_MD5_NOT_MATCH,
    ERROR_FILE_NOT_EXIST,
)
from dfget.protocol.messages import PieceTask
from dfget.protocol.pieces import (
    FRAME_OVERHEAD,
    HEAD_LEN,
    FramingError,
    check_frame,
    parse_head,
    piece_data_len,
    raw_offset,
)
from dfget.protocol.ranges import PieceRange


@dataclass(frozen=True, slots=True)
class Layout:
    """How the task's pieces map onto the file."""

    file_length: int  # raw length; -1 when the supernode could not tell
    piece_size: int
    cdn_source: str

    @property
    def wrapped(self) -> bool:
        return self.cdn_source != CDN_SOURCE_SOURCE

    def data_len(self, piece_num: int) -> int | None:
        if self.file_length < 0:
            return None
        return piece_data_len(piece_num, self.file_length, self.piece_size, self.wrapped)

    def offset(self, piece_num: int) -> int:
        return raw_offset(piece_num, self.piece_size, self.wrapped)


@dataclass(slots=True)
class PieceResult:
    task: PieceTask
    kind: str
    holder: str
    ok: bool = False
    nbytes: int = 0
    seconds: float = 0.0
    error: str = ""
    error_type: str = ""  # for /peer/piece/error
    real_md5: str = ""
    wire_bytes: int = 0  # body bytes received (smaller than nbytes when zstd-compressed)
    start: int = 0  # raw [start, end) written
    end: int = 0


def holder_of(task: PieceTask) -> tuple[str, Endpoint]:
    """Kind of holder and where to send the request."""
    if "://" in task.path:
        return SOURCE, Endpoint.parse(task.path)
    endpoint = Endpoint("http", task.peer_ip, task.peer_port, task.path)
    return (CDN if task.cid.startswith(CDN_CID_PREFIX) else PEER), endpoint


class PieceFetcher:
    """Downloads pieces into the target; one instance shared by all fetch threads."""

    def __init__(
        self,
        layout: Layout,
        target: Target,
        pool: Pool,
        *,
        user_headers: Sequence[tuple[str, str]],
        source_origin: tuple[str, str, int],
        cancel: Cancel,
        bucket: TokenBucket,
        progress: Progress,
        timeout: float,
    ) -> None:
        self.layout = layout
        self.target = target
        self.pool = pool
        self.user_headers = [(n, v) for n, v in user_headers if n.lower() != "range"]
        self.source_origin = source_origin
        self.cancel = cancel
        self.bucket = bucket
        self.progress = progress
        self.timeout = timeout

    def _headers(self, kind: str, endpoint: Endpoint, task: PieceTask) -> list[tuple[str, str]]:
        piece_range = PieceRange.parse(task.range)
        end = piece_range.end
        if kind == SOURCE and self.layout.file_length > 0:
            end = min(end, self.layout.file_length - 1)
        headers = [("User-Agent", f"dfget/{PROTOCOL_VERSION}")]
        if kind == SOURCE and endpoint.origin == self.source_origin:
            # The user's headers go to the origin only (scheme, host and port the user named),
            # never to peers, nor to another host a supernode names as the source.
            headers += self.user_headers
        if not self.layout.wrapped:
            headers.append(("cdnSource", CDN_SOURCE_SOURCE))
        if kind == PEER:
            headers.append(("Accept-Encoding", "zstd"))
        headers += [
            ("pieceNum", str(task.piece_num)),
            ("pieceSize", str(task.piece_size)),
            ("Range", f"bytes={piece_range.start}-{end}"),
        ]
        return headers

    def fetch(self, task: PieceTask, buffer: bytearray) -> PieceResult:
        kind, endpoint = holder_of(task)
        holder = endpoint.authority
        result = PieceResult(task, kind, holder)
        started = time.monotonic()
        try:
            body = self._download(kind, endpoint, task, buffer, result)
            if body is not None:
                self._store(task, body, result)
        except (OSError, WireError) as exc:
            result.error = (
                f"{holder}: {getattr(exc, 'strerror', None) or exc or type(exc).__name__}"
            )
        except FramingError as exc:
            result.error = f"{holder}: {exc}"
        result.seconds = time.monotonic() - started
        return result

    def _download(
        self, kind: str, endpoint: Endpoint, task: PieceTask, buffer: bytearray, result: PieceResult
    ) -> memoryview | None:
        self.cancel.check()
        timeout = self.cancel.remaining(self.timeout)
        response = self.pool.request(endpoint, self._headers(kind, endpoint, task), timeout=timeout)
        self.cancel.watch(response.connection.sock)
        try:
            if not 200 <= response.status < 300:
                response.read(4096)
                response.release()
                result.error = f"{endpoint.authority}: HTTP {response.status}"
                if response.status == 404:
                    result.error_type = ERROR_FILE_NOT_EXIST
                return None
            expected = self._expected_length(task.piece_num)
            limit = len(buffer) if expected is None else expected
            length = response.content_length
            if length is not None and length > len(buffer):
                raise FramingError(f"piece body of {length} bytes exceeds the piece size")
            compressed = response.header("content-encoding").lower() == "zstd"
            # Hash while the bytes are hot in the cache, not in a second pass over the piece.
            hasher = hashlib.md5() if task.md5 and self.layout.wrapped and not compressed else None
            view = memoryview(buffer)
            received = 0
            while True:
                count = response.readinto(view[received : min(len(view), limit + 1)])
                if not count:
                    break
                if hasher is not None:
                    hasher.update(view[received : received + count])
                received += count
                self.bucket.consume(count)
                if received > limit:
                    raise FramingError(f"piece body longer than {limit} bytes")
            response.release()
            result.wire_bytes = received
            body = view[:received]
            if compressed:
                body = _decompress_zstd(body, limit)
            result.real_md5 = hasher.hexdigest() if hasher is not None else ""
            return body
        finally:
            self.cancel.unwatch(response.connection.sock)

    def _expected_length(self, piece_num: int) -> int | None:
        data_len = self.layout.data_len(piece_num)
        if data_len is None:
            return None
        return data_len + FRAME_OVERHEAD if self.layout.wrapped else data_len

    def _store(self, task: PieceTask, body: memoryview, result: PieceResult) -> None:
        if self.layout.wrapped:
            data_len = self.layout.data_len(task.piece_num)
            if data_len is None:
                data_len = parse_head(bytes(body[:HEAD_LEN]))[0] if len(body) >= HEAD_LEN else 0
            check_frame(body, self.layout.piece_size, data_len)
            if task.md5:
                actual = result.real_md5 or hashlib.md5(body).hexdigest()
                if actual != task.md5:
                    result.error = (
                        f"{result.holder}: piece {task.piece_num} md5 {actual} != {task.md5}"
                    )
                    result.error_type = ERROR_FILE_MD5_NOT_MATCH
                    result.real_md5 = actual
                    return
            data = body[HEAD_LEN:-1]
        else:
            expected = self.layout.data_len(task.piece_num)
            if expected is not None and len(body) != expected:
                raise FramingError(f"piece is {len(body)} bytes, expected {expected}")
            data = body
        start = self.layout.offset(task.piece_num)
        self.target.store(start, data)
        self.progress.add(len(data))
        result.ok = True
        result.nbytes = len(data)
        result.start, result.end = start, start + len(data)


def _decompress_zstd(body: memoryview, limit: int) -> memoryview:
    """The piece a peer sent zstd-compressed, never more than ``limit`` bytes of it in memory:
    a frame that declares or inflates to more is a bad piece, not an allocation."""
    import zstandard

    try:
        if zstandard.frame_content_size(body) > limit:
            raise FramingError(f"zstd piece declares more than {limit} bytes")
        reader = zstandard.ZstdDecompressor().stream_reader(body)
        parts: list[bytes] = []
        size = 0
        while size <= limit:
            part = reader.read(limit + 1 - size)
            if not part:
                break
            parts.append(part)
            size += len(part)
    except zstandard.ZstdError as exc:
        raise FramingError(f"bad zstd piece: {exc}") from exc
    if size > limit:
        raise FramingError(f"zstd piece inflates to more than {limit} bytes")
    return memoryview(b"".join(parts))
