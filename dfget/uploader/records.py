"""What a peer server needs to serve a file again after it restarts: ``<name>.verified``.

Written beside ``<name>.service`` once the download finished (the download verified the
bytes): the file's size, an xxh3 of every 4 MiB block, and the task, cid and supernode the
service-down report needs. Its mtime is the file's last use, so the order in which files are
dropped survives a restart. A restarted server re-hashes the file and serves it only if every
block still matches; anything it cannot prove is deleted, never served.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import xxhash

log = logging.getLogger(__name__)

RECORD_SUFFIX = ".verified"
BLOCK = 4 * 1024 * 1024
MAX_RECORD_BYTES = 4 * 1024 * 1024
VERSION = 1


@dataclass(frozen=True, slots=True)
class Record:
    size: int
    digests: tuple[str, ...]
    task_id: str = ""
    cid: str = ""
    supernode: str = ""

    def to_json(self) -> str:
        fields = asdict(self)
        fields["digests"] = list(self.digests)
        return json.dumps({"version": VERSION, "block": BLOCK, **fields}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Record | None:
        try:
            data = json.loads(text)
            if data.get("version") != VERSION or data.get("block") != BLOCK:
                return None
            record = cls(
                int(data["size"]),
                tuple(str(d) for d in data["digests"]),
                str(data.get("task_id", "")),
                str(data.get("cid", "")),
                str(data.get("supernode", "")),
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
        blocks = -(-record.size // BLOCK)
        return record if record.size >= 0 and len(record.digests) == blocks else None


def block_digests(fd: int, size: int) -> tuple[str, ...]:
    """The xxh3 of every block of the first ``size`` bytes of ``fd``; OSError if it is shorter."""
    return tuple(iter_block_digests(fd, size))


def iter_block_digests(fd: int, size: int) -> Iterator[str]:
    """:func:`block_digests` one block at a time."""
    view = memoryview(bytearray(BLOCK))
    for offset in range(0, size, BLOCK):
        want = min(BLOCK, size - offset)
        got = os.preadv(fd, [view[:want]], offset)
        if got != want:
            raise OSError(f"file ended at {offset + got} of {size} bytes")
        yield xxhash.xxh3_64_hexdigest(view[:want])


def record_path(data_dir: Path, name: str) -> Path:
    return data_dir / (name + RECORD_SUFFIX)


def write(data_dir: Path, name: str, record: Record, last_use: float) -> None:
    """Write the record atomically (0600), its mtime set to ``last_use``."""
    path = record_path(data_dir, name)
    temp = data_dir / f".record.{os.getpid()}.{threading.get_ident()}.tmp"  # short: any name fits
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temp, flags, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(record.to_json())
        os.utime(temp, (last_use, last_use), follow_symlinks=False)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def read(data_dir: Path, name: str) -> tuple[Record, float] | None:
    """The record of ``name`` and its last use; None when missing or not one of ours."""
    path = record_path(data_dir, name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_RECORD_BYTES:
            return None
        record = Record.from_json(fh.read().decode(errors="replace"))
    return (record, st.st_mtime) if record is not None else None


def touch(data_dir: Path, name: str, last_use: float) -> None:
    """Record a later last use (the record's mtime)."""
    with contextlib.suppress(OSError):
        os.utime(record_path(data_dir, name), (last_use, last_use), follow_symlinks=False)


def recorded_names(data_dir: Path) -> list[str]:
    try:
        entries = os.listdir(data_dir)
    except OSError:
        return []
    return sorted(
        entry.removesuffix(RECORD_SUFFIX)
        for entry in entries
        if entry.endswith(RECORD_SUFFIX) and not entry.startswith(".")
    )
