"""The life of a ``dfget server`` process, done more carefully than v1.

Start: bind (adopting a live peer server on a fixed port), record the port in the meta file and
the pid beside it, then print the one line the spawning dfget waits for; files kept from an
earlier run are served again once every block matches its record. Run: the HTTP server on a
thread; the main thread collects garbage, keeps the cache within its budget and watches for
idleness and signals. The server stays up while it serves anything; with ``--alivetime`` set
it exits after that long without uploads anyway (v1's rule, as an upper bound). Signals are
blocked in every thread and taken with ``sigtimedwait``, so shutdown always runs in plain
code, never inside a handler that interrupted a lock. Stop: stop listening, reset the meta port
(if it is still ours), report served files down with a bounded wait, keep them for a restart.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading

from dfget import logs
from dfget.private import private_dir
from dfget.units import format_duration
from dfget.uploader import meta, ports, status
from dfget.uploader.options import ServerOptions
from dfget.uploader.report import DownReporter
from dfget.uploader.server import UploaderServer
from dfget.uploader.service import Uploader

log = logging.getLogger(__name__)

SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
REPORT_GRACE = 3.0  # seconds shutdown waits for service-down reports
MAX_GC_PERIOD = 15.0
MIN_GC_PERIOD = 0.2
IDLE_EXIT = 300.0  # with nothing to serve and no --alivetime, exit after this long idle


def serve(options: ServerOptions) -> int:
    logs.setup(options.home, options.verbose, "dfserver.log")
    try:
        private_dir(options.data_dir)
        private_dir(options.meta_file.parent)
    except OSError as exc:
        return _fail(f"cannot create the work directories: {exc}")
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        return _run(options)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)


def gc_period(expiretime: float | None) -> float:
    """How often expiry is checked: often enough for short expiry times, never busy."""
    if not expiretime or expiretime <= 0:
        return MAX_GC_PERIOD
    return max(MIN_GC_PERIOD, min(MAX_GC_PERIOD, expiretime / 4))


def _run(options: ServerOptions) -> int:
    reporter = DownReporter()
    uploader = Uploader(options, reporter.submit)
    host = options.ip.strip("[]")
    server: UploaderServer | None
    try:
        if options.listen_fd is not None:
            listener = _inherited_listener(options.listen_fd)
            server, port = UploaderServer((host, 0), uploader, listener), listener.getsockname()[1]
        else:
            server, port = ports.bind(
                host, options.port, lambda p: UploaderServer((host, p), uploader)
            )
    except OSError as exc:
        return _fail(f"cannot listen on {options.ip or '*'}: {exc}")
    if server is None:
        _announce(port)
        return 0
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.25}, name="http", daemon=True
    ).start()
    meta_dir = options.meta_file.parent
    try:
        meta.write_port(options.meta_file, port)
        meta.write_pid(meta_dir)
    except OSError as exc:
        log.error("cannot record the port in %s: %s", options.meta_file, exc)
    log.info(
        "peer server %s listening on %s:%d, data %s, cache %s, expire %s, alive %s",
        os.getpid(),
        host or "*",
        port,
        uploader.data_dir,
        options.policy.describe(),
        _bound(options.expiretime),
        _bound(options.alivetime, "while serving"),
    )
    _announce(port)
    uploader.port, uploader.status_dir = port, meta_dir
    restored, dropped = uploader.store.restore(stop=_stop_signal_pending)
    if restored or dropped:
        log.info("kept files: %d served again, %d could not be proved and were deleted",
                 restored, dropped)  # fmt: skip
    log.info("shutting down: %s", wait_for_end(uploader, options))
    # Stop listening before giving up the meta file: a dfget that still finds our port there
    # must fail its /check/ and start a new server, not register with one about to exit.
    server.shutdown()
    server.server_close()
    meta.clear_port(options.meta_file, port)
    uploader.store.release_finished()
    (meta_dir / status.STATUS_FILE).unlink(missing_ok=True)
    reporter.close(REPORT_GRACE)
    meta.remove_pid(meta_dir)
    log.info("peer server stopped")
    return 0


def _stop_signal_pending() -> bool:
    """A stop signal is waiting (they are blocked in every thread and taken by the main
    loop): long work before the loop, like proving kept files, ends early for it."""
    return bool(signal.sigpending() & SIGNALS)


def exit_reason(uploader: Uploader, options: ServerOptions) -> str | None:
    """Why the server should exit now, or None. With ``--alivetime`` (> 0): that long without
    upload activity. Without: never while it serves a file, else after IDLE_EXIT idle."""
    idle = uploader.idle_for()
    if options.alivetime is not None:
        if 0 < options.alivetime <= idle:
            return f"no upload activity for {format_duration(options.alivetime)}"
        return None
    if idle >= IDLE_EXIT and not uploader.store.tasks():
        return f"nothing to serve for {format_duration(IDLE_EXIT)}"
    return None


def wait_for_end(uploader: Uploader, options: ServerOptions) -> str:
    """Run the housekeeping periodically until a signal arrives or :func:`exit_reason`
    says so; returns why it ended."""
    period = gc_period(options.expiretime)
    clock = uploader.clock
    next_gc = 0.0
    # A stop that came during start-up (it may have cut the restart proof short) ends the
    # server before any housekeeping: the orphan sweep would take the kept files the proof did
    # not reach for strays.
    info = signal.sigtimedwait(SIGNALS, 0)
    if info is not None:
        return f"received {signal.Signals(info.si_signo).name}"
    while True:
        now = clock.monotonic()
        if now >= next_gc:
            try:
                uploader.housekeep()
            except Exception:  # a collector bug must not take the uploads down
                log.exception("garbage collection failed")
            next_gc = now + period
        reason = exit_reason(uploader, options)
        if reason is not None:
            return reason
        wait = min(next_gc - clock.monotonic(), idle_exit_in(uploader, options))
        info = signal.sigtimedwait(SIGNALS, max(wait, 0.01))
        if info is not None:
            return f"received {signal.Signals(info.si_signo).name}"


def idle_exit_in(uploader: Uploader, options: ServerOptions) -> float:
    """How long the main loop may sleep before :func:`exit_reason` could say otherwise; never
    less than MIN_GC_PERIOD (a server that serves something and has been idle for long must
    not spin)."""
    if options.alivetime is None:
        if uploader.store.tasks():
            return MAX_GC_PERIOD  # serving: only the next pass can change that
        limit = IDLE_EXIT
    else:
        limit = options.alivetime
    if limit <= 0:
        return MAX_GC_PERIOD
    return max(limit - uploader.idle_for(), MIN_GC_PERIOD)


def _bound(seconds: float | None, unset: str = "by the cache budget") -> str:
    return format_duration(seconds) if seconds else ("never" if seconds == 0 else unset)


def _inherited_listener(fd: int) -> socket.socket:
    listener = socket.socket(fileno=fd)
    if not listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        listener.detach()
        raise OSError(f"descriptor {fd} is not a listening socket")
    return listener


def _announce(port: int) -> None:
    """Print the line the spawning dfget reads, then detach stdout: the reader closes its pipe
    after one line, and a later write there must not fail the server."""
    try:
        sys.stdout.write(meta.ANNOUNCEMENT.format(port=port) + "\n")
        sys.stdout.flush()
    except OSError:
        pass
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _fail(message: str) -> int:
    log.error(message)
    print(f"dfget server: {message}", file=sys.stderr)
    return 1
