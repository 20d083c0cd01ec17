"""A test double of Dragonfly 1.0.6's supernode scheduling, for measuring our client under it.

Our own supernode schedules better than v1 (dfget/supernode/scheduler.py); users keep running
the Go 1.0.6 supernode, so CI must also see how our *client* fares under v1's rules. This module
plugs :class:`V1Scheduler` into dfget's supernode service (registration, routes, source
pattern stay as they are) in place of our scheduler. It follows the Go code of
``supernode/daemon/mgr/scheduler`` and ``.../progress`` at tag v1.0.6 rule by rule:

* available = pieces the CDN has (all of them at once in the source pattern) that the client
  has not completed, minus those running for it; none -> 602; four running -> 601 without data;
* order: fewest holders first, then distance to the mean of the client's running piece numbers
  (integer division, 0 when nothing runs), then a coin toss;
* a holder is a peer that sent ``/peer/piece/suc`` for the piece (a pull reporting 503 does not
  make one); holders are walked in random order (Go map order), dropping offline and eliminated
  ones (service errors >= 5), skipping those on the client's blacklist (one failure), taking
  the first whose upload load + 1 <= 5; none -> the supernode;
* a client with more than 5 consecutive failures is sent to the supernode for everything;
* the supernode serves at most 4 pieces per task at once across all clients: a piece that
  would exceed it is skipped this round. The count goes down only by ``/peer/piece/suc``
  naming the supernode (not by failures: v1's slot leak), and is reset to 0 once it has not
  changed for 30 s;
* ``/peer/task`` results update the client's bitmap once per piece (a second report of a piece
  already successful changes nothing), the holder's upload load (-1), and on failure the
  blacklist and error counts; neither ``/task/metrics`` nor ``/peer/piece/error`` changes
  scheduling.

Run as ``python -m tests.v1_supernode`` with ``dfget supernode``'s options plus ``--trace FILE``
(one JSON line per assignment and report, for per-piece traces of a run).
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from dfget.supernode.scheduling import UPSTREAM, Assignment, Decision, PieceOutcome, SchedulerConfig

SUPER_LOAD_RESET = 30.0
"""v1 resets a task's supernode load to 0 when it has not changed for this long."""

Trace = Callable[[dict[str, Any]], None]


@dataclass
class _Peer:
    """v1's per-peer state (a peer is one registration, i.e. one cid here)."""

    load: int = 0
    client_errors: int = 0
    service_errors: int = 0
    down: bool = False
    blacklist: set[str] = field(default_factory=set)


@dataclass
class _Client:
    success: set[int] = field(default_factory=set)
    failed: set[int] = field(default_factory=set)
    running: dict[int, str] = field(default_factory=dict)


class V1Scheduler:
    """Dragonfly 1.0.6's scheduling of one task, behind our scheduler's interface."""

    def __init__(
        self,
        piece_count: int | None,
        config: SchedulerConfig | None = None,
        seed: int | None = None,
        trace: Trace | None = None,
    ) -> None:
        self.config = config or SchedulerConfig()
        self._rng = random.Random(seed)
        self._count = piece_count
        self._ready: set[int] = set()
        self._holders: dict[int, dict[str, None]] = {}
        self._clients: dict[str, _Client] = {}
        self._peers: dict[str, _Peer] = {}
        self._super_load = 0
        self._super_changed = time.monotonic()
        self._trace = trace

    # ---- task-level events (the CDN) ---------------------------------------------------------

    @property
    def piece_count(self) -> int | None:
        return self._count

    @property
    def ready_count(self) -> int:
        return len(self._ready)

    @property
    def upstream_load(self) -> int:
        return self._super_load

    def set_piece_count(self, count: int) -> None:
        self._count = count

    def mark_ready(self, piece: int) -> None:
        self._ready.add(piece)

    def mark_all_ready(self) -> None:
        if self._count is None:
            raise ValueError("piece count unknown")
        self._ready.update(range(self._count))

    def reset_ready(self) -> None:
        self._ready.clear()

    # ---- clients -----------------------------------------------------------------------------

    def add_client(self, cid: str, serves: bool = True) -> None:
        """v1 registers every client as a possible holder, serving or not (spec §8)."""
        self._clients.setdefault(cid, _Client())
        self._peers.setdefault(cid, _Peer())

    def done_count(self, cid: str) -> int:
        return len(self._clients[cid].success)

    def running(self, cid: str) -> dict[int, str]:
        return dict(self._clients[cid].running)

    def holders(self, piece: int) -> list[str]:
        return list(self._holders.get(piece, {}))

    def service_down(self, cid: str) -> bool:
        peer = self._peers.get(cid)
        if peer is None:
            return False
        peer.down = True
        return True

    def stop_running(self, cid: str) -> None:
        """v1 ignores /task/metrics: running pieces stay running."""

    def remove_client(self, cid: str) -> None:
        self._clients.pop(cid, None)
        self._peers.pop(cid, None)

    def piece_error(self, cid: str, holder: str) -> None:
        """v1 acts on /peer/piece/error only for its own CDN copy, never in scheduling."""

    # ---- reports -----------------------------------------------------------------------------

    def report(
        self,
        cid: str,
        piece: int,
        holder: str | None,
        success: bool,
        now: float,
        *,
        announce: bool = False,
    ) -> bool:
        """``announce``: ``/peer/piece/suc``; otherwise the result carried by ``/peer/task``."""
        client = self._clients[cid]
        if announce:
            if holder is None:
                return False  # v1: unknown dstCid -> HTTP 500 before any change
            if holder == UPSTREAM:
                self._change_super_load(-1, now)
            self._holders.setdefault(piece, {})[cid] = None
        self._emit(now, "suc" if announce else "pull", cid, piece, holder, success)
        client.running.pop(piece, None)
        if piece in client.success:
            return False
        if success:
            client.success.add(piece)
            client.failed.discard(piece)
        else:
            client.failed.add(piece)
        self._update_peers(cid, holder, success)
        return success

    def _update_peers(self, cid: str, holder: str | None, success: bool) -> None:
        source = self._peers.get(holder) if holder not in (None, UPSTREAM) else None
        if source is not None and source.load > 0:
            source.load -= 1
        if source is None:
            return  # v1 keeps no error counts when the supernode is involved
        me = self._peers[cid]
        if success:
            me.client_errors = 0
            source.service_errors = 0
        else:
            assert holder is not None
            me.blacklist.add(holder)
            me.client_errors += 1
            source.service_errors += 1

    # ---- the decision ------------------------------------------------------------------------

    def schedule(self, cid: str, now: float) -> Decision:
        client = self._clients[cid]
        if now - self._super_changed > SUPER_LOAD_RESET:
            self._super_load = 0
        if self._count and len(client.success) >= self._count:
            return Decision(PieceOutcome.FINISHED)
        available = [p for p in self._ready if p not in client.success and p not in client.running]
        if not available:
            return Decision(PieceOutcome.NOTHING_AVAILABLE)
        limit = self.config.down_limit
        if len(client.running) >= limit:
            return Decision(PieceOutcome.LIMITED)
        running = list(client.running)
        center = sum(running) // len(running) if running else 0
        available.sort(
            key=lambda p: (len(self._holders.get(p, ())), abs(p - center), self._rng.random())
        )
        to_super = self._peers[cid].client_errors > self.config.failure_limit
        assignments: list[Assignment] = []
        for piece in available:
            holder = UPSTREAM if to_super else self._peer_for(cid, piece)
            if holder == UPSTREAM and not self._change_super_load(+1, now):
                continue
            client.running[piece] = holder
            assignments.append(Assignment(piece, holder))
            self._emit(now, "assign", cid, piece, holder, True)
            if len(client.running) >= limit:
                break
        if not assignments:
            return Decision(PieceOutcome.NO_HOLDER)
        return Decision(PieceOutcome.ASSIGNED, tuple(assignments))

    def _peer_for(self, cid: str, piece: int) -> str:
        holders = self._holders.get(piece, {})
        order = list(holders)
        self._rng.shuffle(order)  # Go map iteration order
        blacklist = self._peers[cid].blacklist
        for holder in order:
            peer = self._peers.get(holder)
            if peer is None or peer.down or peer.service_errors >= self.config.elimination_limit:
                del holders[holder]
                continue
            if holder in blacklist:
                continue
            if peer.load + 1 <= self.config.up_limit:
                peer.load += 1
                return holder
        return UPSTREAM

    def _change_super_load(self, delta: int, now: float) -> bool:
        """v1's UpdateSuperLoad: +1 fails above the limit; -1 always applies (even below 0)."""
        if delta > 0 and self._super_load + delta > self.config.upstream_limit:
            return False
        self._super_load += delta
        self._super_changed = now
        return True

    def _emit(
        self, now: float, event: str, cid: str, piece: int, holder: str | None, ok: bool
    ) -> None:
        if self._trace is not None:
            who = "super" if holder == UPSTREAM else holder
            self._trace(
                {"t": round(now, 4), "ev": event, "cid": cid, "piece": piece, "holder": who,
                 "ok": ok, "super_load": self._super_load}
            )  # fmt: skip


def file_trace(stream: TextIO) -> Trace:
    lock = threading.Lock()

    def write(record: dict[str, Any]) -> None:
        with lock:
            stream.write(json.dumps(record) + "\n")
            stream.flush()

    return write


def main(argv: list[str] | None = None) -> int:
    """``dfget supernode`` with v1.0.6 scheduling; ``--trace FILE`` first if wanted."""
    from dfget.cli import supernode
    from dfget.supernode import run
    from dfget.supernode.options import SupernodeOptions

    args = list(sys.argv[1:] if argv is None else argv)
    trace_path = Path(args[1]) if args[:1] == ["--trace"] else None
    if trace_path is not None:
        args = args[2:]
    options = SupernodeOptions(**supernode.make_context("supernode", args).params)
    with contextlib.ExitStack() as stack:
        trace: Trace | None = None
        if trace_path is not None:
            trace = file_trace(stack.enter_context(trace_path.open("a", encoding="utf-8")))

        def factory(count: int | None, config: SchedulerConfig, seed: int | None) -> Any:
            return V1Scheduler(count, config, seed, trace)

        return run(options, scheduler_factory=factory)


if __name__ == "__main__":
    sys.exit(main())
