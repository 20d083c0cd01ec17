"""Resuming interrupted downloads: partial data and a journal of what is complete, in the home.

``<home>/partial/<key>.data`` holds the bytes, ``<key>.json`` the source's identity (length,
ETag, Last-Modified) and every completed extent with its xxh3, so a re-run verifies what it
kept and fetches only the rest. The key is the task (blob digest or filtered URL) plus the
output path. The output directory never holds leftovers: partial state lives in the home only.
A running download holds ``<key>.lock`` (flock): a second dfget of the same file to the same
output does without resuming rather than share the record, and garbage collection passes by.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

from dfget.private import FILE_MODE, private_dir

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.5
VERIFY_CHUNK = 4 * 1024 * 1024


def digest_of(data: memoryview | bytes) -> str:
    return xxhash.xxh3_64_hexdigest(data)


def partial_dir(home: Path) -> Path:
    return home / "partial"


@dataclass
class Journal:
    """The record of one resumable download; thread-safe, flushed at most every 0.5 s."""

    record_path: Path
    partial_path: Path  # where the data of a failed attempt is kept
    data_path: Path  # where the data is now (the peer server's file while serving)
    length: int | None = None
    etag: str = ""
    last_modified: str = ""
    extents: list[tuple[int, int, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _flushed: float = 0.0
    _claim: int = -1  # the descriptor holding the flock of the lock file

    @property
    def lock_path(self) -> Path:
        return self.record_path.with_suffix(".lock")

    def claim(self) -> bool:
        """Own this record until :meth:`release`; False when another running dfget owns it."""
        try:
            private_dir(self.lock_path.parent)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        except OSError as exc:
            log.warning("cannot create %s: %s", self.lock_path, exc)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # The owner before us may have removed the file after we opened it.
            if os.fstat(fd).st_ino == os.stat(self.lock_path).st_ino:
                self._claim = fd
                return True
        except OSError:
            pass
        os.close(fd)
        return False

    def release(self) -> None:
        if self._claim >= 0:
            os.close(self._claim)
            self._claim = -1

    @classmethod
    def for_download(cls, home: Path, task_key: str, output: Path) -> Journal:
        key = hashlib.sha256(f"{task_key}\0{output}".encode()).hexdigest()[:32]
        directory = partial_dir(home)
        partial = directory / f"{key}.data"
        return cls(directory / f"{key}.json", partial, partial)

    def load(self) -> bool:
        """Read a previous attempt's record; False when there is none (or it is unusable)."""
        try:
            record = json.loads(self.record_path.read_text())
            home = self.record_path.parent.parent.resolve()
            recorded = Path(record["data"]).resolve()
            adopted = recorded.is_file() and recorded.is_relative_to(home)
            if not adopted and not self.partial_path.is_file():
                return False
            if record.get("length") is None:
                return False  # interrupted before the source was known: nothing to trust
            extents = [(int(s), int(e), str(d)) for s, e, d in record["extents"]]
        except (OSError, ValueError, KeyError, TypeError):
            return False
        # Only a usable record is taken in: a download starting over must not describe its
        # bytes with what a broken record said.
        if adopted:
            self.data_path = recorded  # a SIGKILLed download leaves it where it was
        self.length = record["length"]
        self.etag = record.get("etag", "")
        self.last_modified = record.get("last_modified", "")
        self.extents = extents
        return True

    def same_source(self, length: int | None, etag: str, last_modified: str) -> bool:
        """False when the source changed since the partial data was fetched."""
        if length is not None and self.length is not None and length != self.length:
            return False
        if etag and self.etag and etag != self.etag:
            return False
        return not (last_modified and self.last_modified and last_modified != self.last_modified)

    def describe_source(self, length: int | None, etag: str = "", last_modified: str = "") -> None:
        with self._lock:
            self.length = length if length is not None else self.length
            self.etag = etag or self.etag
            self.last_modified = last_modified or self.last_modified

    def add(self, start: int, end: int, digest: str) -> None:
        with self._lock:
            self.extents.append((start, end, digest))
            due = time.monotonic() - self._flushed >= FLUSH_INTERVAL
        if due:
            self.flush()

    def forget(self) -> None:
        """Drop all extents (the source changed): the data will be fetched again."""
        with self._lock:
            self.extents.clear()

    def flush(self) -> None:
        with self._lock:
            record = {
                "length": self.length,
                "etag": self.etag,
                "last_modified": self.last_modified,
                "data": str(self.data_path),
                "extents": self.extents,
            }
            self._flushed = time.monotonic()
            try:
                private_dir(self.record_path.parent)
                temp = self.record_path.with_suffix(".tmp")
                flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
                with os.fdopen(os.open(temp, flags, FILE_MODE), "w") as file:
                    file.write(json.dumps(record, separators=(",", ":")))
                os.replace(temp, self.record_path)
            except OSError as exc:
                log.warning("cannot write the resume record %s: %s", self.record_path, exc)

    def verified(self, fd: int) -> list[tuple[int, int]]:
        """The recorded extents whose bytes in ``fd`` still match their xxh3."""
        good: list[tuple[int, int]] = []
        bad = 0
        for start, end, digest in self.extents:
            try:
                data = os.pread(fd, end - start, start)
            except OSError:
                data = b""
            if len(data) == end - start and digest_of(data) == digest:
                good.append((start, end))
            else:
                bad += 1
        if bad:
            log.info("%d stored extent(s) failed their xxh3 check and will be fetched again", bad)
        with self._lock:
            kept = set(good)
            self.extents = [x for x in self.extents if (x[0], x[1]) in kept]
        return good

    def discard(self) -> None:
        """Forget the record and kept partial data (after success, or a wrong download)."""
        for path in (self.record_path, self.partial_path, self.lock_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self.release()


def collect_garbage(home: Path, max_age: float, budget: int, keep: Path | None = None) -> None:
    """Delete partial downloads older than ``max_age`` seconds, then the oldest ones until the
    partial data fits in ``budget`` bytes. ``keep`` (the current download's record) stays."""
    directory = partial_dir(home)
    if not directory.is_dir():
        return
    entries = []
    now = time.time()
    for record in directory.glob("*.json"):
        if record == keep or _in_use(record):
            continue
        data = record.with_suffix(".data")
        try:
            stamp = max(record.stat().st_mtime, data.stat().st_mtime if data.exists() else 0)
            size = data.stat().st_blocks * 512 if data.exists() else 0
        except OSError:
            continue
        entries.append((stamp, size, record, data))
    entries.sort()
    total = sum(size for _, size, _, _ in entries)
    for stamp, size, record, data in entries:
        if now - stamp > max_age or total > budget:
            log.info("removing partial download %s (age %.0fs)", data.name, now - stamp)
            for path in (record, data, record.with_suffix(".lock")):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            total -= size


def _in_use(record: Path) -> bool:
    """Whether a running dfget holds the lock of this record."""
    try:
        fd = os.open(record.with_suffix(".lock"), os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False
