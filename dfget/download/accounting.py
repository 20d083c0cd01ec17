"""Where every piece came from: per-holder accounting for the summary, --json and the log."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Any

from dfget.units import human_bytes

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


@dataclass
class Accounting:
    """Thread-safe tally of bytes, pieces and time per holder, plus why the source was used."""

    holders: dict[tuple[str, str], HolderStats] = field(default_factory=dict)
    source_reasons: list[str] = field(default_factory=list)
    assigned_to_source: int = 0  # pieces the supernode sent to the source (source pattern)
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

    def source_assigned(self) -> None:
        """The supernode sent a piece to the source (v1's source pattern does so for pieces
        no peer has stored yet, or whose holders are busy)."""
        with self._lock:
            self.assigned_to_source += 1

    def other_peers(self) -> int:
        """How many peers the supernode named for pieces of this task."""
        with self._lock:
            return len({s.cid or s.address for s in self.holders.values() if s.kind == PEER})

    def reasons(self) -> list[str]:
        """Why the source was used, in the terms an operator needs."""
        reasons = list(self.source_reasons)
        if self.assigned_to_source:
            peers = self.other_peers()
            count = f"the supernode sent {self.assigned_to_source} piece(s) to the source"
            reasons.append(
                f"{count} although {peers} other peer(s) held pieces of this task (v1 sends "
                "pieces no peer has stored yet, or whose holders are busy, to the source)"
                if peers
                else f"{count}: no other peer held pieces of this task yet"
            )
        return reasons

    def _snapshot(self) -> list[HolderStats]:
        """Copies of the holders' stats, each consistent, while fetch threads may still record
        (one that outlived its join after a failure or an interruption)."""
        with self._lock:
            return [replace(stats) for stats in self.holders.values()]

    def bytes_by_kind(self) -> dict[str, int]:
        totals = {PEER: 0, CDN: 0, SOURCE: 0, RESUMED: 0}
        for stats in self._snapshot():
            totals[stats.kind] = totals.get(stats.kind, 0) + stats.bytes
        return totals

    def summary(self) -> str:
        """e.g. ``51 pieces: 40 from peer 10.0.0.2:15001 (160.0 MiB), 11 from source (44.0 MiB)``"""
        used = sorted((s for s in self._snapshot() if s.pieces), key=lambda s: (-s.bytes, s.label))
        total = sum(s.pieces for s in used)
        parts = [f"{s.pieces} from {s.label} ({human_bytes(s.bytes)})" for s in used]
        line = f"{total} pieces: " + ", ".join(parts) if parts else "0 pieces"
        reasons = self.reasons()
        if reasons and any(s.kind == SOURCE and s.pieces for s in used):
            line += "; source used because " + "; ".join(reasons)
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
            for s in sorted(self._snapshot(), key=lambda s: (-s.bytes, s.label))
        ]
