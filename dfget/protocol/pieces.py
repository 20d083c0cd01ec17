"""Piece arithmetic and Dragonfly v1 piece framing.

Wrapped pieces (local CDN and peer servers) are laid out as a 4-byte big-endian head
``dataLen | (pieceSize << 4)``, ``dataLen`` raw bytes, and the tail byte ``0x7F``. A piece size
``P`` therefore carries ``P - 5`` raw bytes. In the source-CDN pattern pieces are raw and a piece
carries ``P`` bytes. Everything here is a pure function shared by the downloader, the uploader
and the supernode, so the three roles can never disagree about a byte.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from dfget.errors import ProtocolError
from dfget.protocol.ranges import PieceRange, RangeError

MiB = 1024 * 1024
HEAD_LEN = 4
TAIL_BYTE = 0x7F
TAIL = b"\x7f"
FRAME_OVERHEAD = HEAD_LEN + 1
DEFAULT_PIECE_SIZE = 4 * MiB
MAX_PIECE_SIZE = 15 * MiB
DATA_LEN_MASK = 0xFFFFFF

_HEAD = struct.Struct(">I")


class FramingError(ProtocolError, ValueError):
    """A wrapped piece whose head, length or tail is not what the protocol requires."""


def piece_size_for_length(length: int) -> int:
    """The wrapped piece size the v1 supernode chooses for a raw file length."""
    if length <= 200 * MiB:
        return DEFAULT_PIECE_SIZE
    groups = length // (100 * MiB)
    return min((groups - 2) * MiB + DEFAULT_PIECE_SIZE, MAX_PIECE_SIZE)


def piece_capacity(piece_size: int, wrapped: bool = True) -> int:
    """Raw bytes carried by one full piece."""
    return piece_size - FRAME_OVERHEAD if wrapped else piece_size


def piece_count(length: int, piece_size: int, wrapped: bool = True) -> int:
    """Number of pieces of a raw file; a zero-length file still has one (empty) piece."""
    if length <= 0:
        return 1
    capacity = piece_capacity(piece_size, wrapped)
    return -(-length // capacity)


def piece_data_len(piece_num: int, length: int, piece_size: int, wrapped: bool = True) -> int:
    """Raw bytes in piece ``piece_num`` of a file of ``length`` raw bytes."""
    capacity = piece_capacity(piece_size, wrapped)
    return max(0, min(capacity, length - piece_num * capacity))


def raw_offset(piece_num: int, piece_size: int, wrapped: bool = True) -> int:
    """Offset of a piece's first raw byte in the output file."""
    return piece_num * piece_capacity(piece_size, wrapped)


def wrapped_length(length: int, piece_size: int) -> int:
    """Length of the CDN file: raw length plus five framing bytes per piece."""
    return max(length, 0) + FRAME_OVERHEAD * piece_count(length, piece_size)


def frame_head(data_len: int, piece_size: int) -> bytes:
    """The 4-byte head of a wrapped piece."""
    if not 0 <= data_len <= DATA_LEN_MASK:
        raise FramingError(f"piece data length {data_len} does not fit 24 bits")
    return _HEAD.pack((data_len | (piece_size << 4)) & 0xFFFFFFFF)


def parse_head(head: bytes) -> tuple[int, int]:
    """Decode a head into ``(data_len, piece_size)``."""
    if len(head) != HEAD_LEN:
        raise FramingError(f"piece head must be {HEAD_LEN} bytes, got {len(head)}")
    (value,) = _HEAD.unpack(head)
    return value & DATA_LEN_MASK, (value & ~DATA_LEN_MASK & 0xFFFFFFFF) >> 4


def wrap(data: bytes, piece_size: int) -> bytes:
    """A complete wrapped piece for ``data``."""
    return frame_head(len(data), piece_size) + data + TAIL


def check_frame(frame: bytes | bytearray | memoryview, piece_size: int, data_len: int) -> None:
    """Validate a received wrapped piece: exact length, head and tail.

    v1 checks only the piece MD5 (when one is given); we also reject a frame whose head, tail or
    length is wrong, so no stray byte from a confused holder can reach the output.
    """
    view = memoryview(frame)
    if len(view) != data_len + FRAME_OVERHEAD:
        raise FramingError(f"piece is {len(view)} bytes, expected {data_len + FRAME_OVERHEAD}")
    head_len, _ = parse_head(bytes(view[:HEAD_LEN]))
    if bytes(view[:HEAD_LEN]) != frame_head(data_len, piece_size):
        raise FramingError(f"piece head announces {head_len} data bytes, expected {data_len}")
    if view[-1] != TAIL_BYTE:
        raise FramingError(f"piece tail byte is {view[-1]:#04x}, expected 0x7f")


@dataclass(frozen=True, slots=True)
class ServedSlice:
    """What a peer server sends for one wrapped request: head, raw slice, tail."""

    raw_start: int
    data_len: int

    @property
    def content_length(self) -> int:
        return self.data_len + FRAME_OVERHEAD


def wrapped_request_slice(rng: PieceRange, piece_num: int, file_size: int) -> ServedSlice:
    """Map a wrapped range request onto the raw service file.

    Raises RangeError for a request that is not satisfiable (HTTP 416).
    """
    raw_start = rng.start - piece_num * FRAME_OVERHEAD
    length = rng.length
    if length < FRAME_OVERHEAD or raw_start < 0:
        raise RangeError("range not satisfiable")
    if raw_start > file_size:
        raise RangeError("range not satisfiable")
    data_len = min(length - FRAME_OVERHEAD, file_size - raw_start)
    return ServedSlice(raw_start, data_len)


def servable_piece_request(piece_size: int, rng: PieceRange, wrapped: bool) -> bool:
    """Whether a peer server answers this piece request: a piece size of at most v1's 15 MiB
    (wrapped: whole MiB, the frame head holds it above the 24-bit data length, anything else
    makes the head ambiguous) and a range of at most one piece, so no request can make the
    server read or compress more than a piece."""
    if not 0 < piece_size <= MAX_PIECE_SIZE or rng.length > piece_size:
        return False
    return not wrapped or piece_size % MiB == 0


def raw_request_slice(rng: PieceRange, file_size: int) -> ServedSlice:
    """Map a raw (``cdnSource: source``) range request onto the service file."""
    if rng.start >= file_size:
        raise RangeError("range not satisfiable")
    return ServedSlice(rng.start, min(rng.length, file_size - rng.start))
