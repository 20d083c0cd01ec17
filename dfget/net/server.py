"""The small threaded HTTP/1.1 server under the peer server and the supernode.

Responses carry only what Go peers expect (``Content-Type``, ``Date``, ``Content-Length``; no
``Server``) and keep-alive is on. Bounds, so that no client can pin the server: at most
``max_connections`` connections (a thread each; beyond, 503 at once), an idle connection is
dropped after ``timeout``, and a request head (or body) must arrive within HEAD_TIMEOUT of its
first byte however slowly it drips.
"""

from __future__ import annotations

import io
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Sequence
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from dfget.net.heads import response_head
from dfget.net.listener import listen
from dfget.protocol.wire import decimal, parse_raw_query

log = logging.getLogger(__name__)

TEXT = "application/octet-stream"
JSON = "application/json"
MAX_CONNECTIONS = 256
HEAD_TIMEOUT = 10.0  # seconds from a request's first byte to the end of its head (or body)
BUSY_LOG_INTERVAL = 10.0
_BUSY_BODY = b"too many connections\n"
_BUSY = (
    response_head(
        503,
        [
            ("Content-Type", "text/plain"),
            ("Content-Length", str(len(_BUSY_BODY))),
            ("Connection", "close"),
        ],
    )
    + _BUSY_BODY
)


class Server(ThreadingHTTPServer):
    """Serves on ``listener`` (e.g. inherited from the process that started us), or binds
    ``address``."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        listener: socket.socket | None = None,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.max_connections = max_connections
        self._connections = threading.BoundedSemaphore(self.max_connections)
        self._refused = 0
        self._refused_logged = 0.0
        sock = listener if listener is not None else listen(*address)
        self.address_family = sock.family
        try:
            super().__init__(address, handler, bind_and_activate=False)
        except BaseException:
            sock.close()
            raise
        self.socket.close()  # the unbound one the base class made
        self.socket = sock
        self.server_address = sock.getsockname()

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread for the connection, or 503 at once when ``max_connections`` are open.
        This host's own connections always get one: strangers holding every slot must not
        make our dfget believe its peer server is dead (and start another)."""
        slot = self._connections.acquire(blocking=False)
        if not slot and not _from_this_host(request, client_address):
            self._refuse(request, client_address)
            return
        thread = threading.Thread(
            target=self._serve_connection, args=(request, client_address, slot), daemon=True
        )
        try:
            thread.start()
        except BaseException:
            if slot:
                self._connections.release()
            raise

    def _serve_connection(self, request: Any, client_address: Any, slot: bool) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            if slot:
                self._connections.release()

    def _refuse(self, request: socket.socket, client_address: Any) -> None:
        try:
            request.settimeout(1.0)
            request.sendall(_BUSY)
        except OSError:
            pass
        self.shutdown_request(request)
        self._refused += 1
        now = time.monotonic()
        if now - self._refused_logged >= BUSY_LOG_INTERVAL:
            log.warning(
                "connection limit (%d) reached: refused %d connection(s), the last from %s",
                self.max_connections,
                self._refused,
                client_address[0],
            )
            self._refused, self._refused_logged = 0, now

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60.0  # idle keep-alive connections are dropped after this long

    def setup(self) -> None:
        super().setup()
        # Head and body leave in separate writes; with Nagle on, the body waits for the
        # client's delayed ACK (40 ms per small request on Linux).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile.close()  # the base class's reader: reads go through the clock instead
        self._clock = _HeadClock(self.connection, self.timeout)
        self.rfile = io.BufferedReader(self._clock)

    def handle_one_request(self) -> None:
        self._clock.await_request()
        super().handle_one_request()

    def parse_request(self) -> bool:
        """The request line and headers, then strict framing: a request whose end is not
        beyond doubt is answered 400 and the connection closed, so no byte of it can be
        read as the next request (request smuggling)."""
        try:
            parsed = super().parse_request()
        finally:
            self._clock.head_done()
        if not parsed:
            return False
        problem = framing_problem(self.command, self.headers.get_all("Content-Length") or [],
                                  "Transfer-Encoding" in self.headers)  # fmt: skip
        if problem is None:
            return True
        self.close_connection = True
        log.info("refused a request from %s: %s", self.address_string(), problem)
        self.reply(400, problem)
        return False

    @property
    def route(self) -> str:
        return self.path.split("?", 1)[0]

    @property
    def query(self) -> dict[str, str]:
        _, _, query = self.path.partition("?")
        return parse_raw_query(query)

    def header(self, name: str, default: str = "") -> str:
        """A request header, matched case-insensitively (Go canonicalises names)."""
        value = self.headers.get(name)
        return default if value is None else value.strip()

    def start_response(
        self,
        status: int,
        content_length: int,
        content_type: str = TEXT,
        extra: Sequence[tuple[str, str]] = (),
    ) -> None:
        if self.request_version == "HTTP/0.9":
            return  # an HTTP/0.9 answer is the bare body
        headers = [
            ("Content-Type", content_type),
            ("Date", formatdate(usegmt=True)),
            ("Content-Length", str(content_length)),
            *extra,
        ]
        self.wfile.write(response_head(status, headers))

    def reply(self, status: int, body: bytes | str = b"", content_type: str = TEXT) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.start_response(status, len(data), content_type)
        if self.command != "HEAD":
            self.wfile.write(data)

    def read_body(self, limit: int) -> bytes | None:
        """The request body, or None (after answering 413) when it exceeds ``limit`` bytes."""
        length = decimal(self.headers.get("Content-Length") or "0")  # framing checked it
        if length is None or length > limit:
            self.close_connection = True
            self.reply(413, "request body too large")
            return None
        self._clock.start(HEAD_TIMEOUT)
        try:
            return self.rfile.read(length)
        finally:
            self._clock.stop()

    def log_message(self, format: str, *args: Any) -> None:  # stdlib signature
        log.debug("%s %s", self.address_string(), format % args)


def is_local_caller(peer: str, local: str) -> bool:
    """Whether a connection comes from this host: loopback, or from the very address it
    reached (a Go dfget talks to its own server through the IP it advertises)."""
    try:
        peer_ip, local_ip = (_unmapped(ipaddress.ip_address(value)) for value in (peer, local))
    except ValueError:
        return False
    return peer_ip.is_loopback or peer_ip == local_ip


def _unmapped(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _from_this_host(request: socket.socket, client_address: Any) -> bool:
    try:
        return is_local_caller(client_address[0], request.getsockname()[0])
    except (OSError, IndexError):
        return False


class _HeadClock(io.RawIOBase):
    """The connection's reading side, with a deadline a slow drip cannot stretch: the wait
    for a request's first byte is bounded by the idle timeout, the rest of its head by
    HEAD_TIMEOUT in all (each read gets only the time left)."""

    def __init__(self, sock: socket.socket, idle_timeout: float | None) -> None:
        super().__init__()
        self._socket = sock
        self._idle = idle_timeout
        self._deadline: float | None = None
        self._awaiting = False

    def await_request(self) -> None:
        """The next read that returns data starts the head's clock."""
        self._awaiting, self._deadline = True, None

    def head_done(self) -> None:
        self._awaiting, self._deadline = False, None

    def start(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds

    def stop(self) -> None:
        self._deadline = None
        self._socket.settimeout(self._idle)

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._deadline is None:
            count = self._socket.recv_into(b)
            if count and self._awaiting:
                self._awaiting = False
                self.start(HEAD_TIMEOUT)
            return count
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive in time")
        self._socket.settimeout(min(left, self._idle or left))
        try:
            return self._socket.recv_into(b)
        finally:
            self._socket.settimeout(self._idle)


def framing_problem(method: str, content_lengths: list[str], chunked: bool) -> str | None:
    """Why a request's framing is ambiguous, or None: bodies come only with a single plain
    Content-Length, never a Transfer-Encoding (nothing here takes chunked uploads), and a GET
    or HEAD has none."""
    if chunked:
        return "Transfer-Encoding is not supported"
    if len(content_lengths) > 1:
        return "repeated Content-Length"
    if not content_lengths:
        return None
    length = decimal(content_lengths[0].strip())
    if length is None:
        return "invalid Content-Length"
    if length and method in ("GET", "HEAD"):
        return f"a {method} request has no body"
    return None


def make_server(
    host: str,
    port: int,
    handler: type[BaseHTTPRequestHandler],
    max_connections: int = MAX_CONNECTIONS,
) -> Server:
    """Bind a server; ``host`` may be an IPv4 or IPv6 literal, "" means all interfaces."""
    return Server((host.strip("[]") or "", port), handler, max_connections=max_connections)
