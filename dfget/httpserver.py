"""The small threaded HTTP/1.1 server under the peer server and the supernode.

Responses carry only what Go peers expect (``Content-Type``, ``Date``, ``Content-Length``; no
``Server``), keep-alive is on, and idle connections are dropped after ``timeout`` so that
many silent clients cannot pin the server.
"""

from __future__ import annotations

import logging
import socket
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from dfget.listener import listen
from dfget.protocol import decimal, parse_raw_query

log = logging.getLogger("dfget.http")

TEXT = "application/octet-stream"
JSON = "application/json"


class Server(ThreadingHTTPServer):
    """Serves on ``listener`` (e.g. inherited from the process that started us), or binds
    ``address``."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        listener: socket.socket | None = None,
    ) -> None:
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

    def parse_request(self) -> bool:
        """The request line and headers, then strict framing: a request whose end is not
        beyond doubt is answered 400 and the connection closed, so no byte of it can be
        read as the next request (request smuggling)."""
        if not super().parse_request():
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

    def start_response(self, status: int, content_length: int, content_type: str = TEXT) -> None:
        self.send_response_only(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Date", formatdate(usegmt=True))
        self.send_header("Content-Length", str(content_length))
        self.end_headers()

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
        return self.rfile.read(length)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)


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


def make_server(host: str, port: int, handler: type[BaseHTTPRequestHandler]) -> Server:
    """Bind a server; ``host`` may be an IPv4 or IPv6 literal, "" means all interfaces."""
    return Server((host.strip("[]") or "", port), handler)
