"""The scheduler's terms: the limits it works within and the decisions it answers with.

Kept apart from :class:`~dfget.supernode.scheduler.Scheduler` so that anything scheduling a
task (the tests' double of Dragonfly 1.0.6's rules, the fleet simulation) speaks the same
language to the service without taking our policy along.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

UPSTREAM = "\x00upstream"
"""Holder id of the supernode itself: its CDN cache, or the origin in the source pattern."""


class PieceOutcome(enum.Enum):
    """What a client is told when it asks for work (mapped to 600/601/602 by the API)."""

    ASSIGNED = "assigned"
    FINISHED = "finished"
    LIMITED = "limited"
    """The client already runs ``down_limit`` pieces."""
    NOTHING_AVAILABLE = "nothing-available"
    """No piece this client lacks is available anywhere yet."""
    ALL_RUNNING = "all-running"
    """Every available piece this client lacks is already running for it."""
    NO_HOLDER = "no-holder"
    """Pieces are available but no holder can take them right now."""


@dataclass(frozen=True, slots=True)
class Assignment:
    piece: int
    holder: str
    """A client id, or :data:`UPSTREAM`."""


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: PieceOutcome
    assignments: tuple[Assignment, ...] = ()


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    down_limit: int = 4
    """Pieces running at once per client."""
    up_limit: int = 5
    """Concurrent uploads per peer holder."""
    upstream_limit: int = 4
    """Concurrent pieces served by the upstream holder for this task, across all clients."""
    upstream_when_busy: bool = True
    """Fall back to upstream when every live holder of a piece is busy (not just absent)."""
    fetch_wait: float = 15.0
    """How long others wait for a piece one client is fetching from upstream."""
    running_timeout: float = 120.0
    """A running piece that is never reported is forgotten after this long."""
    silence_timeout: float = 10.0
    """A client that has not pulled for this long has probably died: its running pieces (and
    the upstream slots they hold) go back to the others. Live clients pull every few seconds."""
    failure_limit: int = 5
    """A client with more consecutive failures than this is sent upstream."""
    elimination_limit: int = 5
    """A holder with this many consecutive upload failures is no longer handed out."""
    sample: int = 3
    """Holders sampled per piece before a full scan."""
    scan_limit: int = 256
    """Holders one decision examines in full scans, beyond the samples. Bounds a decision's cost
    at any fleet size; past it, a piece whose sampled holders are all saturated counts as busy."""
    order_window: int = 8
    """Equally rare pieces are handed out window by window of this many pieces (randomly within
    one): front to back, yet spread over several pieces for clients that start together."""
