"""The compact Dragonfly v1 compatible supernode: scheduler and CDN in one process.

``run`` binds the API port and the download port, starts the garbage collector and blocks until
SIGTERM or SIGINT, then shuts down cleanly (exit code 0).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

from dfget.net.server import Server, make_server
from dfget.supernode.api import make_api_handler
from dfget.supernode.fileserver import make_file_handler
from dfget.supernode.gc import Collector
from dfget.supernode.options import SupernodeOptions
from dfget.supernode.scheduler import Scheduler, SchedulerFactory
from dfget.supernode.service import Supernode

log = logging.getLogger(__name__)


def run(options: SupernodeOptions, scheduler_factory: SchedulerFactory = Scheduler) -> int:
    logging.basicConfig(
        level=logging.DEBUG if options.verbose else logging.INFO,
        format="%(asctime)s %(levelname).4s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    service = Supernode(options, scheduler_factory=scheduler_factory)
    (service.repo / "download").mkdir(parents=True, exist_ok=True)
    shared_port = options.download_port == options.port
    host = options.listen_ip
    try:
        limit = options.max_connections
        api = make_api_handler(service, shared_port)
        servers = [make_server(host, options.port, api, limit)]
        if not shared_port:
            file_handler = make_file_handler(service.repo)
            servers.append(make_server(host, options.download_port, file_handler, limit))
    except OSError as exc:
        log.error("cannot listen on %s: %s", options.listen_ip, exc)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    threads = [_serve(server) for server in servers]
    collector = Collector(service, options.task_gc_interval)
    collector.start()
    log.info(
        "supernode listening on %s:%d (download port %d, cdn pattern %s)",
        options.listen_ip,
        options.port,
        options.download_port,
        options.cdn_pattern,
    )
    stop.wait()
    log.info("supernode shutting down")
    collector.stop()
    service.stop()
    for server in servers:
        server.shutdown()
        server.server_close()
    for thread in threads:
        thread.join(timeout=5)
    return 0


def _serve(server: Server) -> threading.Thread:
    # A short poll interval keeps shutdown (SIGTERM to exit) well under a second.
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), name="http", daemon=True)
    thread.start()
    return thread
