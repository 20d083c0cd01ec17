"""Where this attempt's bytes go, adopting an earlier attempt's, keeping this one's on failure."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from dfget.config import Settings
from dfget.download.accounting import RESUMED
from dfget.download.output import Outcome, Reporter
from dfget.download.resume import Journal, collect_garbage
from dfget.download.target import Target, work_path_beside
from dfget.errors import DigestMismatchError
from dfget.protocol.taskid import task_key

if TYPE_CHECKING:
    from dfget.download.network import Peer

log = logging.getLogger(__name__)


def open_journal(settings: Settings, destination: Path | None) -> Journal | None:
    """The resume journal of this download (None for stdout); --no-resume forgets it."""
    if destination is None:
        return None
    journal = Journal.for_download(
        settings.home, task_key(settings.url, settings.filters), destination
    )
    if not journal.claim():
        # Sharing the record and the partial data would have each move the other's file away.
        log.info("another dfget downloads the same file to %s: not resuming", destination)
        return None
    if not settings.resume:
        journal.discard()
        return None
    collect_garbage(
        settings.home, settings.partial_max_age, settings.partial_budget, keep=journal.record_path
    )
    return journal


def work_file(
    settings: Settings, destination: Path | None, peer: Peer | None, journal: Journal | None
) -> tuple[Path, bool]:
    """Where the bytes land while downloading, and whether an earlier attempt's are there."""
    if peer is not None and peer.serving:
        # Served to other peers while it grows, so it must be the peer server's file.
        path = settings.home / "data" / f"{peer.identity.task_file_name}.service"
    elif journal is not None:
        path = journal.partial_path
    elif destination is not None:
        return work_path_beside(destination), False
    else:
        return settings.home / "tmp" / f"stdout-{time.time_ns()}", False
    if journal is None:
        return path, False
    resuming = journal.load()
    if resuming and journal.data_path != path:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(journal.data_path, path)
        except OSError:
            resuming = False
    journal.data_path = path
    return path, resuming


class Resumption:
    """Adopts an earlier attempt's verified bytes once the source's identity is known."""

    def __init__(
        self, journal: Journal, target: Target, outcome: Outcome, reporter: Reporter
    ) -> None:
        self.journal = journal
        self.target = target
        self.outcome = outcome
        self.reporter = reporter
        self.done = False
        self.extents: list[tuple[int, int]] = []  # adopted from the earlier attempt

    def check(self, length: int | None, etag: str = "", last_modified: str = "") -> None:
        self.done = True
        if not self.journal.same_source(length, etag, last_modified):
            self.reporter.note("the source changed since the interrupted attempt: starting over")
            self.journal.forget()
            self.target.truncate()
        else:
            extents = self.extents = self.journal.verified(self.target.fd)
            resumed = self.target.restore(extents)
            self.outcome.resumed_bytes = resumed
            if resumed:
                self.outcome.accounting.record(
                    RESUMED, "earlier attempt", resumed, 0.0, pieces=len(extents)
                )
        self.journal.describe_source(length, etag, last_modified)
        self.journal.flush()


def registered(target: Target, resume: Resumption | None, length: int) -> None:
    known = length if length >= 0 else None
    if resume is not None and not resume.done:
        resume.check(known)
    else:
        target.describe_source(known)


def keep_or_discard(target: Target, journal: Journal | None, error: BaseException) -> None:
    """After a failure: keep what was verified for a later resume, unless it is wrong."""
    if journal is None or isinstance(error, DigestMismatchError) or not journal.extents:
        target.discard()
        if journal is not None:
            journal.discard()
        return
    target.keep(journal.partial_path)
    journal.data_path = journal.partial_path
    journal.flush()
