"""Where a dfget and its peer server meet: the meta directory and the announcement line.

``host.meta`` holds ``{"servicePort":N}``: the port of the peer server that dfget runs reuse.
It is written atomically (temp file + rename) so a reader never sees half a file, and it is
reset to 0 on exit only while it still names the exiting server, so a server that exits late
cannot hide a newer one. ``server.pid`` lets tests and operators find the process. The lock
file serialises "check, else spawn" between concurrent dfget runs and the server's own reset.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from dfget.private import FILE_MODE, private_dir

# The one line a new server prints on stdout; the spawning dfget parses the port from it.
ANNOUNCEMENT = "dfget uploader server port is {port}"
PID_FILE = "server.pid"
LOCK_FILE = "server.lock"


def read_port(meta_file: Path) -> int:
    """The recorded service port; 0 when the file is missing, unreadable or malformed."""
    try:
        value = json.loads(meta_file.read_text()).get("servicePort", 0)
    except (OSError, ValueError, AttributeError):
        return 0
    return value if isinstance(value, int) and 0 < value < 65536 else 0


def write_port(meta_file: Path, port: int) -> None:
    """Record ``port`` atomically."""
    _write_atomically(meta_file, json.dumps({"servicePort": port}, separators=(",", ":")))


def clear_port(meta_file: Path, port: int) -> None:
    """Write port 0, but only if the file still names ``port`` (ours)."""
    with lock(meta_file.parent, timeout=2.0, required=False):
        if read_port(meta_file) == port:
            write_port(meta_file, 0)


def write_pid(meta_dir: Path) -> None:
    _write_atomically(meta_dir / PID_FILE, f"{os.getpid()}\n")


def remove_pid(meta_dir: Path) -> None:
    """Remove the pid file if it is ours; a newer server may have replaced it."""
    path = meta_dir / PID_FILE
    try:
        if path.read_text().strip() == str(os.getpid()):
            path.unlink()
    except OSError:
        pass


@contextlib.contextmanager
def lock(meta_dir: Path, *, timeout: float, required: bool = True) -> Iterator[bool]:
    """Hold the exclusive spawn lock of ``meta_dir`` (flock), waiting at most ``timeout`` s.

    Polls instead of blocking so that a stuck holder cannot hang dfget forever. Yields whether
    the lock is held; raises TimeoutError after ``timeout`` unless ``required`` is False (the
    caller then proceeds unlocked: a best-effort reset is better than none).
    """
    private_dir(meta_dir)
    fd = os.open(meta_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        deadline = time.monotonic() + timeout
        held = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
            if time.monotonic() >= deadline:
                if required:
                    raise TimeoutError(f"{meta_dir / LOCK_FILE} is held by another process")
                break
            time.sleep(0.02)
        yield held
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _write_atomically(path: Path, text: str) -> None:
    private_dir(path.parent)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
        with os.fdopen(fd, "w") as file:
            file.write(text)
        os.replace(temp, path)
    except OSError:
        temp.unlink(missing_ok=True)
        raise
