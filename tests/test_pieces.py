"""Piece framing and range arithmetic pinned to the spec's and the wire transcript's numbers."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dfget.protocol.pieces import (
    FRAME_OVERHEAD,
    FramingError,
    check_frame,
    frame_head,
    parse_head,
    piece_count,
    piece_data_len,
    raw_request_slice,
    wrap,
    wrapped_request_slice,
)
from dfget.protocol.ranges import PieceRange, RangeError, parse_range_header

MiB = 1024 * 1024
P4 = 4 * MiB


@pytest.mark.parametrize(
    ("data_len", "piece_size", "head"),
    [
        (P4 - 5, P4, "043ffffb"),  # full 4 MiB piece (transcript §1.19)
        (15 * MiB - 5, 15 * MiB, "0feffffb"),  # full 15 MiB piece
        (2097162, P4, "0420000a"),  # last piece of a 10 MiB file (§1.20)
        (250, P4, "040000fa"),  # last piece of a 200 MiB file (§2.3)
        (0, P4, "04000000"),  # zero-length file
    ],
)
def test_frame_head_matches_the_wire(data_len: int, piece_size: int, head: str) -> None:
    assert frame_head(data_len, piece_size).hex() == head
    assert parse_head(bytes.fromhex(head)) == (data_len, piece_size)


def test_zero_length_file_is_head_and_tail() -> None:
    assert wrap(b"", P4) == bytes.fromhex("04000000") + b"\x7f"
    assert piece_count(0, P4) == 1


def test_ten_mib_file_has_the_transcripts_pieces() -> None:
    length = 10 * MiB
    assert piece_count(length, P4) == 3
    assert [piece_data_len(k, length, P4) for k in range(3)] == [4194299, 4194299, 2097162]


def test_head_must_fit_24_bits() -> None:
    with pytest.raises(FramingError):
        frame_head(1 << 24, P4)


def test_last_piece_past_eof_is_truncated() -> None:
    size = 10 * MiB
    served = wrapped_request_slice(PieceRange.of_piece(2, P4), 2, size)
    assert (served.raw_start, served.data_len, served.content_length) == (
        2 * (P4 - 5),
        2097162,
        2097167,
    )


def test_full_piece_maps_to_raw_offset() -> None:
    served = wrapped_request_slice(PieceRange.of_piece(1, P4), 1, 10 * MiB)
    assert (served.raw_start, served.data_len) == (P4 - 5, P4 - 5)


def test_zero_length_file_serves_an_empty_piece() -> None:
    served = wrapped_request_slice(PieceRange.of_piece(0, P4), 0, 0)
    assert (served.raw_start, served.data_len, served.content_length) == (0, 0, 5)


@pytest.mark.parametrize(
    ("rng", "piece_num"),
    [
        (PieceRange(0, 3), 0),  # fewer than 5 bytes cannot hold a frame
        (PieceRange(0, P4 - 1), 1),  # start_raw = 0 - 5 < 0
        (PieceRange(3 * P4, 4 * P4 - 1), 3),  # past the end of a 10 MiB file
    ],
)
def test_unsatisfiable_wrapped_requests(rng: PieceRange, piece_num: int) -> None:
    with pytest.raises(RangeError):
        wrapped_request_slice(rng, piece_num, 10 * MiB)


def test_raw_slices() -> None:
    assert raw_request_slice(PieceRange(0, P4 - 1), 10 * MiB).data_len == P4
    assert raw_request_slice(PieceRange(2 * P4, 3 * P4 - 1), 10 * MiB).data_len == 2 * MiB
    with pytest.raises(RangeError):
        raw_request_slice(PieceRange(10 * MiB, 11 * MiB), 10 * MiB)


@pytest.mark.parametrize(
    "value",
    ["bytes=0-", "bytes=-5", "bytes=5-5", "bytes=9-3", "bytes=0-1,4-9", "items=0-9", "0-9", ""],
)
def test_range_header_rejects(value: str) -> None:
    with pytest.raises(RangeError):
        parse_range_header(value)


def test_range_header_accepts_a_single_range() -> None:
    assert parse_range_header("bytes=8388608-12582911") == PieceRange(8388608, 12582911)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=4096), mib=st.integers(min_value=4, max_value=15))
def test_wrap_round_trip(data: bytes, mib: int) -> None:
    """Piece sizes are whole MiB, so ``P << 4`` never touches the 24 data-length bits."""
    piece_size = mib * MiB
    frame = wrap(data, piece_size)
    check_frame(frame, piece_size, len(data))
    assert struct.unpack(">I", frame[:4])[0] == (len(data) | (piece_size << 4))
    assert parse_head(frame[:4])[0] == len(data)
    assert frame[4:-1] == data and frame[-1] == 0x7F


@settings(max_examples=100, deadline=None)
@given(
    length=st.integers(min_value=0, max_value=64 * 1024),
    piece_size=st.integers(min_value=6, max_value=4096),
    data=st.data(),
)
def test_wrapped_requests_cover_the_file(length: int, piece_size: int, data: st.DataObject) -> None:
    """Requesting every announced piece yields exactly the file, piece by piece."""
    count = piece_count(length, piece_size)
    k = data.draw(st.integers(min_value=0, max_value=count - 1))
    served = wrapped_request_slice(PieceRange.of_piece(k, piece_size), k, length)
    assert served.raw_start == k * (piece_size - FRAME_OVERHEAD)
    assert served.data_len == piece_data_len(k, length, piece_size)
    assert sum(piece_data_len(i, length, piece_size) for i in range(count)) == length
