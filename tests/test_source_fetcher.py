"""The source fetcher in-process, against a real origin on 127.0.0.1: where ranges land in the
work file, which requests carry which Range and headers, and what is refused or retried."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dfget.download.accounting import Accounting
from dfget.download.cancel import Cancel
from dfget.download.progress import Progress
from dfget.download.source import MIN_PART, SourceFetcher
from dfget.download.target import Target
from dfget.errors import ExitCode, NotFoundError, SourceHTTPError
from dfget.net.tokenbucket import TokenBucket
from tests.support.helpers import RawServer, random_bytes
from tests.support.origin import Origin

DEADLINE = 20.0  # seconds any one fetcher may take before it gives up with a timeout

MakeFetcher = Callable[..., SourceFetcher]


@pytest.fixture
def fetcher_for(tmp_path: Path) -> Iterator[MakeFetcher]:
    """Builds fetchers writing into one work file; all are closed and the file discarded."""
    target = Target(tmp_path / "work", None, [])
    made: list[SourceFetcher] = []

    def make(url: str, headers: list[tuple[str, str]] | None = None) -> SourceFetcher:
        fetcher = SourceFetcher(
            url,
            headers or [],
            target,
            tls=None,
            progress=Progress(False),
            accounting=Accounting(),
            bucket=TokenBucket(0),
            cancel=Cancel(time.monotonic() + DEADLINE),
            io_timeout=5.0,
        )
        made.append(fetcher)
        return fetcher

    yield make
    for fetcher in made:
        fetcher.close()
    target.discard()


def ranges_asked(origin: Origin) -> list[str | None]:
    return [request.range for request in origin.stats.requests]


def stored(fetcher: SourceFetcher, start: int, end: int) -> bytes:
    with open(fetcher.target.work_path, "rb") as file:
        file.seek(start)
        return file.read(end - start)


def test_ranges_land_at_their_offsets_and_nowhere_else(
    origin: Origin, fetcher_for: MakeFetcher
) -> None:
    size = 300_000
    data = random_bytes(size, seed=41)
    fetcher = fetcher_for(origin.add("/f.bin", data))

    info = fetcher.probe(0, 1000)
    fetcher.fetch_ranges([(5000, 9000), (200_000, 250_000)], connections=1)

    assert (info.length, info.ranges) == (size, True)
    for start, end in [(0, 1000), (5000, 9000), (200_000, 250_000)]:
        assert stored(fetcher, start, end) == data[start:end]
    target = fetcher.target
    assert target.missing(size) == [(1000, 5000), (9000, 200_000), (250_000, size)]
    assert ranges_asked(origin) == ["bytes=0-999", "bytes=5000-8999", "bytes=200000-249999"]
    assert origin.stats.body_bytes == 1000 + 4000 + 50_000  # each byte asked for once


def test_connections_split_ranges_but_never_below_the_minimum_part(
    origin: Origin, fetcher_for: MakeFetcher
) -> None:
    size = 2 * MIN_PART + 1000
    data = random_bytes(size, seed=42)
    fetcher = fetcher_for(origin.add("/parts.bin", data))
    fetcher.probe(0, 1)

    fetcher.fetch_ranges([(1, 100), (200, 300)], connections=4)  # small: one request each
    fetcher.fetch_ranges([(300, size)], connections=2)  # halves, each above MIN_PART

    half = 300 + (size - 300) // 2  # the middle of an even span
    assert sorted(ranges_asked(origin)[1:3]) == ["bytes=1-99", "bytes=200-299"]
    assert sorted(ranges_asked(origin)[3:]) == [f"bytes=300-{half - 1}", f"bytes={half}-{size - 1}"]
    assert half - 300 > MIN_PART
    assert stored(fetcher, 300, size) == data[300:]
    assert fetcher.target.missing(size) == [(100, 200)]


def test_a_range_answered_with_another_content_range_is_refused(
    origin: Origin, fetcher_for: MakeFetcher
) -> None:
    data = random_bytes(10_000, seed=43)
    fetcher = fetcher_for(origin.add("/shifted.bin", data))
    fetcher.probe(0, 1)
    origin.behave("/shifted.bin", wrong_range=True)  # 206 for [start + 1, end + 1]

    with pytest.raises(SourceHTTPError, match="asked for bytes 1000-1999, got 1001-2000"):
        fetcher.fetch_ranges([(1000, 2000)], connections=1)

    assert not fetcher.target.covers(1000, 1001)  # not a byte of the shifted body is kept
    assert ranges_asked(origin) == ["bytes=0-0", "bytes=1000-1999"]  # and it is not retried


def test_a_dropped_connection_resumes_the_range_from_its_last_byte(
    origin: Origin, fetcher_for: MakeFetcher
) -> None:
    size = 400_000
    data = random_bytes(size, seed=44)
    fetcher = fetcher_for(origin.add("/cut.bin", data))
    fetcher.probe(0, 1)
    origin.behave("/cut.bin", reset_after=100_000, reset_times=1)

    fetcher.fetch_ranges([(1000, size)], connections=1)

    assert stored(fetcher, 1000, size) == data[1000:]
    first, second = ranges_asked(origin)[1:]
    assert first == f"bytes=1000-{size - 1}"
    assert second is not None and second.endswith(f"-{size - 1}")
    resumed_at = int(second.removeprefix("bytes=").split("-")[0])
    assert 1000 < resumed_at <= 101_000  # what arrived before the reset is not asked again


@pytest.mark.parametrize(
    ("status", "raised", "requests"),
    [(503, None, 3), (404, NotFoundError, 1)],
    ids=["unavailable-is-retried", "not-found-is-final"],
)
def test_statuses_of_a_range_are_retried_or_final(
    origin: Origin,
    fetcher_for: MakeFetcher,
    status: int,
    raised: type[Exception] | None,
    requests: int,
) -> None:
    data = random_bytes(5000, seed=45)
    fetcher = fetcher_for(origin.add("/s.bin", data))
    fetcher.probe(0, 1)
    origin.behave("/s.bin", status=status, fail_times=2)  # then it answers normally

    if raised is None:
        fetcher.fetch_ranges([(1, 5000)], connections=1)
        assert stored(fetcher, 1, 5000) == data[1:]
    else:
        with pytest.raises(raised):
            fetcher.fetch_ranges([(1, 5000)], connections=1)
        assert not fetcher.target.covers(1, 2)
    assert ranges_asked(origin)[1:] == ["bytes=1-4999"] * requests


def test_later_ranges_go_straight_to_where_a_redirect_led(
    origin: Origin, fetcher_for: MakeFetcher
) -> None:
    data = random_bytes(3000, seed=46)
    origin.add("/new.bin", data)
    origin.behave("/old.bin", redirect=origin.url("/new.bin"))
    fetcher = fetcher_for(origin.url("/old.bin"))

    info = fetcher.probe(0, 1000)
    fetcher.fetch_ranges([(1000, 3000)], connections=1)

    assert info.endpoint.target == "/new.bin"
    paths = [(request.path, request.range) for request in origin.stats.requests]
    assert paths == [
        ("/old.bin", "bytes=0-999"),
        ("/new.bin", "bytes=0-999"),
        ("/new.bin", "bytes=1000-2999"),
    ]
    assert stored(fetcher, 0, 3000) == data


def test_identity_asks_for_one_byte_and_stores_nothing(
    origin: Origin, fetcher_for: MakeFetcher
) -> None:
    size = 70_000
    fetcher = fetcher_for(origin.add("/id.bin", random_bytes(size, seed=47)))
    origin.behave("/id.bin", etag='"v7"')

    assert fetcher.identity() == (size, '"v7"', "")
    assert ranges_asked(origin) == ["bytes=0-0"]
    assert fetcher.target.missing(size) == [(0, size)]


def test_identity_retries_a_busy_source_then_reports_its_status(
    origin: Origin, fetcher_for: MakeFetcher
) -> None:
    """A 503 to the identity request is retried like any range; once it stops, the identity
    comes through, and a source that stays busy ends in its HTTP error (exit 81), not in an
    internal retry signal."""
    size = 9_000
    url = origin.add("/busy.bin", random_bytes(size, seed=48))
    origin.behave("/busy.bin", status=503, fail_times=1)
    assert fetcher_for(url).identity() == (size, "", "")
    assert ranges_asked(origin) == ["bytes=0-0"] * 2

    origin.behave("/busy.bin", status=503, fail_times=1_000)
    with pytest.raises(SourceHTTPError) as caught:
        fetcher_for(url).identity()
    assert type(caught.value) is SourceHTTPError and caught.value.status == 503
    assert caught.value.exit_code == ExitCode.SOURCE_HTTP


def test_the_request_head_carries_the_users_headers_over_the_defaults(
    fetcher_for: MakeFetcher,
) -> None:
    heads: list[bytes] = []

    def answer(conn: socket.socket) -> None:
        conn.settimeout(5)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(65536)
            if not chunk:
                return
            head += chunk
        heads.append(head)
        conn.sendall(
            b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-1/2\r\n"
            b"Content-Length: 2\r\nConnection: close\r\n\r\nok"
        )

    server = RawServer(answer)
    try:
        fetcher = fetcher_for(
            f"http://127.0.0.1:{server.port}/a%20b?x=1",
            [("user-agent", "custom/1"), ("X-Token", "t0k"), ("Range", "bytes=5-6")],
        )
        fetcher.probe()
    finally:
        server.close()

    assert heads == [
        b"GET /a%20b?x=1 HTTP/1.1\r\n"
        + f"Host: 127.0.0.1:{server.port}\r\n".encode()
        + b"Accept-Encoding: identity\r\n"  # the default the user did not replace
        + b"user-agent: custom/1\r\n"  # replaces dfget's own, whatever its case
        + b"X-Token: t0k\r\n"
        + b"Range: bytes=0-\r\n\r\n"  # the fetcher's, never the user's
    ]
