"""Downloader parts in-process: the work file's completion set and the connection pool."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from dfget.download.target import Target
from dfget.net.client import Pool
from dfget.net.endpoint import Endpoint
from tests.support.helpers import RawServer


def test_a_range_is_never_seen_complete_before_it_is(tmp_path: Path, fast_switching: None) -> None:
    """The P2P loop asks whether a piece is stored while fetch threads complete others; the
    interval set's add updates two lists in two steps, so an unlocked read could see a range
    as complete (and report the piece held) before it was (7,851 such reads of 200,000 here)."""
    target = Target(tmp_path / "work", None, [])
    pieces = 100_000
    finished = threading.Event()
    wrong = 0

    def complete() -> None:
        for k in range(1, pieces, 2):  # odd pieces, then the even ones that merge them
            target.complete(k, k + 1)
        for k in range(0, pieces, 2):
            target.complete(k, k + 1)
        finished.set()

    def ask() -> None:
        nonlocal wrong
        k = 0
        while not finished.is_set():
            k = (k + 2_502) % (pieces - 4)
            k -= k % 2
            # Pieces only ever get completed: [k, k+3) complete means piece k+2 is too.
            if target.covers(k, k + 3) and not target.covers(k + 2, k + 3):
                wrong += 1

    threads = [threading.Thread(target=complete), threading.Thread(target=ask)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    target.discard()
    assert wrong == 0


def answer_once(conn: socket.socket) -> None:
    """One answer, then the connection closes without saying so (as a server does when its
    keep-alive timeout passes while the connection sits in our pool)."""
    if conn.recv(65536):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


def test_a_stale_pooled_connection_is_retried_on_a_fresh_one() -> None:
    server = RawServer(answer_once)
    pool = Pool(timeout=5)
    endpoint = Endpoint("http", "127.0.0.1", server.port, "/")
    try:
        first, second = pool.request(endpoint), pool.request(endpoint)  # two at once
        for response in (first, second):
            assert response.read() == b"ok"
            response.release()  # back to the pool, where the server's close makes it stale
        third = pool.request(endpoint)  # the first idle one is stale, and so is the next
        assert third.read() == b"ok"
        assert server.connections == 3
    finally:
        pool.close()
        server.close()
