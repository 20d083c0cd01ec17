"""A task a peer server serves: its name, its service file ``<data dir>/<name>.service`` and
the fingerprint that pins the verified bytes of a finished one; opening, recognising and
deleting its files."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote_to_bytes

from dfget.errors import Refused
from dfget.uploader.records import RECORD_SUFFIX

log = logging.getLogger(__name__)

SERVICE_SUFFIX = ".service"
MAX_NAME_BYTES = 240  # a file name is at most 255 bytes, ".service" included
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def task_name(raw: str) -> str | None:
    """The task file name from a URL path segment, or None if it could name anything but a
    plain file in the data dir (separators, NUL, dot names, also when percent-encoded).

    ``raw`` is the request line as http.server decoded it (latin-1); Go sends non-ASCII
    names as raw UTF-8 bytes, our client percent-encodes them: both decode to the same name.
    """
    try:
        name = unquote_to_bytes(raw.encode("latin-1")).decode("utf-8")
    except UnicodeError:
        return None
    if name in ("", ".", "..") or len(name.encode()) > MAX_NAME_BYTES:
        return None
    if any(char in name for char in "/\\\x00"):
        return None
    return name


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What identifies the exact bytes of a file without reading them.

    The change time is there because nobody can set it: a write followed by ``touch -r``
    (or ``cp -p`` onto the output) restores size and mtime, never ctime. Deleting or linking
    the output changes it too: such a file is proved again before it is served on.
    """

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int

    @classmethod
    def of(cls, st: os.stat_result) -> Fingerprint:
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


@dataclass(slots=True)
class ServedTask:
    name: str
    data_dir: Path  # resolved when registered
    registered: float  # wall-clock times, comparable with file mtimes
    last_access: float
    finished: bool = False
    task_id: str = ""
    cid: str = ""
    supernode: str = ""
    fingerprint: Fingerprint | None = None  # finished: the verified file
    requested_rate: int = 0
    observed: Fingerprint | None = None  # unfinished: the file as last seen by the collector
    observed_at: float = 0.0
    recorded_use: float = 0.0  # the last use its restart record holds (0: no record yet)

    @property
    def path(self) -> Path:
        return self.data_dir / (self.name + SERVICE_SUFFIX)


class Unservable(Refused):
    """A piece request that must be refused with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def owner(entry: str) -> str | None:
    """The task name a service file or restart record belongs to; None for other entries."""
    for suffix in (SERVICE_SUFFIX, RECORD_SUFFIX):
        if entry.endswith(suffix) and not entry.startswith("."):
            return entry.removesuffix(suffix)
    return None


def opened_inside(fd: int, data_dir: Path) -> bool:
    """Whether an open descriptor really is a file directly inside ``data_dir``: guards
    against a data dir that was swapped for a symlink after registration."""
    try:
        real = Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return True  # no /proc: O_NOFOLLOW and the name checks are all we have
    return real.parent == data_dir


def unlink_task_files(task: ServedTask, *suffixes: str) -> None:
    """Unlink only these names of the task inside the data dir, never what they may point to;
    the user's output may be a hard link of the service file and survives."""
    try:
        dir_fd = os.open(task.data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    try:
        for suffix in suffixes:
            try:
                os.unlink(task.name + suffix, dir_fd=dir_fd)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot delete %s%s: %s", task.name, suffix, exc)
    finally:
        os.close(dir_fd)
