"""Find the peer server of a work home, or start one, for the downloader.

One peer server serves every download of a work home. The port recorded in the meta file is
reused when the server there answers ``/check/``; otherwise, under an exclusive lock in the meta
directory (so two concurrent dfget runs never start two servers), the check is repeated, the
listening socket is bound here and a new server is started on it, fully detached: its own
session, no other inherited descriptors, reaped by a thread if it exits while we still run. It
outlives the download on purpose.

Binding here means the port is known before the new Python process is up, so the download
registers with the supernode while the server starts (~0.1 s saved per download); connections
that arrive meanwhile wait in the socket's backlog. All of it runs on a thread of its own:
:meth:`ServerStart.port` waits for the port, :meth:`ServerStart.ready` for the server.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import dfget
from dfget.net.listener import listen
from dfget.protocol import peer_server
from dfget.protocol.wire import decimal
from dfget.units import format_duration
from dfget.uploader import meta, ports
from dfget.uploader.cache import Amount

log = logging.getLogger(__name__)

START_TIMEOUT = (
    15.0  # for the new server's announcement line (a loaded host is slow to start Python)
)
LOCK_TIMEOUT = START_TIMEOUT + 5.0  # another dfget may be starting one right now
MAX_LINE = 256


class ServerStart:
    """Finding or starting the peer server that serves ``task_file_name``, in the background."""

    def __init__(
        self,
        home: Path,
        *,
        ip: str,
        port: int,
        task_file_name: str,
        totallimit: int = 0,
        verbose: bool = False,
        expiretime: float | None = None,
        alivetime: float | None = None,
        cache_budget: Amount | None = None,
        cache_min_free: Amount | None = None,
    ) -> None:
        home = home.absolute()  # the server runs from "/"
        self.ip = ip
        self.requested_port = port
        self.totallimit = totallimit
        self.task_file_name = task_file_name
        self.meta_dir = home / "meta"
        self.meta_file = self.meta_dir / "host.meta"
        self.data_dir = home / "data"
        self.args = [
            sys.executable, "-m", "dfget", "server",
            "--ip", ip,
            "--meta", str(self.meta_file),
            "--data", str(self.data_dir),
            "--home", str(home),
            "--totallimit", str(totallimit),
        ]  # fmt: skip
        # Only what the user set: the server's own defaults are the budget rule.
        for flag, value in (
            ("--expiretime", None if expiretime is None else format_duration(expiretime)),
            ("--alivetime", None if alivetime is None else format_duration(alivetime)),
            ("--cache-budget", None if cache_budget is None else str(cache_budget)),
            ("--cache-min-free", None if cache_min_free is None else str(cache_min_free)),
        ):
            if value is not None:
                self.args += [flag, value]
        if verbose:
            self.args.append("--verbose")
        self._port = 0
        self._ok = False
        self._port_known = threading.Event()
        self._done = threading.Event()
        threading.Thread(target=self._run, name="peer-server-start", daemon=True).start()

    def port(self) -> int:
        """The port the server listens on (or will, once started); 0 when there is none."""
        self._port_known.wait()
        return self._port

    def ready(self) -> bool:
        """Wait until the server answered ``/check/`` for our task; False (logged) when it
        could not be found or started: the download then goes on without serving."""
        self._done.wait()
        return self._ok

    def _run(self) -> None:
        try:
            self._ok = self._find_or_start()
        except Exception as exc:  # the download goes on without serving; a bug gets its trace
            log.warning(
                "cannot start the peer server: %s", exc, exc_info=not isinstance(exc, OSError)
            )
        finally:
            self._port_known.set()
            self._done.set()

    def _publish(self, port: int) -> None:
        self._port = port
        self._port_known.set()

    def _check(self, port: int) -> bool:
        return peer_server.check(self.ip, port, self.task_file_name, self.data_dir, self.totallimit)

    def _running(self, failed: int = 0) -> tuple[int | None, int]:
        """The recorded port if its server answers; and the recorded port itself. A port that
        ``failed`` already is not asked again (a stale port can take the whole timeout)."""
        known = meta.read_port(self.meta_file)
        if known and known != failed and self._check(known):
            return known, known
        return None, known

    def _find_or_start(self) -> bool:
        found, failed = self._running()
        if found is not None:
            self._publish(found)
            return True
        with meta.lock(self.meta_dir, timeout=LOCK_TIMEOUT):
            # Another dfget may have started a server while we waited for the lock.
            found, _ = self._running(failed)
            if found is not None:
                self._publish(found)
                return True
            host = self.ip.strip("[]")
            listener, port = self._bind(host, failed)
            self._publish(port)
            if listener is None:  # a peer server already listens on the fixed port: adopt it
                return self._check(port)
            with listener:
                started = _start([*self.args, "--listen-fd", str(listener.fileno())], listener)
            if started is None:
                return False
            if started != port:
                log.warning("the new peer server announced port %d, not %d", started, port)
                return False
            if self._check(port):
                log.info("started peer server on port %d", port)
                return True
            log.warning("the new peer server on port %d does not answer /check/", port)
            return False

    def _bind(self, host: str, recorded: int) -> tuple[socket.socket | None, int]:
        """Bind the requested port; without one, the recorded port of a server that is gone
        if it is free (after a crash the supernode still sends peers there, and the new server
        serves them the files it kept), else an automatic one."""
        if not self.requested_port and recorded:
            try:
                return listen(host, recorded), recorded
            except OSError:
                pass
        return ports.bind(host, self.requested_port, lambda p: listen(host, p))


def _secret_variable(name: str) -> bool:
    return name.upper().startswith("DFGET_HEADER_")


def _start(args: list[str], listener: socket.socket) -> int | None:
    """Spawn the server on ``listener`` and read its announced port; None (logged) if it does
    not announce."""
    package_root = str(Path(dfget.__file__).resolve().parent.parent)
    # The server outlives the download and never needs the user's headers: their secrets
    # (DFGET_HEADER_AUTHORIZATION, ...) stay out of its environment (/proc/<pid>/environ).
    env = {name: value for name, value in os.environ.items() if not _secret_variable(name)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        close_fds=True,
        pass_fds=(listener.fileno(),),
        start_new_session=True,
        cwd="/",
        env=env,
    )
    # Whoever outlives the other: if the server exits first it must not stay a zombie of ours.
    threading.Thread(target=proc.wait, name="peer-server-reaper", daemon=True).start()
    assert proc.stdout is not None
    try:
        line = _read_line(proc.stdout.fileno(), START_TIMEOUT)
    finally:
        proc.stdout.close()
    prefix = meta.ANNOUNCEMENT.format(port="")
    token = line.removeprefix(prefix).strip()
    port = decimal(token) if line.startswith(prefix) else None
    if port is not None and 0 < port < 65536:
        return port
    log.warning("the peer server did not announce its port (got %r)", line[:MAX_LINE])
    if proc.poll() is None:
        proc.terminate()
    return None


def _read_line(fd: int, timeout: float) -> str:
    """The first line written to ``fd``, waiting at most ``timeout`` seconds."""
    data = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while b"\n" not in data and len(data) < MAX_LINE:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                break
            chunk = os.read(fd, MAX_LINE - len(data))
            if not chunk:
                break
            data += chunk
    return data.split(b"\n", 1)[0].decode(errors="replace")
