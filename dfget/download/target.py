"""The file being downloaded: pieces land at their offsets in a work file, the contiguous prefix
is hashed (and, for ``-o -``, streamed to stdout) as it grows, and only a verified file is moved
onto the destination, atomically.

Whatever path a byte took (peer, supernode CDN, source) it ends in :meth:`Target.verify`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from dfget.digest import Digest
from dfget.download.intervals import IntervalSet
from dfget.download.resume import Journal, digest_of
from dfget.download.writeback import start_writeback
from dfget.errors import DigestMismatchError, LocalIOError
from dfget.private import private_dir

_HASH_CHUNK = 4 * 1024 * 1024
# With -o -, this many final bytes are held back until the digest verified, so a consumer of a
# corrupted download sees a truncated stream and a failing exit code, never a "complete" file.
STDOUT_HOLDBACK = 1024 * 1024


def local_io_error(action: str, path: Path | str, exc: OSError) -> LocalIOError:
    reason = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc.strerror or str(exc)
    return LocalIOError(f"cannot {action} {path}: {reason}")


def work_path_beside(destination: Path) -> Path:
    """A hidden temp name in the destination's directory, so the final rename is atomic."""
    return destination.with_name(f".{destination.name}.dfget-{os.getpid()}-{secrets.token_hex(4)}")


class Target:
    """Work file + in-order hashing + atomic publication."""

    def __init__(
        self,
        work_path: Path,
        destination: Path | None,
        digests: list[Digest],
        length: int | None = None,
        stdout_fd: int | None = None,
        keep_work_file: bool = False,
        journal: Journal | None = None,
        resume: bool = False,
    ) -> None:
        self.work_path = work_path
        self.destination = destination
        self.digests = list(digests)
        self.length = length
        self.stdout_fd = stdout_fd
        self.keep_work_file = keep_work_file
        self.journal = journal
        self._hashes = {d.algorithm: d.new_hash() for d in self.digests}
        self._done = IntervalSet()  # read and written under self._cond only
        self._hashed = 0
        self._streamed = 0
        self._total: int | None = None
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._closed = False
        try:
            private_dir(work_path.parent)  # the data dir, or the destination's (it exists)
            # O_NOFOLLOW: a symlink planted at the work path must not redirect our writes.
            flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
            flags |= 0 if resume else os.O_TRUNC
            self.fd = os.open(work_path, flags, 0o644)
            if length:
                os.ftruncate(self.fd, length)
        except OSError as exc:
            raise local_io_error("create", work_path, exc) from exc
        self._follow = bool(self._hashes) or stdout_fd is not None
        self._thread: threading.Thread | None = None
        if self._follow:
            self._thread = threading.Thread(target=self._follow_prefix, name="hasher", daemon=True)
            self._thread.start()

    def add_digest(self, digest: Digest) -> None:
        """A digest learnt after the download started (e.g. the supernode's md5).

        Must be called before any byte completed, or it is checked by re-reading the file.
        """
        if digest.algorithm in self._hashes:
            return
        self.digests.append(digest)

    def write(self, offset: int, data: memoryview | bytes) -> None:
        """pwrite all of ``data`` at ``offset``."""
        view = memoryview(data)
        try:
            while view:
                written = os.pwrite(self.fd, view, offset)
                view = view[written:]
                offset += written
        except OSError as exc:
            raise local_io_error("write", self.work_path, exc) from exc

    def store(self, offset: int, data: memoryview | bytes) -> None:
        """Write ``data`` at ``offset`` and mark it final (journaled for a later resume)."""
        self.write(offset, data)
        if self.destination is not None:  # with -o - the work file is only a reorder buffer
            start_writeback(self.fd, offset, len(data))
        if self.journal is not None:
            self.journal.add(offset, offset + len(data), digest_of(data))
        self.complete(offset, offset + len(data))

    def describe_source(self, length: int | None, etag: str = "", last_modified: str = "") -> None:
        """Record what the bytes belong to, before any is stored (a resume checks it)."""
        if self.journal is not None:
            self.journal.describe_source(length, etag, last_modified)

    def restore(self, extents: list[tuple[int, int]]) -> int:
        """Mark verified bytes of an earlier attempt as done; returns how many."""
        for start, end in extents:
            self.complete(start, end)
        return sum(end - start for start, end in extents)

    def truncate(self) -> None:
        """Drop all data (before anything was completed): the source changed."""
        try:
            os.ftruncate(self.fd, 0)
            if self.length:
                os.ftruncate(self.fd, self.length)
        except OSError as exc:
            raise local_io_error("truncate", self.work_path, exc) from exc

    def complete(self, start: int, end: int) -> None:
        """Bytes [start, end) are written and final."""
        with self._cond:
            before = self._done.prefix()
            self._done.add(start, end)
            if self._done.prefix() != before:
                self._cond.notify_all()

    def covers(self, start: int, end: int) -> bool:
        """Whether bytes [start, end) are complete (a consistent answer while fetch threads
        complete other ranges: the set's add updates two lists in two steps)."""
        with self._cond:
            return self._done.covers(start, end)

    def missing(self, total: int) -> list[tuple[int, int]]:
        with self._cond:
            return self._done.missing(total)

    def _follow_prefix(self) -> None:
        view = memoryview(bytearray(_HASH_CHUNK))
        try:
            while True:
                with self._cond:
                    while not self._closed and self._hashed >= self._done.prefix():
                        if self._total is not None and self._hashed >= self._total:
                            return
                        self._cond.wait()
                    if self._closed:
                        return
                    limit = self._done.prefix()
                    if self._total is not None:
                        limit = min(limit, self._total)
                count = min(len(view), limit - self._hashed)
                got = os.preadv(self.fd, [view[:count]], self._hashed)
                if got <= 0:
                    raise OSError(errno.EIO, "work file shorter than its completed extents")
                for hasher in self._hashes.values():
                    hasher.update(view[:got])
                with self._cond:
                    self._hashed += got
                    end_hint = self._total or self.length or self._hashed
                    self._cond.notify_all()
                if self.stdout_fd is not None:
                    self._stream(min(self._hashed, end_hint - STDOUT_HOLDBACK), view)
        except BaseException as exc:  # reported by verify()
            with self._cond:
                self._error = exc
                self._cond.notify_all()

    def _stream(self, upto: int, view: memoryview) -> None:
        """Copy [streamed, upto) of the work file to stdout."""
        assert self.stdout_fd is not None
        while self._streamed < upto:
            got = os.preadv(
                self.fd, [view[: min(len(view), upto - self._streamed)]], self._streamed
            )
            if got <= 0:
                raise OSError(errno.EIO, "work file shorter than its completed extents")
            _write_all(self.stdout_fd, view[:got])
            self._streamed += got

    def verify(self, total: int) -> dict[str, str]:
        """Wait until all ``total`` bytes are hashed (and streamed); check every digest.

        Returns the computed digests. Raises DigestMismatchError on a mismatch.
        """
        with self._cond:
            self._total = total
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            if isinstance(self._error, OSError):
                if self._error.errno == errno.EPIPE:
                    raise LocalIOError("stdout closed by the reader") from self._error
                raise local_io_error("read back", self.work_path, self._error) from self._error
            raise self._error
        actual = {name: h.hexdigest() for name, h in self._hashes.items()}
        late = [d for d in self.digests if d.algorithm not in actual]
        if late:
            actual.update(self._rehash(late, total))
        for digest in self.digests:
            if actual[digest.algorithm] != digest.hex:
                raise DigestMismatchError(digest.algorithm, digest.hex, actual[digest.algorithm])
        return actual

    def verify_again(self, total: int) -> dict[str, str]:
        """Hash the whole work file once more and check every digest (after some of its
        bytes were fetched again)."""
        actual = self._rehash(self.digests, total)
        for digest in self.digests:
            if actual[digest.algorithm] != digest.hex:
                raise DigestMismatchError(digest.algorithm, digest.hex, actual[digest.algorithm])
        return actual

    def _rehash(self, digests: list[Digest], total: int) -> dict[str, str]:
        hashes = {d.algorithm: d.new_hash() for d in digests}
        view = memoryview(bytearray(_HASH_CHUNK))
        offset = 0
        while offset < total:
            got = os.preadv(self.fd, [view[: min(len(view), total - offset)]], offset)
            if got <= 0:
                break
            for hasher in hashes.values():
                hasher.update(view[:got])
            offset += got
        return {name: h.hexdigest() for name, h in hashes.items()}

    def flush_stdout_tail(self, total: int) -> None:
        """After verification, write the held-back end of the stream."""
        if self.stdout_fd is None:
            return
        try:
            self._stream(total, memoryview(bytearray(_HASH_CHUNK)))
        except OSError as exc:
            raise LocalIOError(f"cannot write to stdout: {exc.strerror or exc}") from exc

    def commit(self, total: int, publishing: Callable[[], None] = lambda: None) -> None:
        """fsync, truncate to ``total`` and atomically move onto the destination.

        With ``keep_work_file`` (the peer server goes on serving it) the destination becomes a
        hard link of the work file, or a copy when they live on different filesystems.
        ``publishing()`` is called once the bytes are staged beside the destination, right
        before the rename that publishes them.
        """
        try:
            os.ftruncate(self.fd, total)
            if self.destination is not None:  # stdout already has the bytes: nothing to keep
                os.fsync(self.fd)
        except OSError as exc:
            raise local_io_error("write", self.work_path, exc) from exc
        self._close()
        if self.destination is None:
            publishing()  # stdout has every byte
            self.discard()
            return
        staged = work_path_beside(self.destination)
        try:
            if self.keep_work_file:
                _link_or_copy(self.work_path, staged)
            else:
                _move_or_copy(self.work_path, staged)
        except OSError as exc:
            _unlink_quietly(staged)
            self.discard()
            raise local_io_error("move the download onto", self.destination, exc) from exc
        except BaseException:  # a stop signal during a long copy: the work file is kept
            _unlink_quietly(staged)
            raise
        publishing()
        try:
            os.replace(staged, self.destination)
            _fsync_dir(self.destination.parent)
        except OSError as exc:
            _unlink_quietly(staged)
            self.discard()
            raise local_io_error("move the download onto", self.destination, exc) from exc

    def keep(self, partial: Path) -> None:
        """Close, leaving the data at ``partial`` for a later attempt to resume."""
        self._close()
        try:
            if partial != self.work_path:
                private_dir(partial.parent)
                os.replace(self.work_path, partial)
        except OSError as exc:
            _unlink_quietly(self.work_path)
            raise local_io_error("keep partial data in", partial, exc) from exc

    def _close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def discard(self) -> None:
        """Remove the work file; the destination is never touched."""
        self._close()
        _unlink_quietly(self.work_path)


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _move_or_copy(source: Path, staged: Path) -> None:
    """Rename, or copy and remove when ``staged`` is on another filesystem (work home)."""
    try:
        os.rename(source, staged)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_synced(source, staged)
        _unlink_quietly(source)


def _link_or_copy(source: Path, staged: Path) -> None:
    try:
        os.link(source, staged)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        _copy_synced(source, staged)


def _copy_synced(source: Path, staged: Path) -> None:
    shutil.copyfile(source, staged)
    fd = os.open(staged, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
