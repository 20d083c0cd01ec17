"""A real, threaded, Range-capable HTTP origin on 127.0.0.1 for tests and benchmarks.

It can be told, per path, to ignore ranges, redirect, fail with a status, reset or truncate the
body, throttle, require basic auth or omit the length, and it counts requests and body bytes so
tests can assert where bytes came from.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class Behaviour:
    no_range: bool = False
    status: int | None = None
    fail_times: int = 0  # answer `status` this many times, then behave normally
    reset_after: int | None = None  # close the connection after this many body bytes
    reset_times: int = 1_000_000  # how many responses are cut that way
    truncate_after: int | None = None  # send fewer bytes than announced, then close
    rate: int = 0  # bytes per second per response, 0 = unlimited
    auth: tuple[str, str] | None = None
    redirect: str | None = None
    chunked: bool = False  # no Content-Length, chunked transfer encoding
    wrong_range: bool = False  # answer 206 with a shifted Content-Range
    etag: str | None = None


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    headers: dict[str, str]
    client: str


@dataclass
class Resource:
    path: Path


@dataclass
class Stats:
    requests: list[Request] = field(default_factory=list)
    body_bytes: int = 0
    bytes_by_path: dict[str, int] = field(default_factory=dict)

    def count(self, path: str) -> int:
        return sum(1 for r in self.requests if r.path.split("?")[0] == path)


class Origin:
    """Serves files from a directory; use :meth:`add` to publish bytes under a path."""

    def __init__(self, root: Path, host: str = "127.0.0.1", total_rate: int = 0) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.resources: dict[str, Resource] = {}
        self.behaviours: dict[str, Behaviour] = {}
        self.stats = Stats()
        self.lock = threading.Lock()
        self.total_rate = total_rate
        self._next_free = time.monotonic()
        handler = _make_handler(self)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET

        class _Server(ThreadingHTTPServer):
            daemon_threads = True
            address_family = family
            request_queue_size = 256

            def handle_error(self, request: Any, client_address: Any) -> None:
                if isinstance(sys.exc_info()[1], ConnectionError):
                    return  # a client hung up, e.g. on an idle keep-alive connection
                super().handle_error(request, client_address)

        self.server = _Server((host, 0), handler)
        self.host = host
        self.port = self.server.server_address[1]
        # A short poll interval: shutdown() waits for it, once per test.
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def add(self, path: str, data: bytes | Path) -> str:
        """Publish ``data`` at ``path`` and return its URL."""
        if isinstance(data, Path):
            file = data
        else:
            file = self.root / path.strip("/").replace("/", "_")
            file.write_bytes(data)
        self.resources[path] = Resource(file)
        return self.url(path)

    def behave(self, path: str, **kwargs: object) -> Behaviour:
        behaviour = Behaviour(**kwargs)  # type: ignore[arg-type]
        self.behaviours[path] = behaviour
        return behaviour

    def reset_stats(self) -> None:
        with self.lock:
            self.stats = Stats()

    def start(self) -> Origin:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _throttle_total(self, nbytes: int) -> None:
        """Shared egress cap for all connections: each chunk reserves its slot on one timeline.

        The time spent sending counts towards the slot, so one connection alone gets the whole
        cap (sleeping the full chunk time after each send would lose the send time).
        """
        if not self.total_rate:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now, self._next_free)
            self._next_free = start + nbytes / self.total_rate
        if start - now > 0.0005:
            time.sleep(start - now)


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    unit, _, spec = value.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None
    start_text, _, end_text = spec.partition("-")
    if not start_text:
        length = int(end_text)
        return max(0, size - length), size - 1
    start = int(start_text)
    end = int(end_text) if end_text else size - 1
    return start, min(end, size - 1)


def _make_handler(origin: Origin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            rng = self.headers.get("Range")
            with origin.lock:
                origin.stats.requests.append(
                    Request(
                        self.command,
                        self.path,
                        rng,
                        dict(self.headers.items()),
                        self.client_address[0],
                    )
                )
            behaviour = origin.behaviours.get(path, Behaviour())
            resource = origin.resources.get(path)
            if behaviour.auth is not None:
                expected = "Basic " + base64.b64encode(":".join(behaviour.auth).encode()).decode()
                if self.headers.get("Authorization") != expected:
                    return self._plain(
                        401, b"unauthorized", {"WWW-Authenticate": 'Basic realm="t"'}
                    )
            if behaviour.redirect:
                return self._plain(302, b"", {"Location": behaviour.redirect})
            if behaviour.status and behaviour.fail_times != 0:
                with origin.lock:
                    behaviour.fail_times -= 1
                return self._plain(behaviour.status, b"error page from origin\n")
            if resource is None:
                return self._plain(404, b"not found\n")
            size = resource.path.stat().st_size
            start, end, status = 0, size - 1, 200
            extra: dict[str, str] = {"Accept-Ranges": "bytes"} if not behaviour.no_range else {}
            if behaviour.etag:
                extra["ETag"] = behaviour.etag
            if rng and not behaviour.no_range:
                parsed = _parse_range(rng, size)
                if parsed is None or parsed[0] >= size or parsed[0] > parsed[1]:
                    return self._plain(416, b"", {"Content-Range": f"bytes */{size}"})
                start, end = parsed
                status = 206
                shown = (start + 1, end + 1) if behaviour.wrong_range else (start, end)
                extra["Content-Range"] = f"bytes {shown[0]}-{shown[1]}/{size}"
            length = end - start + 1
            self.send_response_only(status)
            self.send_header("Content-Type", "application/octet-stream")
            if behaviour.chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(length))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command == "HEAD":
                return
            self._send_body(resource.path, start, length, behaviour)

        def _plain(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response_only(status)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _send_body(self, file: Path, start: int, length: int, behaviour: Behaviour) -> None:
            limit = length
            cut = False
            with origin.lock:
                if behaviour.reset_after is not None and behaviour.reset_times > 0:
                    behaviour.reset_times -= 1
                    limit, cut = min(length, behaviour.reset_after), True
                elif behaviour.truncate_after is not None:
                    limit, cut = min(length, behaviour.truncate_after), True
            self.wfile.flush()
            sock = self.connection
            sent_total = 0
            chunk = 1 << 20 if not (behaviour.rate or origin.total_rate) else 64 * 1024
            try:
                with open(file, "rb") as fh:
                    offset = start
                    while sent_total < limit:
                        count = min(chunk, limit - sent_total)
                        if behaviour.rate:
                            time.sleep(count / behaviour.rate)
                        origin._throttle_total(count)
                        if behaviour.chunked:
                            data = os.pread(fh.fileno(), count, offset)
                            sock.sendall(b"%x\r\n" % len(data) + data + b"\r\n")
                            sent = len(data)
                        else:
                            sent = os.sendfile(sock.fileno(), fh.fileno(), offset, count)
                        if sent <= 0:
                            break
                        offset += sent
                        sent_total += sent
                        with origin.lock:
                            origin.stats.body_bytes += sent
                            key = self.path.split("?")[0]
                            origin.stats.bytes_by_path[key] = (
                                origin.stats.bytes_by_path.get(key, 0) + sent
                            )
                    if behaviour.chunked and not cut:
                        sock.sendall(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
                return
            if cut:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    sock.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )

    return Handler
