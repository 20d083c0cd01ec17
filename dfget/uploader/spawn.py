"""Find the peer server of a work home, or start one (spec §4.1), for the downloader.

One peer server serves every download of a work home. The port recorded in the meta file is
reused when the server there answers ``/check/``; otherwise, under an exclusive lock in the meta
directory (so two concurrent dfget runs never start two servers), the check is repeated and a
new server is started fully detached: its own session, no inherited descriptors, reaped by a
thread if it exits while we still run. It outlives the download on purpose.
"""

from __future__ import annotations

import logging
import os
import selectors
import subprocess
import sys
import threading
import time
from pathlib import Path

import dfget
from dfget.units import format_duration
from dfget.uploader import client, meta

log = logging.getLogger("dfget.uploader.spawn")

START_TIMEOUT = (
    15.0  # for the new server's announcement line (a loaded host is slow to start Python)
)
LOCK_TIMEOUT = START_TIMEOUT + 5.0  # another dfget may be starting one right now
MAX_LINE = 256


def ensure_server(
    home: Path,
    *,
    ip: str,
    port: int,
    expiretime: float,
    alivetime: float,
    totallimit: int,
    verbose: bool,
    task_file_name: str,
) -> int | None:
    """The port of a peer server that has registered ``task_file_name``, or None (logged)
    when none could be found or started; the download then goes on without serving."""
    home = home.absolute()  # the server runs from "/"
    meta_dir = home / "meta"
    meta_file = meta_dir / "host.meta"
    data_dir = home / "data"

    def running() -> int | None:
        known = meta.read_port(meta_file)
        if known and client.check(ip, known, task_file_name, data_dir, totallimit):
            return known
        return None

    if (found := running()) is not None:
        return found
    args = [
        sys.executable, "-m", "dfget", "server",
        "--ip", ip,
        "--port", str(port),
        "--meta", str(meta_file),
        "--data", str(data_dir),
        "--home", str(home),
        "--expiretime", format_duration(expiretime),
        "--alivetime", format_duration(alivetime),
        "--totallimit", str(totallimit),
    ]  # fmt: skip
    if verbose:
        args.append("--verbose")
    try:
        with meta.lock(meta_dir, timeout=LOCK_TIMEOUT):
            if (found := running()) is not None:
                return found
            started = _start(args)
            if started is None:
                return None
            if client.check(ip, started, task_file_name, data_dir, totallimit):
                log.info("started peer server on port %d", started)
                return started
            log.warning("the new peer server on port %d does not answer /check/", started)
    except OSError as exc:
        log.warning("cannot start the peer server: %s", exc)
    return None


def _start(args: list[str]) -> int | None:
    """Spawn the server and read its announced port; None (logged) if it does not announce."""
    package_root = str(Path(dfget.__file__).resolve().parent.parent)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        close_fds=True,
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
    if line.startswith(prefix) and token.isdigit() and 0 < int(token) < 65536:
        return int(token)
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
