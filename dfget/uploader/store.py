"""The tasks a peer server serves: which files, whether they may still be trusted, when to stop.

A task is registered by ``/check/`` (unfinished: the downloader is writing pieces into the
service file and may hand them out as soon as they are reported) and finished by
``/client/finish``, which pins the file's fingerprint (size, mtime, change time, inode). A
finished file that no longer matches its fingerprint was modified after it was verified (the
user's output may be a hard link of it), so it is dropped rather than served; when only its
change time moved (the user deleted or linked the output), it is proved block by block against
its restart record instead, and served on if every block matches. Only
``<data dir>/<name>.service`` of a registered name is ever opened, without following symlinks,
and only that path is ever deleted.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

from dfget.uploader import proof, records
from dfget.uploader.cache import CachedFile, CachePolicy, evictions
from dfget.uploader.pending import PENDING_SUFFIX
from dfget.uploader.records import RECORD_SUFFIX
from dfget.uploader.served_task import (
    OPEN_FLAGS,
    SERVICE_SUFFIX,
    Fingerprint,
    ServedTask,
    Unservable,
    opened_inside,
    owner,
    task_name,
    unlink_task_files,
)

log = logging.getLogger(__name__)

MAX_TASKS = 10_000


class TaskStore:
    """Thread-safe registry of tasks; ``on_drop`` is told about every finished task dropped
    (the supernode must hear that this peer no longer holds it).

    Finished files stay while they fit ``policy`` (least recently used dropped first); with an
    ``expiretime`` (> 0) also at most that long after their last use. ``clock`` gives wall-clock
    seconds (tests move it).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        expiretime: float | None,
        stale_after: float,
        on_drop: Callable[[ServedTask], None],
        policy: CachePolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.expiretime = expiretime or 0.0
        self.stale_after = stale_after
        self.policy = policy or CachePolicy()
        self.clock = clock
        self._on_drop = on_drop
        self._tasks: dict[str, ServedTask] = {}
        self._lock = threading.Lock()
        self._budget_lock = threading.Lock()

    def get(self, name: str) -> ServedTask | None:
        return self._tasks.get(name)

    def register(self, name: str, data_dir: Path | None = None) -> bool:
        """Register an unfinished task (``/check/``); False when the registry is full.

        A known task keeps its state: a second ``/check/`` must not turn a finished task back
        into one that is served without its fingerprint.
        """
        with self._lock:
            return self._register_locked(name, data_dir) is not None

    def finish(self, name: str, task_id: str, cid: str, supernode: str) -> bool:
        """Mark a task finished and pin its file's fingerprint; False if there is no file
        (the task is then dropped by the next collection). :meth:`record` then makes it
        survive a restart."""
        now = self.clock()
        with self._lock:
            task = self._register_locked(name, None)
            if task is None:
                return False
            try:
                st = os.stat(task.path, follow_symlinks=False)
                fingerprint = Fingerprint.of(st) if stat.S_ISREG(st.st_mode) else None
            except OSError:
                fingerprint = None
            # Pinned before the task counts as finished: the collection pass reads tasks
            # without the lock, and a finished task without its fingerprint looks changed.
            task.fingerprint = fingerprint
            task.task_id, task.cid, task.supernode = task_id, cid, supernode
            task.requested_rate = 0
            task.last_access = now
            task.finished = True
            unlink_task_files(task, PENDING_SUFFIX)  # every piece is stored now
            return fingerprint is not None

    def request_rate(self, name: str, rate: int) -> int:
        """Record an unfinished task's requested rate; returns the sum over unfinished tasks."""
        with self._lock:
            task = self._tasks.get(name)
            if task is not None and not task.finished:
                task.requested_rate = max(rate, 0)
            return sum(t.requested_rate for t in self._tasks.values() if not t.finished)

    def open(self, name: str) -> tuple[int, int]:
        """Open a registered task's service file for serving: ``(fd, size)``; the caller closes.

        Raises Unservable (404/403) for unknown tasks, missing files, anything that is not a
        regular file inside the data dir, and finished files that changed since verification.
        """
        task = self._tasks.get(name)
        if task is None:
            raise Unservable(404, "task not found")
        finished = task.finished  # before the stat: then a finished task's pin predates it
        try:
            fd = os.open(task.path, OPEN_FLAGS)
        except FileNotFoundError:
            self.drop(task, "its service file is gone", unlink=False)
            raise Unservable(404, "file not found") from None
        except PermissionError:
            raise Unservable(403, "permission denied") from None
        except OSError:  # ELOOP: a symlink where the service file should be
            raise Unservable(404, "file not found") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or not opened_inside(fd, task.data_dir):
                raise Unservable(404, "file not found")
            if finished and not self._still_verified(task, Fingerprint.of(st)):
                self.drop(task, "its service file changed after it was verified")
                raise Unservable(404, "file not found")
            with self._lock:
                task.last_access = self.clock()
        except BaseException:
            os.close(fd)
            raise
        return fd, st.st_size

    def collect(self) -> None:
        """One garbage-collection pass: expire finished files, forget vanished ones, drop
        abandoned downloads and stale orphan files, keep the cache within its budget, and
        write last uses into the restart records."""
        now = self.clock()
        with self._lock:
            tasks = list(self._tasks.values())
        for task in tasks:
            verdict = self._inspect(task, now)
            if verdict is not None:
                reason, unlink = verdict
                self.drop(task, reason, unlink=unlink)
        self._sweep_orphans(now)
        self.enforce_budget()
        self._save_last_uses()

    def enforce_budget(self) -> None:
        """Drop least recently used finished files while the budget or free space needs it
        (one pass at a time: two would both read the free space before either deletes)."""
        with self._budget_lock:
            self._enforce_budget()

    def _enforce_budget(self) -> None:
        try:
            limits = self.policy.limits(self.data_dir)
        except OSError as exc:
            log.warning("cannot read the free space of %s: %s", self.data_dir, exc)
            return
        tasks, files = {}, []
        for task in self.finished_tasks():
            try:
                st = os.stat(task.path, follow_symlinks=False)
            except OSError:
                continue  # the next collection forgets it
            tasks[task.name] = task
            files.append(CachedFile(task.name, st.st_size, task.last_access, st.st_nlink == 1))
        for victim, why in evictions(files, limits):
            self.drop(tasks[victim.name], why)

    def finished_tasks(self) -> list[ServedTask]:
        """The finished tasks, least recently used first."""
        with self._lock:
            tasks = [task for task in self._tasks.values() if task.finished]
        return sorted(tasks, key=lambda task: (task.last_access, task.name))

    def tasks(self) -> list[ServedTask]:
        with self._lock:
            return list(self._tasks.values())

    def record(self, name: str) -> bool:
        """Write the restart record of a finished task (see :func:`proof.record`)."""
        task = self._tasks.get(name)
        if task is None or task.fingerprint is None:
            return False
        return proof.record(task)

    def restore(self, stop: Callable[[], bool] = lambda: False) -> tuple[int, int]:
        """Serve again the recorded files of the data dir whose every block still matches
        its xxh3 (after a restart); delete the others and report them down. Returns how many
        were restored and how many dropped. ``stop()`` is asked before each file: the files
        not proved then keep their records and are proved at the next start (it is asked
        between blocks too, so a large file does not hold a stop up)."""
        restored = dropped = 0
        stopped_at = ""
        for name in records.recorded_names(self.data_dir):
            if task_name(name) is None or name in self._tasks:
                continue
            if stop():
                stopped_at = name
                break
            found = records.read(self.data_dir, name)
            task = ServedTask(name, self.data_dir, registered=0.0, last_access=0.0, finished=True)
            if found is not None:
                record, last_use = found
                task.task_id, task.cid, task.supernode = (
                    record.task_id,
                    record.cid,
                    record.supernode,
                )
                task.last_access = task.recorded_use = last_use
                try:
                    task.fingerprint = proof.prove(task, record, stop)
                except proof.ProofStopped:
                    stopped_at = name
                    break
            with self._lock:
                self._tasks[name] = task
            if task.fingerprint is None:
                self.drop(task, "its restart record does not match the file")
                dropped += 1
            else:
                log.info("serving %s again: every block matches its record", name)
                restored += 1
        if stopped_at:
            log.info("restart proof stopped at %s: the rest waits for the next start", stopped_at)
        return restored, dropped

    def release_finished(self) -> None:
        """Stop serving every finished task (shutdown): the supernode hears it, the files and
        their records stay for a restart."""
        for task in self.finished_tasks():
            with self._lock:
                if self._tasks.pop(task.name, None) is not task:
                    continue
            records.touch(task.data_dir, task.name, task.last_access)
            log.info(
                "stopped serving %s: the server is shutting down (kept for a restart)", task.name
            )
            self._on_drop(task)

    def drop(self, task: ServedTask, reason: str, *, unlink: bool = True) -> None:
        with self._lock:
            if self._tasks.get(task.name) is not task:
                return  # dropped concurrently
            del self._tasks[task.name]
        suffixes = (SERVICE_SUFFIX,) if unlink else ()
        unlink_task_files(task, *suffixes, RECORD_SUFFIX, PENDING_SUFFIX)
        log.info("stopped serving %s: %s", task.name, reason)
        if task.finished:
            self._on_drop(task)

    def _still_verified(self, task: ServedTask, seen: Fingerprint) -> bool:
        """Whether a finished file is still the verified bytes. Only a new change time is
        forgiven, once every block has been proved against the restart record again (see
        :func:`proof.reprove`); the new fingerprint is then pinned."""
        pinned = task.fingerprint
        if pinned is None or seen == pinned:
            return pinned is not None
        proved = proof.reprove(task, pinned, seen)
        if proved is None:
            return False
        with self._lock:
            task.fingerprint = proved
        log.info("%s: its output link changed; every block still matches, still served", task.name)
        return True

    def _save_last_uses(self) -> None:
        for task in self.finished_tasks():
            if task.recorded_use and task.last_access > task.recorded_use:
                records.touch(task.data_dir, task.name, task.last_access)
                task.recorded_use = task.last_access

    def _register_locked(self, name: str, data_dir: Path | None) -> ServedTask | None:
        task = self._tasks.get(name)
        now = self.clock()
        if task is None:
            if len(self._tasks) >= MAX_TASKS:
                return None
            task = ServedTask(name, data_dir or self.data_dir, registered=now, last_access=now)
            self._tasks[name] = task
        task.last_access = now
        return task

    def _inspect(self, task: ServedTask, now: float) -> tuple[str, bool] | None:
        """Why ``task`` should be dropped (and whether to delete its file), or None."""
        finished = task.finished  # before the stat: then a finished task's pin predates it
        try:
            st = os.stat(task.path, follow_symlinks=False)
        except FileNotFoundError:
            if task.finished or task.observed is not None:
                return "its service file is gone", False
            if now - task.last_access > self.stale_after:
                return "its download never wrote a file", False
            return None
        except OSError:
            return None
        seen = Fingerprint.of(st)
        if finished and not self._still_verified(task, seen):
            return "its service file changed after it was verified", True
        with self._lock:
            if task.finished:
                if (
                    self.expiretime > 0
                    and now - max(task.last_access, st.st_mtime) > self.expiretime
                ):
                    return "expired", True
                return None
            if seen != task.observed:
                task.observed, task.observed_at = seen, now
                return None
            if now - max(task.observed_at, task.last_access) > self.stale_after:
                return "its download stopped writing and nobody reads it", True
            return None

    def _sweep_orphans(self, now: float) -> None:
        """Delete service files and restart records no task owns once they are stale (e.g.
        left by a server that was killed). Unlike v1 nothing recent is touched: a running
        download may belong to a server that restarted. Never directories."""
        try:
            entries = list(os.scandir(self.data_dir))
        except OSError:
            return
        for entry in entries:
            name = owner(entry.name)
            if name is None or name in self._tasks:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode) and now - st.st_mtime > self.stale_after:
                    os.unlink(entry.path)
                    log.info("deleted orphan file %s", entry.name)
            except OSError:
                continue
