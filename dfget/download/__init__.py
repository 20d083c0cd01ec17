"""One download, from settings to a verified file at the destination (or a clean failure).

Order of business: validate, prepare the work file, try the P2P network (unless
``--pattern source``), fall back to the source for whatever is missing (unless ``--notbs``),
verify every expected digest, publish atomically, report.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from types import FrameType

from dfget.config import Settings
from dfget.digest import expected_digests
from dfget.download.cancel import Cancel, Cancelled
from dfget.download.output import Outcome, Reporter, validate_destination
from dfget.download.progress import Progress
from dfget.download.ratelimit import TokenBucket
from dfget.download.source import SourceFetcher, parse_header_option
from dfget.download.target import Target, work_path_beside
from dfget.errors import DfgetError, Interrupted, LocalIOError, UsageError
from dfget.httpwire import tls_context

log = logging.getLogger("dfget.download")

REASON_SOURCE_PATTERN = 100


def run(settings: Settings) -> int:
    """Download per ``settings``; print the outcome; return the exit code."""
    reporter = Reporter(settings)
    outcome = Outcome(settings)
    _raise_on_signals()
    try:
        download(settings, reporter, outcome)
    except DfgetError as error:
        reporter.failure(outcome, error)
        return int(error.exit_code)
    except KeyboardInterrupt:
        error = Interrupted(signal.SIGINT)
        reporter.failure(outcome, error)
        return int(error.exit_code)
    reporter.success(outcome)
    return 0


def _raise_on_signals() -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def download(settings: Settings, reporter: Reporter, outcome: Outcome) -> None:
    try:
        digests = expected_digests(settings.url, settings.digest, settings.md5)
        headers = [parse_header_option(h) for h in settings.headers]
        tls = tls_context(settings.cacerts, settings.insecure)
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from exc
    outcome.verified = [str(d) for d in digests]
    destination = None if settings.to_stdout else settings.output
    if destination is not None:
        validate_destination(destination)
        try:
            destination.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LocalIOError(f"cannot create {destination.parent}: {exc.strerror}") from exc
    work_path = (
        work_path_beside(destination)
        if destination is not None
        else settings.home / "tmp" / f"stdout-{time.time_ns()}"
    )
    stdout_fd = sys.stdout.fileno() if destination is None else None
    target = Target(work_path, destination, digests, stdout_fd=stdout_fd)
    progress = Progress(Progress.wanted(settings.showbar, settings.quiet), settings.output.name)
    cancel = Cancel()
    fetcher = SourceFetcher(
        settings.url,
        headers,
        target,
        tls=tls,
        progress=progress,
        accounting=outcome.accounting,
        bucket=TokenBucket(settings.locallimit),
        cancel=cancel,
    )
    try:
        if settings.pattern == "source":
            outcome.reason = REASON_SOURCE_PATTERN
            outcome.accounting.why_source("--pattern source")
        total = _from_source(settings, fetcher, cancel)
        outcome.length = total
        outcome.digests = target.verify(total)
        target.flush_stdout_tail(total)
        target.commit(total)
    except Cancelled as exc:
        raise Interrupted(signal.SIGTERM) from exc
    except BaseException:
        cancel.cancel()
        target.discard()
        raise
    finally:
        progress.close()
        fetcher.close()


def _from_source(settings: Settings, fetcher: SourceFetcher, cancel: Cancel) -> int:
    """The whole file from the source: probe, then the remaining ranges in parallel."""
    started = time.monotonic()
    info = fetcher.probe()
    length = info.length or 0
    cancel.deadline = started + settings.download_timeout(length)
    if info.ranges and length > fetcher.target.prefix:
        fetcher.fetch_ranges([(fetcher.target.prefix, length)], settings.connections)
    return length
