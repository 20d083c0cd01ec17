"""HTTP routes of the supernode API port: a thin router over :class:`Supernode`.

Every route is also reachable under a ``/v<digits and dots>`` prefix, as in the Go supernode.
When the download port is the API port (as in the transcript's source-pattern capture), the
cache files are served here too.
"""

from __future__ import annotations

import json
import logging
import platform
import re
from collections.abc import Callable

from dfget import PROTOCOL_VERSION, __version__
from dfget.net.server import Handler
from dfget.supernode.fileserver import serve_file
from dfget.supernode.replies import Reply, refuse
from dfget.supernode.service import Supernode

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20
"""Registration and metrics bodies are a few hundred bytes; anything above 1 MiB is refused."""
PLAIN = "text/plain; charset=utf-8"
PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"
_VERSION_PREFIX = re.compile(r"^/v[0-9.]+(?=/)")

Route = Callable[[Handler, bytes], Reply]


def _local_ip(handler: Handler) -> str:
    """The address the client reached us at (IPv4-mapped IPv6 shown as plain IPv4)."""
    address = str(handler.connection.getsockname()[0])
    return address.removeprefix("::ffff:")


def _version() -> Reply:
    info = {
        "version": PROTOCOL_VERSION,
        "implementation": f"dfget {__version__}",
        "python": platform.python_version(),
        "os": platform.system().lower(),
        "arch": platform.machine(),
    }
    return Reply(200, json.dumps(info).encode() + b"\n")


def routes(service: Supernode) -> dict[tuple[str, str], Route]:
    return {
        ("POST", "/peer/registry"): lambda handler, body: service.register(
            body, handler.header("Content-Type"), _local_ip(handler)
        ),
        ("GET", "/peer/task"): lambda handler, _: service.pull(handler.query),
        ("GET", "/peer/piece/suc"): lambda handler, _: service.piece_success(handler.query),
        ("GET", "/peer/piece/error"): lambda handler, _: service.piece_error(handler.query),
        ("GET", "/peer/service/down"): lambda handler, _: service.service_down(handler.query),
        ("POST", "/task/metrics"): lambda _, body: service.download_report(body),
        ("GET", "/_ping"): lambda *_: Reply(200, b"OK", PLAIN),
        ("GET", "/version"): lambda *_: _version(),
        ("GET", "/metrics"): lambda *_: Reply(
            200, service.metrics.render(service.gauges()).encode(), PROMETHEUS
        ),
    }


def make_api_handler(service: Supernode, serve_downloads: bool) -> type[Handler]:
    """The API handler class; ``serve_downloads`` also serves the repo (shared port)."""
    table = routes(service)

    class ApiHandler(Handler):
        def do_GET(self) -> None:
            self._dispatch()

        def do_POST(self) -> None:
            self._dispatch()

        def _dispatch(self) -> None:
            route = _VERSION_PREFIX.sub("", self.route, count=1)
            if serve_downloads and self.command == "GET" and route.startswith("/download/"):
                serve_file(self, service.repo, route)
                return
            target = table.get((self.command, route))
            if target is None:
                self.close_connection = True
                self.reply(404, "404 page not found", PLAIN)
                return
            body = b""
            if self.command == "POST":
                read = self.read_body(MAX_BODY)
                if read is None:
                    return
                body = read
            if route.startswith(("/peer/", "/task/")):
                service.metrics.inc("api_requests_total", route=route)
            try:
                reply = target(self, body)
            except Exception as exc:  # a bug must not kill the connection without an answer
                log.exception("%s %s failed", self.command, self.path)
                reply = refuse(f"internal error: {exc}")
            self.reply(reply.status, reply.body, reply.content_type)

    return ApiHandler
