"""Process and socket helpers shared by the tests: real subprocesses, real ports, bounded waits."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from dfget.uploader.ports import SEQUENTIAL_TRIES, candidates

DFGET = [sys.executable, "-m", "dfget"]
REPO = Path(__file__).resolve().parents[2]
V1_SUPERNODE = [sys.executable, "-m", "tests.support.v1_supernode"]
"""Our supernode with Dragonfly 1.0.6's scheduling (tests/support/v1_supernode.py), from REPO."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now, and not one of :func:`crowded_ports`: by v1's rule every peer server
    started in the same five minutes tries the same few ports first, so a test on another
    worker may take such a port at any moment, between our choosing it and binding it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    crowded = crowded_ports()
    while True:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in crowded:
            return port


def crowded_ports() -> range:
    """The ports dfget's peer servers try first now, and those the next ten minutes add."""
    base = next(candidates())
    return range(base, base + SEQUENTIAL_TRIES + 2)


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    """Block until something accepts connections on host:port, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def run_dfget(
    args: Sequence[str],
    timeout: float = 120.0,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stdin: int | None = subprocess.DEVNULL,
) -> subprocess.CompletedProcess[bytes]:
    """Run the real `dfget` command and wait for it (bounded)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [*DFGET, *args], capture_output=True, timeout=timeout, env=full_env, cwd=cwd, stdin=stdin
    )


def start_dfget(
    args: Sequence[str], env: dict[str, str] | None = None, **kwargs: object
) -> subprocess.Popen[bytes]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.Popen(  # type: ignore[call-overload]
        [*DFGET, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env, **kwargs
    )


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; always reaps."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


def write_random(path: Path, size: int, seed: int = 1) -> bytes:
    data = random_bytes(size, seed)
    path.write_bytes(data)
    return data


def random_bytes(size: int, seed: int = 1) -> bytes:
    import random

    return random.Random(seed).randbytes(size)


def raw_http(
    port: int,
    request: bytes,
    host: str = "127.0.0.1",
    source: str | None = None,
    timeout: float = 10.0,
) -> tuple[int | None, dict[str, str], bytes]:
    """Send ``request`` as is and read until the server closes: ``(status, headers, body)``.

    ``status`` is None when the connection closed without a response. For hostile requests
    that an HTTP client library would refuse to send.
    """
    with socket.create_connection(
        (host, port), timeout=timeout, source_address=(source, 0) if source else None
    ) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/"):
        return None, {}, data
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def peak_rss(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def thread_count(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise RuntimeError(f"no thread count for {pid}")


def eventually(condition: Callable[[], object], timeout: float = 10.0, step: float = 0.03) -> bool:
    """Poll ``condition()`` until it is true or ``timeout`` seconds pass; whether it became
    true. The one bounded wait of the suite: ``assert eventually(...)``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)
    return True


def settle(measure: Callable[[], int], limit: int, timeout: float = 10.0) -> int:
    """Poll ``measure()`` until it is at most ``limit`` (or ``timeout`` passes); the last value."""
    deadline = time.monotonic() + timeout
    value = measure()
    while value > limit and time.monotonic() < deadline:
        time.sleep(0.1)
        value = measure()
    return value


def peer_port(host: str = "127.0.0.1") -> int:
    """A currently free port in 15000-65000, where the supernode accepts peer servers."""
    import random

    crowded = crowded_ports()
    for _ in range(200):
        port = random.randrange(20000, 65000)
        if port in crowded:
            continue
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-65000")


class FakeClock:
    """Wall and monotonic time that move only when told: ``Clock(clock.wall, clock.monotonic)``."""

    def __init__(self) -> None:
        self.offset = 0.0

    def wall(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class RawServer:
    """A TCP server on 127.0.0.1 that hands each connection, one after the other, to
    ``answer`` and then closes it: for servers that speak HTTP wrongly on purpose."""

    def __init__(self, answer: Callable[[socket.socket], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.connections = 0
        self._answer = answer
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn, contextlib.suppress(OSError):
                self._answer(conn)

    def close(self) -> None:
        self.sock.close()
