"""Small pure functions: rates, durations, supernode entries, completed byte ranges."""

from __future__ import annotations

import os
import random
import sys

import pytest

from dfget.config import DEFAULT_NODE, Node, parse_nodes
from dfget.download import writeback
from dfget.download.intervals import IntervalSet
from dfget.protocol.codes import DEFAULT_SUPERNODE_PORT
from dfget.units import format_duration, format_rate, parse_duration, parse_rate

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

# -- rates ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("1048576", MiB),
        ("10b", 10),
        ("10B", 10),
        ("64K", 64 * KiB),
        ("64KB", 64 * KiB),
        ("64kb", 64 * KiB),
        ("20M", 20 * MiB),
        ("100MB", 100 * MiB),
        ("1g", GiB),
        ("2GB", 2 * GiB),
        (" 10 M ", 10 * MiB),
        (7, 7),
    ],
)
def test_parse_rate(text: str | int, expected: int) -> None:
    assert parse_rate(text) == expected


@pytest.mark.parametrize(
    "text", ["", "M", "fast", "1.5M", "-1", "10BB", "10KBB", "10KiB", "10T", "1 0M", -1]
)
def test_parse_rate_rejects(text: str | int) -> None:
    with pytest.raises(ValueError):
        parse_rate(text)


@pytest.mark.parametrize(
    ("rate", "text"),
    [(0, "0B"), (1, "1B"), (1536, "1536B"), (KiB, "1KB"), (20 * MiB, "20MB"), (3 * GiB, "3GB")],
)
def test_format_rate(rate: int, text: str) -> None:
    assert format_rate(rate) == text
    assert parse_rate(text) == rate


# -- durations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("10", 10.0),
        ("2.5", 2.5),
        ("30s", 30.0),
        ("2.5s", 2.5),
        (".5s", 0.5),
        ("300ms", 0.3),
        ("1500us", 0.0015),
        ("1500µs", 0.0015),
        ("10ns", 1e-8),
        ("3m0s", 180.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("1h0m0s", 3600.0),
        ("+5s", 5.0),
        ("-1s", -1.0),
        (12, 12.0),
        (0.25, 0.25),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "-", "s", "5x", "1m30", "m5", "1 m", "5s5", "inf", "nan", "-inf", "1e3"]
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.3, "300ms"),
        (0.001, "1ms"),
        (1.5, "1.5s"),
        (30, "30s"),
        (90, "1m30s"),
        (180, "3m0s"),
        (300, "5m0s"),
        (3600, "1h0m0s"),
        (3661.5, "1h1m1.5s"),
        (-90, "-1m30s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    """Go's Duration.String(), which v1 prints in help defaults and messages."""
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


# -- supernode entries ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "node"),
    [
        ("sn1", Node("sn1", DEFAULT_SUPERNODE_PORT, 1)),
        ("sn1:9000", Node("sn1", 9000, 1)),
        ("sn1:9000=3", Node("sn1", 9000, 3)),
        ("10.0.0.1=5", Node("10.0.0.1", DEFAULT_SUPERNODE_PORT, 5)),
        ("  sn1:1  ", Node("sn1", 1, 1)),
        ("[::1]:8003", Node("::1", 8003, 1)),
        ("[::1]", Node("::1", DEFAULT_SUPERNODE_PORT, 1)),
        ("[::1]=2", Node("::1", DEFAULT_SUPERNODE_PORT, 2)),
        ("::1", Node("::1", DEFAULT_SUPERNODE_PORT, 1)),
        ("fe80::1", Node("fe80::1", DEFAULT_SUPERNODE_PORT, 1)),
    ],
)
def test_node_parse(text: str, node: Node) -> None:
    assert Node.parse(text) == node


@pytest.mark.parametrize(
    "text",
    [
        "",
        ":8002",
        "[]:80",
        "sn1:0",
        "sn1:65536",
        "sn1:abc",
        "sn1:+80",
        "sn1=0",
        "sn1=-1",
        "sn1=abc",
        "sn1:1=1=2",
        "[::1",
        "[::1]x:80",
    ],
)
def test_node_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid node"):
        Node.parse(text)


def test_node_address() -> None:
    assert Node.parse("sn1").address == f"sn1:{DEFAULT_SUPERNODE_PORT}"
    assert Node.parse("[::1]:8003=2").address == "[::1]:8003"
    assert Node.parse(DEFAULT_NODE).address == DEFAULT_NODE


def test_parse_nodes() -> None:
    assert parse_nodes("a, b:1=2, ,c") == (Node("a"), Node("b", 1, 2), Node("c"))
    assert parse_nodes(("a,b", "c:7")) == (Node("a"), Node("b"), Node("c", 7))
    assert parse_nodes("") == ()


# -- completed byte ranges ------------------------------------------------------------------


def test_intervals_in_order() -> None:
    done = IntervalSet()
    assert done.prefix() == 0 and done.total() == 0
    done.add(0, 10)
    done.add(10, 25)
    assert done.prefix() == 25
    assert done.missing(40) == [(25, 40)]
    assert done.missing(25) == []


def test_intervals_out_of_order_and_overlapping() -> None:
    done = IntervalSet()
    done.add(20, 30)
    done.add(50, 60)
    assert done.prefix() == 0
    assert done.missing(70) == [(0, 20), (30, 50), (60, 70)]
    done.add(5, 55)  # bridges both
    assert done.missing(70) == [(0, 5), (60, 70)]
    done.add(0, 5)
    assert done.prefix() == 60
    done.add(58, 59)  # already covered
    done.add(60, 60)  # empty
    done.add(61, 60)  # inverted: ignored
    assert done.prefix() == 60 and done.total() == 60


def test_intervals_covers() -> None:
    done = IntervalSet()
    done.add(10, 20)
    assert done.covers(10, 20) and done.covers(12, 18) and done.covers(15, 15)
    assert not done.covers(5, 15)
    assert not done.covers(15, 25)
    assert not done.covers(0, 1)


def test_intervals_missing_is_bounded_by_total() -> None:
    done = IntervalSet()
    done.add(100, 200)
    assert done.missing(50) == [(0, 50)]
    assert done.missing(150) == [(0, 100)]


def test_intervals_random_order_matches_a_bitmap() -> None:
    rng = random.Random(7)
    size = 500
    for _ in range(50):
        done, bitmap = IntervalSet(), [False] * size
        for _ in range(rng.randrange(1, 30)):
            start = rng.randrange(size)
            end = min(size, start + rng.randrange(0, 60))
            done.add(start, end)
            bitmap[start:end] = [True] * (end - start)
        prefix = next((i for i, bit in enumerate(bitmap) if not bit), size)
        assert done.prefix() == prefix
        assert done.total() == sum(bitmap)
        gaps = done.missing(size)
        assert all(not any(bitmap[s:e]) for s, e in gaps)
        assert sum(e - s for s, e in gaps) == size - sum(bitmap)


def test_writeback_hint_is_accepted_by_the_kernel(tmp_path) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("sync_file_range is Linux only")
    sync_file_range = writeback._load()
    path = tmp_path / "data"
    path.write_bytes(os.urandom(1 << 20))
    fd = os.open(path, os.O_RDWR)
    try:
        assert sync_file_range(fd, 0, 1 << 20, writeback._SYNC_FILE_RANGE_WRITE) == 0
        writeback.start_writeback(fd, 4096, 8192)
    finally:
        os.close(fd)
    # Not a file, or not open: a hint only, never an error of the download.
    read_end, write_end = os.pipe()
    writeback.start_writeback(write_end, 0, 10)
    os.close(read_end)
    os.close(write_end)
    writeback.start_writeback(write_end, 0, 10)
