"""Benchmark: `dfget server` piece uploads against nginx serving the same bytes with ranges.

    python -m tests.bench.serve [--size-mib 1024] [--readers 4] [--rounds 3] [--passes 3]

A random file is served as 4 MiB pieces to concurrent local readers, once by a real
`dfget server` (wrapped v1 pieces from the raw service file: head + sendfile + tail) and once by
Debian's nginx (`/usr/sbin/nginx`, byte ranges of the same file, sendfile on), alternating, in
the same run. The readers are raw sockets with keep-alive and ``recv_into`` a reused buffer so
the client is not the bottleneck. Prints each server's best throughput and the ratio; the bar
is dfget >= 0.7x nginx.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

from dfget.protocol import peer_server  # noqa: E402
from tests.bench.common import DFGET, NGINX, MiB, make_random_file, nginx  # noqa: E402
from tests.support.helpers import stop_process  # noqa: E402

PIECE = 4 * MiB
ROUND_TIMEOUT = 120.0

RequestFor = Callable[[int], bytes]


def read_pieces(
    port: int, request_for: RequestFor, pieces: int, passes: int, readers: int
) -> tuple[int, float]:
    """Fetch all ``pieces`` ``passes`` times over ``readers`` keep-alive connections.

    Returns (body bytes, seconds).
    """
    counter = itertools.count()
    lock = threading.Lock()
    totals: list[int] = []
    errors: list[BaseException] = []
    deadline = time.monotonic() + ROUND_TIMEOUT

    def reader() -> None:
        buffer = bytearray(PIECE + 64 * 1024)
        view = memoryview(buffer)
        received = 0
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                while time.monotonic() < deadline:
                    with lock:
                        index = next(counter)
                    if index >= pieces * passes:
                        break
                    sock.sendall(request_for(index % pieces))
                    received += _read_response(sock, view)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)
        totals.append(received)

    threads = [threading.Thread(target=reader) for _ in range(readers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(ROUND_TIMEOUT + 10)
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"reader failed: {errors[0]!r}")
    return sum(totals), elapsed


def _read_head(sock: socket.socket, view: memoryview) -> tuple[int, int, int]:
    """Receive a 206 response head into ``view``.

    Returns (Content-Length, start, filled): ``view[start:filled]`` is the part of the body that
    came with the head.
    """
    filled = 0
    while True:
        count = sock.recv_into(view[filled:], 65536)
        if not count:
            raise ConnectionError("server closed the connection")
        filled += count
        end = bytes(view[: min(filled, 1024)]).find(b"\r\n\r\n")
        if end >= 0:
            break
    head = bytes(view[:end]).decode("latin-1")
    if not head.startswith("HTTP/1.1 206"):
        raise RuntimeError(f"unexpected answer: {head.splitlines()[0]}")
    length = next(
        int(line.split(":", 1)[1])
        for line in head.split("\r\n")
        if line.lower().startswith("content-length:")
    )
    return length, end + 4, filled


def _read_response(sock: socket.socket, view: memoryview) -> int:
    """Read one response into ``view`` (head first, then the body); returns body bytes."""
    length, start, filled = _read_head(sock, view)
    body = filled - start
    while body < length:
        count = sock.recv_into(view, min(len(view), length - body))
        if not count:
            raise ConnectionError("body cut short")
        body += count
    return length


def fetch_one(port: int, request: bytes) -> bytes:
    """One whole response body, to check that both servers send the right bytes."""
    view = memoryview(bytearray(PIECE + 64 * 1024))
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        length, start, filled = _read_head(sock, view)
        body = bytearray(view[start:filled])
        while len(body) < length:
            chunk = sock.recv(length - len(body))
            if not chunk:
                break
            body += chunk
    return bytes(body)


def range_requests(port: int, path: str, span: int, extra: RequestFor | None = None) -> RequestFor:
    """Requests for consecutive ``span``-byte ranges of ``path``; ``extra`` adds header lines."""

    def request(index: int) -> bytes:
        start = index * span
        return (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode()
            + (extra(index) if extra else b"")
            + f"Range: bytes={start}-{start + span - 1}\r\n\r\n".encode()
        )

    return request


def dfget_request(port: int, name: str) -> RequestFor:
    def headers(index: int) -> bytes:
        return f"User-Agent: dfget/1.0.6\r\nPiecenum: {index}\r\nPiecesize: {PIECE}\r\n".encode()

    return range_requests(port, f"/peer/file/{name}", PIECE, headers)


def nginx_request(port: int, path: str) -> RequestFor:
    return range_requests(port, path, PIECE - 5)  # the same raw bytes a wrapped piece carries


def start_dfget_server(home: Path) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [*DFGET, "server", "--ip", "127.0.0.1", "--home", str(home), "--alivetime", "0"],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("dfget uploader server port is "):
        proc.kill()
        raise RuntimeError(f"dfget server did not start: {line!r}")
    return proc, int(line.split()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size-mib", type=int, default=1024, help="file size in MiB (default 1024)"
    )
    parser.add_argument("--readers", type=int, default=4, help="concurrent readers (default 4)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds per server (default 3)"
    )
    parser.add_argument(
        "--passes", type=int, default=3, help="whole-file reads per round (default 3)"
    )
    args = parser.parse_args()
    if not Path(NGINX).exists():
        print(f"{NGINX} is not installed", file=sys.stderr)
        return 2
    size = args.size_mib * MiB
    tmp = Path(tempfile.mkdtemp(prefix="dfget-bench-"))
    tmp.chmod(0o755)  # nginx workers run as an unprivileged user
    dfget_proc: subprocess.Popen[bytes] | None = None
    try:
        home, www = tmp / "home", tmp / "www"
        (home / "data").mkdir(parents=True)
        www.mkdir()
        service = home / "data" / "bench.service"
        print(f"writing {args.size_mib} MiB of random data ...", flush=True)
        make_random_file(service, size, cache=True)
        os.link(service, www / "bench.bin")
        dfget_proc, dfget_port = start_dfget_server(home)
        if not peer_server.check("127.0.0.1", dfget_port, "bench", home / "data", 0):
            raise RuntimeError("dfget server did not register the task")
        with nginx(tmp, www, workers="auto") as nginx_port:
            contenders = {
                "dfget server": (dfget_port, dfget_request(dfget_port, "bench")),
                "nginx": (nginx_port, nginx_request(nginx_port, "/bench.bin")),
            }
            return compare(contenders, service, -(-size // (PIECE - 5)), args)
    finally:
        if dfget_proc is not None:
            stop_process(dfget_proc)
        shutil.rmtree(tmp, ignore_errors=True)


def compare(
    contenders: dict[str, tuple[int, RequestFor]],
    service: Path,
    pieces: int,
    args: argparse.Namespace,
) -> int:
    """Check piece 1 from both servers, then alternate rounds; 0 when dfget meets the bar."""
    with open(service, "rb") as fh:
        raw = os.pread(fh.fileno(), PIECE - 5, PIECE - 5)
    framed = (len(raw) | PIECE << 4).to_bytes(4, "big") + raw + b"\x7f"
    expected = {"dfget server": framed, "nginx": raw}
    for name, (port, request_for) in contenders.items():
        if fetch_one(port, request_for(1)) != expected[name]:
            raise RuntimeError(f"{name} sent wrong bytes for piece 1")
    best = dict.fromkeys(contenders, 0.0)
    for round_num in range(args.rounds):
        for name, (port, request_for) in contenders.items():
            nbytes, seconds = read_pieces(port, request_for, pieces, args.passes, args.readers)
            rate = nbytes / seconds / MiB
            best[name] = max(best[name], rate)
            print(
                f"round {round_num + 1} {name:>12}: {nbytes / MiB:6.0f} MiB"
                f" in {seconds:6.2f} s = {rate:6.0f} MiB/s"
            )
    ratio = best["dfget server"] / best["nginx"]
    verdict = "meets" if ratio >= 0.7 else "below"
    print(
        f"best: dfget server {best['dfget server']:.0f} MiB/s, nginx {best['nginx']:.0f} MiB/s,"
        f" ratio {ratio:.2f} ({verdict} the 0.7 bar)"
    )
    return 0 if ratio >= 0.7 else 1


if __name__ == "__main__":
    sys.exit(main())
