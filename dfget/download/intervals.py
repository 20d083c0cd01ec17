"""A set of half-open byte ranges: which parts of the file are written and final."""

from __future__ import annotations

import bisect


class IntervalSet:
    """Disjoint, sorted, merged [start, end) ranges."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def add(self, start: int, end: int) -> None:
        if end <= start:
            return
        # First range that ends at or after `start`, last range that starts at or before `end`.
        lo = bisect.bisect_left(self._ends, start)
        hi = bisect.bisect_right(self._starts, end)
        if lo < hi:
            start = min(start, self._starts[lo])
            end = max(end, self._ends[hi - 1])
        self._starts[lo:hi] = [start]
        self._ends[lo:hi] = [end]

    def covers(self, start: int, end: int) -> bool:
        if end <= start:
            return True
        index = bisect.bisect_right(self._starts, start) - 1
        return index >= 0 and self._ends[index] >= end

    def prefix(self) -> int:
        """End of the contiguous range starting at 0 (0 if none)."""
        return self._ends[0] if self._starts and self._starts[0] == 0 else 0

    def missing(self, total: int) -> list[tuple[int, int]]:
        """The gaps in [0, total)."""
        gaps, position = [], 0
        for start, end in zip(self._starts, self._ends, strict=True):
            if start >= total:
                break
            if start > position:
                gaps.append((position, start))
            position = max(position, end)
        if position < total:
            gaps.append((position, total))
        return gaps

    def total(self) -> int:
        return sum(e - s for s, e in zip(self._starts, self._ends, strict=True))

    def __repr__(self) -> str:
        return f"IntervalSet({list(zip(self._starts, self._ends, strict=True))})"
