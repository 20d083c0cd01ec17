"""A finished file proved block by block against its restart record: the record written while
the file still has its pinned fingerprint, and the proof that lets a file be served again after
a restart or after its output link changed."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable

from dfget.errors import DfgetError
from dfget.uploader import records
from dfget.uploader.records import Record
from dfget.uploader.served_task import OPEN_FLAGS, Fingerprint, ServedTask

log = logging.getLogger(__name__)


def record(task: ServedTask) -> bool:
    """Write the restart record of a finished task: an xxh3 of each block, taken while the
    file still has the fingerprint pinned at finish. False (logged) when it cannot."""
    name = task.name
    try:
        fd = os.open(task.path, OPEN_FLAGS)
    except OSError as exc:
        log.warning("cannot record %s for a restart: %s", name, exc)
        return False
    try:
        before = Fingerprint.of(os.fstat(fd))
        digests = records.block_digests(fd, before.size)
        after = Fingerprint.of(os.fstat(fd))
    except OSError as exc:
        log.warning("cannot record %s for a restart: %s", name, exc)
        return False
    finally:
        os.close(fd)
    if not before == after == task.fingerprint:
        log.warning("not recording %s: it changed after it was verified", name)
        return False
    kept = Record(before.size, digests, task.task_id, task.cid, task.supernode)
    try:
        records.write(task.data_dir, name, kept, task.last_access)
    except OSError as exc:
        log.warning("cannot record %s for a restart: %s", name, exc)
        return False
    task.recorded_use = task.last_access
    return True


class ProofStopped(DfgetError):
    """``stop()`` said to end a proof before its file was read whole."""


def prove(
    task: ServedTask, kept: Record, stop: Callable[[], bool] = lambda: False
) -> Fingerprint | None:
    """The fingerprint of the task's file if every block matches ``kept`` (and the file did
    not change while it was read), else None (at the first block that differs). ``stop()`` is
    asked after each block is read; ProofStopped when it says so."""
    try:
        fd = os.open(task.path, OPEN_FLAGS)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != kept.size:
            return None
        expected = iter(kept.digests)
        for digest in records.iter_block_digests(fd, kept.size):
            if stop():
                raise ProofStopped(task.name)
            if digest != next(expected, None):
                return None
        if next(expected, None) is not None:
            return None
        after = os.fstat(fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    return Fingerprint.of(after) if Fingerprint.of(st) == Fingerprint.of(after) else None


def reprove(task: ServedTask, pinned: Fingerprint, seen: Fingerprint) -> Fingerprint | None:
    """The new fingerprint of a finished file seen as ``seen`` instead of ``pinned``, if only
    its change time moved (the user deleted or linked its output, which is a hard link of it)
    and every block still matches the restart record; None otherwise. A new size, mtime or
    inode is final."""
    if (seen.size, seen.mtime_ns, seen.inode) != (pinned.size, pinned.mtime_ns, pinned.inode):
        return None
    found = records.read(task.data_dir, task.name)
    proved = prove(task, found[0]) if found is not None else None
    if proved is None or (proved.size, proved.mtime_ns, proved.inode) != (
        pinned.size,
        pinned.mtime_ns,
        pinned.inode,
    ):
        return None
    return proved
