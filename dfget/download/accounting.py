"""Where every piece came from: per-holder accounting for the summary, --json and the log."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

PEER = "peer"
CDN = "cdn"
SOURCE = "source"
RESUMED = "resumed"


@dataclass(slots=True)
class HolderStats:
    kind: str
    address: str
    cid: str = ""
    pieces: int = 0
    bytes: int = 0
    seconds: float = 0.0
    failures: int = 0

    @property
    def label(self) -> str:
        if self.kind == PEER:
            return f"peer {self.address}"
        if self.kind == CDN:
            return f"supernode CDN {self.address}"
        return self.kind


def human_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"  # pragma: no cover


@dataclass
class Accounting:
    """Thread-safe tally of bytes, pieces and time per holder, plus why the source was used."""

    holders: dict[tuple[str, str], HolderStats] = field(default_factory=dict)
    source_reasons: list[str] = field(default_factory=list)
    trace: Any = None  # a dfget.download.trace.Trace when --trace is given
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(
        self,
        kind: str,
        address: str,
        nbytes: int,
        seconds: float,
        cid: str = "",
        pieces: int = 1,
        **detail: Any,
    ) -> None:
        if self.trace is not None and pieces:
            self.trace.event(
                "piece",
                kind=kind,
                holder=address,
                cid=cid,
                bytes=nbytes,
                ms=round(seconds * 1000, 1),
                ok=True,
                **detail,
            )
        with self._lock:
            stats = self.holders.get((kind, address))
            if stats is None:
                stats = self.holders[(kind, address)] = HolderStats(kind, address, cid)
            stats.pieces += pieces
            stats.bytes += nbytes
            stats.seconds += seconds

    def failure(self, kind: str, address: str, cid: str = "", **detail: Any) -> None:
        if self.trace is not None:
            self.trace.event("piece", kind=kind, holder=address, cid=cid, ok=False, **detail)
        with self._lock:
            stats = self.holders.get((kind, address))
            if stats is None:
                stats = self.holders[(kind, address)] = HolderStats(kind, address, cid)
            stats.failures += 1

    def why_source(self, reason: str) -> None:
        if self.trace is not None:
            self.trace.event("source", reason=reason)
        with self._lock:
            if reason not in self.source_reasons:
                self.source_reasons.append(reason)

    def bytes_by_kind(self) -> dict[str, int]:
        totals = {PEER: 0, CDN: 0, SOURCE: 0, RESUMED: 0}
        for stats in self.holders.values():
            totals[stats.kind] = totals.get(stats.kind, 0) + stats.bytes
        return totals

    def summary(self) -> str:
        """e.g. ``51 pieces: 40 from peer 10.0.0.2:15001 (160.0 MiB), 11 from source (44.0 MiB)``"""
        used = sorted(
            (s for s in self.holders.values() if s.pieces), key=lambda s: (-s.bytes, s.label)
        )
        total = sum(s.pieces for s in used)
        parts = [f"{s.pieces} from {s.label} ({human_bytes(s.bytes)})" for s in used]
        line = f"{total} pieces: " + ", ".join(parts) if parts else "0 pieces"
        if self.source_reasons and any(s.kind == SOURCE and s.pieces for s in used):
            line += "; source used because " + "; ".join(self.source_reasons)
        return line

    def as_json(self) -> list[dict[str, object]]:
        return [
            {
                "kind": s.kind,
                "address": s.address,
                "cid": s.cid,
                "pieces": s.pieces,
                "bytes": s.bytes,
                "seconds": round(s.seconds, 3),
                "failures": s.failures,
            }
            for s in sorted(self.holders.values(), key=lambda s: (-s.bytes, s.label))
        ]
