"""One download, from settings to a verified file at the destination (or a clean failure).

Order of business: validate, prepare the work file, try the P2P network (unless
``--pattern source``), fetch from the source only what P2P did not deliver (unless
``--notbs``), verify every expected digest, publish atomically, report.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from dfget.config import DEFAULT_NODE, Node, Settings, parse_nodes
from dfget.digest import Digest, expected_digests
from dfget.download.accounting import RESUMED, HolderStats
from dfget.download.cancel import Cancel, Cancelled
from dfget.download.output import Outcome, Reporter, validate_destination
from dfget.download.progress import Progress
from dfget.download.resume import Journal, collect_garbage, digest_of
from dfget.download.source import MIN_PART, SourceFetcher, parse_header_option
from dfget.download.target import Target, work_path_beside
from dfget.errors import (
    DfgetError,
    DigestMismatchError,
    DownloadTimeout,
    Interrupted,
    LocalIOError,
    P2PFailedError,
    SourceHTTPError,
    UsageError,
)
from dfget.httpwire import TLS, Pool
from dfget.protocol import task_key
from dfget.ratelimit import TokenBucket
from dfget.redact import redact_url
from dfget.units import format_duration

if TYPE_CHECKING:
    # The P2P side (httpx among it) is imported only by downloads that use it: a
    # --pattern source download starts ~60 ms sooner.
    from dfget.download.p2p import Delivery, Identity, P2PDownload
    from dfget.uploader.spawn import ServerStart

log = logging.getLogger(__name__)

REASON_SOURCE_PATTERN = 100
SERVER_DID_NOT_START = "peer server did not start: this download is not served to other peers"


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


@dataclass
class _Peer:
    """This host's part in the P2P network for one download."""

    identity: Identity
    server: ServerStart | None  # None: nothing served (cdn pattern)

    @property
    def server_port(self) -> int:
        """The port advertised to the supernode; 0: nothing served (cdn pattern, or the peer
        server could not even be given a port)."""
        return self.server.port() if self.server is not None else 0

    @property
    def serving(self) -> bool:
        return self.server_port > 0

    @property
    def served(self) -> bool:
        """Whether the peer server came up and serves this download (waits for its start)."""
        return self.server is not None and self.server.ready()


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
    journal = _journal(settings, destination)
    peer = None if settings.pattern == "source" else _join_network(settings, reporter, outcome)
    work_path, resuming = _work_file(settings, destination, peer, journal)
    target = Target(
        work_path,
        destination,
        digests,
        stdout_fd=sys.stdout.fileno() if destination is None else None,
        keep_work_file=peer is not None and peer.serving,
        journal=journal,
        resume=resuming,
    )
    resume = _Resume(journal, target, outcome, reporter) if journal and resuming else None
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
                _nodes(settings),
                target,
                server=peer.server if peer.serving else None,
                headers=headers,
                accounting=outcome.accounting,
                progress=progress,
                bucket=bucket,
                cancel=p2p_cancel,
                pool=pool,
                task_key=task_key(settings.url, settings.filters),
                on_registered=lambda reg: _registered(target, resume, reg.file_length),
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
        outcome.digests = _verify(settings, target, total, p2p, resume, source, reporter, outcome)
        target.flush_stdout_tail(total)
        if peer is not None and peer.serving and not peer.served:
            reporter.note(SERVER_DID_NOT_START)
            target.keep_work_file = False  # nobody serves it: move it out of the data dir
        target.commit(total)
        if journal is not None:
            journal.discard()
        if p2p is not None:
            _announce(settings, peer, p2p, outcome)
            _metrics(p2p, True, outcome)
    except BaseException as exc:
        with _signals_deferred() as arrived:
            p2p_cancel.cancel()
            source_cancel.cancel()
            _keep_or_discard(target, journal, exc)
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


def _journal(settings: Settings, destination: Path | None) -> Journal | None:
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


def _work_file(
    settings: Settings, destination: Path | None, peer: _Peer | None, journal: Journal | None
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


class _Resume:
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


def _registered(target: Target, resume: _Resume | None, length: int) -> None:
    known = length if length >= 0 else None
    if resume is not None and not resume.done:
        resume.check(known)
    else:
        target.describe_source(known)


def _verify(
    settings: Settings,
    target: Target,
    total: int,
    p2p: P2PDownload | None,
    resume: _Resume | None,
    fetcher: SourceFetcher,
    reporter: Reporter,
    outcome: Outcome,
) -> dict[str, str]:
    """Check every digest; returns the computed ones.

    A file can fail its digest although every piece passed its own checks: pieces without an
    md5 (source pattern, a CDN piece not yet hashed), a peer that lies consistently, a stale
    extent resumed from an earlier attempt. Then the bytes that did not come from the source
    in this run are fetched again from the source (the truth), whoever had delivered different
    bytes is named and reported, and the file is checked once more. Without that way out
    (--notbs, or the bytes already went to stdout) the error names the suspects.
    """
    try:
        return target.verify(total)
    except DigestMismatchError as mismatch:
        delivered = p2p.delivered if p2p is not None else []
        resumed = resume.extents if resume is not None else []
        if not delivered and not resumed:
            raise
        suspects = _suspects(delivered, resumed)
        if settings.notbs or target.stdout_fd is not None:
            why = "--notbs" if settings.notbs else "already written to stdout"
            raise mismatch.blaming(f"{suspects} ({why}: not fetched again)") from None
        if fetcher.info is not None and not fetcher.info.ranges:
            raise mismatch.blaming(f"the source ({total} bytes, all from it)") from None
        ranges = [(d.start, d.end) for d in delivered] + resumed
        before = {r: _fingerprint(target, *r) for r in ranges}
        reporter.note(f"{mismatch}: fetching the bytes from {suspects} again from the source")
        outcome.accounting.why_source(f"the file failed its digest; refetched from {suspects}")
        _refetch(settings, fetcher, _merged(ranges), total)
        for delivery in delivered:
            key = (delivery.start, delivery.end)
            if _fingerprint(target, *key) == before[key]:
                continue
            label = HolderStats(delivery.kind, delivery.holder).label
            reporter.note(f"{label} delivered corrupted piece {delivery.task.piece_num}")
            outcome.accounting.failure(
                delivery.kind,
                delivery.holder,
                delivery.task.cid,
                piece=delivery.task.piece_num,
                range=delivery.task.range,
                error="corrupted data: the file failed its digest and the source differs",
            )
            assert p2p is not None
            p2p.report_corrupt(delivery)
        try:
            return target.verify_again(total)
        except DigestMismatchError as again:
            raise again.blaming(f"the source itself ({suspects} fetched again)") from None


def _suspects(delivered: list[Delivery], resumed: list[tuple[int, int]]) -> str:
    """``peer 10.0.0.2:15001 (2 pieces), an earlier attempt (1 piece)``"""
    counts: dict[str, int] = {}
    for delivery in delivered:
        label = HolderStats(delivery.kind, delivery.holder).label
        counts[label] = counts.get(label, 0) + 1
    if resumed:
        counts["an earlier attempt"] = len(resumed)
    return ", ".join(
        f"{label} ({count} piece{'' if count == 1 else 's'})" for label, count in counts.items()
    )


def _fingerprint(target: Target, start: int, end: int) -> str:
    try:
        return digest_of(os.pread(target.fd, end - start, start))
    except OSError as exc:
        raise LocalIOError(f"cannot read back {target.work_path}: {exc.strerror}") from exc


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _refetch(
    settings: Settings, fetcher: SourceFetcher, ranges: list[tuple[int, int]], total: int
) -> None:
    """Overwrite ``ranges`` of the work file with the source's bytes."""
    info = fetcher.info
    if info is None:
        start = ranges[0][0]
        info = fetcher.probe(start, start + 1)  # one byte: does it still answer ranges?
        if info.length is not None and info.length != total:
            detail = f"the source has {info.length} bytes, P2P said {total}"
            raise SourceHTTPError(redact_url(settings.url), 200, detail)
        if not info.ranges:
            return  # the probe brought the whole file
    fetcher.fetch_ranges(ranges, settings.connections)


def _keep_or_discard(target: Target, journal: Journal | None, error: BaseException) -> None:
    """After a failure: keep what was verified for a later resume, unless it is wrong."""
    if journal is None or isinstance(error, DigestMismatchError) or not journal.extents:
        target.discard()
        if journal is not None:
            journal.discard()
        return
    target.keep(journal.partial_path)
    journal.data_path = journal.partial_path
    journal.flush()


def _nodes(settings: Settings) -> list[Node]:
    return list(settings.nodes or parse_nodes(DEFAULT_NODE))


def _join_network(settings: Settings, reporter: Reporter, outcome: Outcome) -> _Peer | None:
    """Find our address towards the supernodes and our peer server; None: go to the source."""
    from dfget.download.p2p import REASON_REGISTER_FAILED, Identity, local_ip_towards
    from dfget.supernode_client import node_order

    nodes = node_order(_nodes(settings), task_key(settings.url, settings.filters))
    local_ip = local_ip_towards(nodes)
    if not local_ip:
        why = f"no supernode reachable ({', '.join(n.address for n in nodes)}: connection failed)"
        _give_up_p2p(settings, reporter, outcome, REASON_REGISTER_FAILED, why)
        return None
    ip = settings.ip or local_ip
    name = "stdout" if settings.to_stdout else settings.output.name
    identity = Identity.new(ip, name)
    if settings.pattern != "p2p":
        return _Peer(identity, None)
    from dfget.uploader.spawn import ServerStart

    peer = _Peer(
        identity,
        ServerStart(
            settings.home,
            ip=ip,
            port=settings.port,
            expiretime=settings.expiretime,
            alivetime=settings.alivetime,
            cache_budget=settings.cache_budget,
            cache_min_free=settings.cache_min_free,
            totallimit=settings.totallimit,
            verbose=settings.verbose,
            task_file_name=identity.task_file_name,
        ),
    )
    if not peer.serving:
        reporter.note(SERVER_DID_NOT_START)
    return peer


def _give_up_p2p(
    settings: Settings, reporter: Reporter, outcome: Outcome, reason: int, why: str
) -> None:
    outcome.reason = reason
    if settings.notbs:
        outcome.reason = reason + 1000
        raise P2PFailedError(f"P2P download failed and --notbs forbids the source: {why}")
    outcome.accounting.why_source(why)
    reporter.note(f"{why}: downloading from the source")


def _via_p2p(
    settings: Settings, p2p: P2PDownload, reporter: Reporter, outcome: Outcome, started: float
) -> int | None:
    """The file length when P2P delivered everything; None when the source must fill in."""
    from dfget.download.p2p import P2PFallback

    try:
        length = p2p.run(started)
    except P2PFallback as fallback:
        if p2p.cancel.expired():
            # --timeout bounds the whole download: no time is left for the source.
            raise DownloadTimeout(
                f"download did not finish within the timeout ({fallback})"
            ) from fallback
        _give_up_p2p(settings, reporter, outcome, fallback.reason, str(fallback))
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


def _announce(settings: Settings, peer: _Peer | None, p2p: P2PDownload, outcome: Outcome) -> None:
    """Tell our peer server the file is complete and verified; say for how long it is served."""
    registration = p2p.state.registration
    if peer is None or not peer.served or registration is None:
        return
    from dfget.uploader import client

    supernode = registration.node.address
    host = client.loopback_for(peer.identity.ip)
    if client.finish(
        host,
        peer.server_port,
        peer.identity.task_file_name,
        registration.task_id,
        peer.identity.cid,
        supernode,
    ):
        address = f"[{peer.identity.ip}]" if ":" in peer.identity.ip else peer.identity.ip
        outcome.serving = f"serving pieces on {address}:{peer.server_port} " + (
            f"for at most {format_duration(settings.expiretime)} after their last use"
            if settings.expiretime
            else "while they fit the cache budget (least recently used dropped first)"
        )


def _metrics(p2p: P2PDownload | None, success: bool, outcome: Outcome) -> None:
    if p2p is not None:
        p2p.metrics(success, outcome.reason, outcome.elapsed, outcome.length)
