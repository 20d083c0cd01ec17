"""How much disk the files a peer server serves may take, and which file goes first.

v1 stops serving a file three minutes after its last use, so the later nodes of a rollout go
back to the registry. Here a file is served while it fits a per-host budget (``--cache-budget``:
bytes or a percentage of the data filesystem) and while the filesystem keeps a minimum of free
space (``--cache-min-free``); beyond either, the least recently used file is dropped first.
Unfinished downloads are never dropped for space: their dfget owns them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dfget.units import format_rate, human_bytes, parse_rate

GiB = 1024**3
DEFAULT_BUDGET = "10%"
DEFAULT_BUDGET_CAP = 8 * GiB  # the default percentage never allows more than this


@dataclass(frozen=True, slots=True)
class Amount:
    """A size in bytes, or a percentage of the data filesystem's size."""

    value: int | float
    percent: bool = False

    @classmethod
    def parse(cls, text: str | int) -> Amount:
        if isinstance(text, str) and text.strip().endswith("%"):
            number = text.strip()[:-1].strip()
            try:
                value = float(number)
            except ValueError:
                value = -1.0
            if not number.replace(".", "", 1).isdigit() or not 0 <= value <= 100:
                raise ValueError(f"invalid percentage {text!r}: use 0% to 100%")
            return cls(value, percent=True)
        try:
            return cls(parse_rate(text))
        except ValueError:
            raise ValueError(
                f"invalid size {text!r}: use bytes, a number with K, M or G, or a percentage"
            ) from None

    def bytes_of(self, filesystem_size: int) -> int:
        return int(filesystem_size * self.value / 100) if self.percent else int(self.value)

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.percent else format_rate(int(self.value))


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """The budget (None: the default, 10% of the filesystem capped at 8 GiB) and free-space
    floor a peer server keeps its served files within."""

    budget: Amount | None = None
    min_free: Amount = Amount(GiB)  # the served files never eat into this much free space

    def limits(self, directory: Path) -> Limits:
        """The budget and floor in bytes for the filesystem of ``directory`` as it is now."""
        st = os.statvfs(directory)
        size = st.f_blocks * st.f_frsize
        if self.budget is None:
            budget = min(Amount.parse(DEFAULT_BUDGET).bytes_of(size), DEFAULT_BUDGET_CAP)
        else:
            budget = self.budget.bytes_of(size)
        return Limits(budget, self.min_free.bytes_of(size), st.f_bavail * st.f_frsize)

    def describe(self) -> str:
        cap = format_rate(DEFAULT_BUDGET_CAP)
        budget = (
            str(self.budget) if self.budget is not None else f"{DEFAULT_BUDGET} (at most {cap})"
        )
        return f"budget {budget}, keeping {self.min_free} free"


@dataclass(frozen=True, slots=True)
class Limits:
    budget: int
    min_free: int
    free: int


@dataclass(frozen=True, slots=True)
class CachedFile:
    """A finished, served file as the eviction sees it. ``frees_space``: deleting our name
    gives its blocks back (False when the user's output is a hard link of it)."""

    name: str
    size: int
    last_use: float
    frees_space: bool = True


def evictions(files: list[CachedFile], limits: Limits) -> list[tuple[CachedFile, str]]:
    """Which files to drop, least recently used first, and why: while the files together
    exceed the budget, and while free space is below the floor (only files whose deletion
    frees space help there)."""
    used = sum(f.size for f in files)
    free = limits.free
    chosen = []
    for cached in sorted(files, key=lambda f: (f.last_use, f.name)):
        if used > limits.budget:
            why = f"over the cache budget ({human_bytes(used)} of {human_bytes(limits.budget)})"
        elif free < limits.min_free and cached.frees_space:
            why = f"low on disk ({human_bytes(free)} free, keeping {human_bytes(limits.min_free)})"
        else:
            continue
        chosen.append((cached, why))
        used -= cached.size
        if cached.frees_space:
            free += cached.size
    return chosen
