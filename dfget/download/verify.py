"""The final check: every expected digest, and what to do when the file fails one."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from dfget.config import Settings
from dfget.download.accounting import HolderStats
from dfget.download.output import Outcome, Reporter
from dfget.download.resume import digest_of
from dfget.download.source import SourceFetcher
from dfget.download.target import Target
from dfget.errors import (
    DigestMismatchError,
    LocalIOError,
    SourceHTTPError,
)
from dfget.redact import redact_url

if TYPE_CHECKING:
    from dfget.download.p2p import Delivery, P2PDownload
    from dfget.download.resumption import Resumption


def verify_digests(
    settings: Settings,
    target: Target,
    total: int,
    p2p: P2PDownload | None,
    resume: Resumption | None,
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
