"""One download, from settings to a verified file at the destination (or a clean failure).

Order of business: validate, prepare the work file, try the P2P network (unless
``--pattern source``), fetch from the source only what P2P did not deliver (unless
``--notbs``), verify every expected digest, publish atomically, report.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import time
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING

from dfget.config import Settings
from dfget.digest import Digest, expected_digests
from dfget.download.cancel import Cancel
from dfget.download.network import (
    SERVER_DID_NOT_START,
    announce_finished,
    give_up_p2p,
    join_network,
    nodes_of,
)
from dfget.download.output import Outcome, Reporter, validate_destination
from dfget.download.progress import Progress
from dfget.download.resumption import (
    Resumption,
    keep_or_discard,
    open_journal,
    registered,
    work_file,
)
from dfget.download.source import MIN_PART, SourceFetcher
from dfget.download.source_requests import parse_header_option
from dfget.download.target import Target
from dfget.download.verify import verify_digests
from dfget.errors import (
    Cancelled,
    DfgetError,
    DownloadTimeout,
    Interrupted,
    LocalIOError,
    SourceHTTPError,
    UsageError,
)
from dfget.net.client import Pool
from dfget.net.endpoint import TLS
from dfget.net.tokenbucket import TokenBucket
from dfget.protocol.taskid import task_key
from dfget.redact import redact_url

if TYPE_CHECKING:
    # The P2P side (httpx among it) is imported only by downloads that use it: a
    # --pattern source download starts ~60 ms sooner.
    from dfget.download.p2p import P2PDownload

log = logging.getLogger(__name__)


REASON_SOURCE_PATTERN = 100


def run(settings: Settings) -> int:
    """Download per ``settings``; print the outcome; return the exit code."""
    from dfget import logs

    logs.setup(settings.home, settings.verbose, "dfclient.log", console=settings.console)
    reporter = Reporter(settings)
    outcome = Outcome()
    if settings.trace is not None:
        from dfget.download.trace import Trace

        try:
            outcome.accounting.trace = Trace(settings.trace)
        except OSError as exc:
            error = LocalIOError(f"cannot write trace {settings.trace}: {exc.strerror or exc}")
            reporter.failure(outcome, error)
            return int(error.exit_code)
    _raise_on_signals()
    log.info("download %s to %s", redact_url(settings.url), settings.output)
    try:
        download(settings, reporter, outcome)
    except DfgetError as error:
        log.error("download failed (exit %d): %s", int(error.exit_code), error)
        reporter.failure(outcome, error)
        return int(error.exit_code)
    finally:
        if outcome.accounting.trace is not None:
            outcome.accounting.trace.close()
    log.info("download succeeded: %s", outcome.accounting.summary())
    reporter.success(outcome)
    return 0


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _raise_on_signals() -> None:
    """The first SIGINT or SIGTERM raises Interrupted where the download is; later ones are
    only logged, so a second Ctrl-C cannot break off the cleanup (keeping the partial data)."""

    def again(signum: int, frame: FrameType | None) -> None:
        log.info("%s again: already stopping", signal.Signals(signum).name)

    def handler(signum: int, frame: FrameType | None) -> None:
        for stop in STOP_SIGNALS:
            signal.signal(stop, again)
        raise Interrupted(signum)

    for stop in STOP_SIGNALS:
        signal.signal(stop, handler)


def _only_log_stop_signals() -> None:
    """From publishing on: the file is put in place, handed to our peer server and reported,
    the run's resources are closed and its summary printed, whatever signal comes (each step
    is bounded by its own timeout). A stop signal is logged; exiting 130 with the output in
    place would make a script, or dfdaemon, fetch it again."""

    def completed(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        log.warning("%s arrived after the download completed; the output is in place", name)

    for stop in STOP_SIGNALS:
        signal.signal(stop, completed)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[list[int]]:
    """Cleanup runs whole: stop signals arriving meanwhile are only recorded in the list
    yielded (a signal mask would not do: Python runs handlers in the main thread whichever
    thread the kernel picks); the caller raises for them once the cleanup is done."""
    arrived: list[int] = []
    previous = {stop: signal.signal(stop, lambda signum, _: arrived.append(signum))
                for stop in STOP_SIGNALS}  # fmt: skip
    try:
        yield arrived
    finally:
        for stop, handler in previous.items():
            signal.signal(stop, handler)


def download(settings: Settings, reporter: Reporter, outcome: Outcome) -> None:
    try:
        digests = expected_digests(settings.url, settings.digest, settings.md5)
        headers = [parse_header_option(h) for h in settings.headers]
        tls = TLS(settings.cacerts, settings.insecure)
        if settings.url.startswith("https:"):
            tls.context()  # needed anyway: a bad --cacerts file is a usage error now
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

    started = time.monotonic()
    journal = open_journal(settings, destination)
    peer = None if settings.pattern == "source" else join_network(settings, reporter, outcome)
    work_path, resuming = work_file(settings, destination, peer, journal)
    target = Target(
        work_path,
        destination,
        digests,
        stdout_fd=sys.stdout.fileno() if destination is None else None,
        keep_work_file=peer is not None and peer.serving,
        journal=journal,
        resume=resuming,
    )
    resume = Resumption(journal, target, outcome, reporter) if journal and resuming else None
    progress = Progress(Progress.wanted(settings.showbar, settings.quiet), settings.output.name)
    deadline = started + settings.timeout if settings.timeout > 0 else None
    p2p_cancel, source_cancel = Cancel(deadline), Cancel(deadline)
    pool = Pool(tls=tls)
    bucket = TokenBucket(settings.locallimit)
    p2p: P2PDownload | None = None
    source = SourceFetcher(
        settings.url,
        headers,
        target,
        tls=tls,
        progress=progress,
        accounting=outcome.accounting,
        bucket=bucket,
        cancel=source_cancel,
    )
    try:
        total: int | None = None
        if settings.pattern == "source":
            outcome.reason = REASON_SOURCE_PATTERN
            outcome.accounting.why_source("--pattern source")
        elif peer is not None:
            from dfget.download.p2p import P2PDownload

            p2p = P2PDownload(
                settings,
                peer.identity,
                nodes_of(settings),
                target,
                server=peer.server if peer.serving else None,
                headers=headers,
                accounting=outcome.accounting,
                progress=progress,
                bucket=bucket,
                cancel=p2p_cancel,
                pool=pool,
                task_key=task_key(settings.url, settings.filters),
                on_registered=lambda reg: registered(target, resume, reg.file_length),
            )
            try:
                total = _via_p2p(settings, p2p, reporter, outcome, started)
            finally:
                outcome.supernodes = list(p2p.state.tried)
                outcome.supernode_requests = p2p.requests
            source_cancel.deadline = p2p_cancel.deadline
            if total is not None and p2p.state.md5 and not p2p.all_pieces_md5_verified:
                target.add_digest(Digest("md5", p2p.state.md5))
        if total is None:
            if resume is not None and not resume.done:
                resume.check(*source.identity())
            total = _from_source(settings, source, source_cancel, started, _known_length(p2p))
        outcome.length = total
        outcome.digests = verify_digests(
            settings, target, total, p2p, resume, source, reporter, outcome
        )
        target.flush_stdout_tail(total)
        if peer is not None and peer.serving and not peer.served:
            reporter.note(SERVER_DID_NOT_START)
            target.keep_work_file = False  # nobody serves it: move it out of the data dir
        # Once the verified bytes are staged beside the destination the download has succeeded:
        # a stop signal no longer undoes it (see _only_log_stop_signals).
        target.commit(total, publishing=_only_log_stop_signals)
        if journal is not None:
            journal.discard()
        if p2p is not None:
            announce_finished(settings, peer, p2p, outcome)
            _metrics(p2p, True, outcome)
    except BaseException as exc:
        with _signals_deferred() as arrived:
            p2p_cancel.cancel()
            source_cancel.cancel()
            keep_or_discard(target, journal, exc)
            if p2p is not None:
                p2p.withdraw()
            _metrics(p2p, False, outcome)
        if arrived and not isinstance(exc, Interrupted):
            raise Interrupted(arrived[0]) from exc
        if isinstance(exc, Cancelled):
            raise Interrupted(signal.SIGTERM) from exc
        raise
    finally:
        progress.close()
        source.close()
        pool.close()
        if p2p is not None:
            p2p.close()
        if journal is not None:
            journal.release()


def _via_p2p(
    settings: Settings, p2p: P2PDownload, reporter: Reporter, outcome: Outcome, started: float
) -> int | None:
    """The file length when P2P delivered everything; None when the source must fill in."""
    from dfget.errors import P2PFallback

    try:
        length = p2p.run(started)
    except P2PFallback as fallback:
        if p2p.cancel.expired():
            # --timeout bounds the whole download: no time is left for the source.
            raise DownloadTimeout(
                f"download did not finish within the timeout ({fallback})"
            ) from fallback
        give_up_p2p(settings, reporter, outcome, fallback.reason, str(fallback))
        return None
    return length


def _from_source(
    settings: Settings, fetcher: SourceFetcher, cancel: Cancel, started: float, known: int | None
) -> int:
    """What is still missing, from the source: the first gap streamed by the probe, then the
    other gaps (in parallel parts with --connections N)."""
    target = fetcher.target
    gaps = target.missing(known if known is not None else sys.maxsize)
    if not gaps:
        return known or 0
    first_start, first_stop = gaps[0]
    stop = None if known is None else first_stop
    if settings.connections > 1:  # parallel parts follow the probe: keep it one part long
        stop = min(stop or sys.maxsize, first_start + MIN_PART)
    info = fetcher.probe(first_start, stop)
    length = info.length or 0
    if known is not None and info.length is not None and info.length != known:
        raise SourceHTTPError(
            redact_url(settings.url), 200, f"the source has {info.length} bytes, P2P said {known}"
        )
    if cancel.deadline is None:
        cancel.deadline = started + settings.download_timeout(length)
    if info.ranges:
        missing = target.missing(length)
        if missing:
            fetcher.fetch_ranges(missing, settings.connections)
    return length


def _known_length(p2p: P2PDownload | None) -> int | None:
    registration = p2p.state.registration if p2p is not None else None
    if registration is None or registration.file_length < 0:
        return None
    return registration.file_length


def _metrics(p2p: P2PDownload | None, success: bool, outcome: Outcome) -> None:
    if p2p is not None:
        p2p.metrics(success, outcome.reason, outcome.elapsed, outcome.length)
