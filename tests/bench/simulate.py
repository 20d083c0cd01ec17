"""Fleet-scale simulation: N dfget nodes pulling one blob, driven by the real supernode scheduler.

Run from the repository root:

    python -m tests.bench.simulate                                   # the README table
    python -m tests.bench.simulate --nodes 100,1000,10000 --size-gib 1 --node-gbps 10 \\
        --origin-gbps 1 --pattern local,source --policy ours,v1
    python -m tests.bench.simulate --nodes 2000 --waves 4 --wave-gap 5 --fail 0.05
    python -m tests.bench.simulate --validate --measured fanout.json  # vs tests/bench/fanout.py

A discrete-event simulation, no network: every decision comes from
:class:`dfget.supernode.scheduler.Scheduler`, configured and fed the way the supernode does
it in dfget/supernode/cdn_copy.py and reports.py (``mark_ready`` as CDN pieces land in the local
pattern, ``mark_all_ready`` at the first registration in the source pattern, ``report`` for
every piece result, ``upstream_when_busy`` only in the local pattern, the same limits).

Each node mirrors the pull loop of :mod:`dfget.download.pull_session`: it registers and pulls
at once; a pull carries one piece result; after a pull that started pieces, or with results
waiting, it pulls again at once; after a 602 it waits 50-100 ms doubling up to 0.8-1.6 s (reset
when a piece lands); after a 601 without pieces it waits 2 s; any wait ends early when a piece
lands. A landed piece is reported at once (``/peer/piece/suc``) and again by the next pull. A
piece that fails five times sends the node to the origin for everything it lacks (p2p's
fallback).

Bandwidth, a fluid model recomputed at every flow start and end: each transfer crosses the
holder's upload link (a peer's NIC, the supernode's CDN egress, or the origin) and the node's
download link; its rate is the smaller of the two equal shares (link capacity / flows on it).
That is max-min fairness without redistribution: capacity a flow leaves unused at one end is not
handed to the other flows there, so rates are a slight underestimate when ends are unbalanced.
Only the flows on the two links touched by an event are re-timed, which keeps an event O(up_limit
+ down_limit). In the local pattern the CDN fills piece after piece from the origin at the origin
cap (or ``fill``, its one connection's rate), each piece marked ready as it lands.

Failures: ``--fail F`` crashes that fraction of nodes, each right after a random number of its
pieces landed. Its downloads vanish unreported (the scheduler forgets them after
``silence_timeout``), its uploads fail at once (the downloader reports the failure, which
blacklists the holder), and nodes later sent to it fail after ``--dead-connect`` seconds
(connection refused). No ``service_down`` is sent: that is what a crash looks like.

Counted supernode requests: one registration and one ``/task/metrics`` per node, one
``/peer/task`` per pull, one ``/peer/piece/suc`` per stored piece; "req/s" is their number per
second of makespan, and in the busiest second. By default the supernode answers at once;
``--supernode-rps R`` makes it answer one request after another at R per second (a FIFO queue:
a pull's decision is taken when its turn comes, success reports wait their turn too), which is
what bounds a fleet long before the scheduler does. The CPU time of every ``schedule`` call is
measured (``time.thread_time``, so other processes on the machine do not inflate it);
``--scale`` adds a stress test of one task with N holders that all hold every piece: memory
per task (tracemalloc) and decision time with idle and with ~99 % saturated holders.

``--validate`` simulates tests/bench/fanout.py's setup (N = 4 and 8 nodes on this machine,
512 MiB, origin 50 MB/s) and compares with its ``--json`` rows: one node's rate comes from one
real peer-to-peer pull (or ``--node-mbps``), all transfers together share ``--machine-mbps``
(the nodes share two cores), and fanout.py's N = 1 rows give the start-up time and the CDN
fill's single-connection rate.

Runs go to ``--jobs`` processes (default: one per core); results do not depend on it.

Not a pytest module: nothing here is named test_*.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import json
import os
import random
import statistics
import sys
import time
import tracemalloc
from array import array
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dfget.download.pull_session import MAX_PIECE_FAILURES
from dfget.protocol.pieces import FRAME_OVERHEAD, piece_count, piece_data_len, piece_size_for_length
from dfget.supernode.scheduler import Scheduler
from dfget.supernode.scheduling import UPSTREAM, PieceOutcome, SchedulerConfig

MB = 1_000_000
MiB = 1024 * 1024
GiB = 1024 * MiB
GBIT = 1e9 / 8  # bytes per second of one Gbit/s

LIMITED_WAIT = 2.0  # p2p: 601 without pieces while pieces run
BACKOFF_FIRST = 0.05
BACKOFF_CAP = 0.8

# event kinds
_ARRIVE, _PULL, _FLOW, _REFUSED, _ANSWER, _REGISTERED, _SUC = range(7)
# flow kinds
_PEER, _UPSTREAM, _FILL, _FALLBACK = 0, 1, 2, 3


@dataclass(frozen=True)
class SimConfig:
    nodes: int = 100
    size: int = GiB
    """Raw blob size in bytes."""
    node_down: float = 10 * GBIT
    node_up: float = 10 * GBIT
    origin: float = 1 * GBIT
    cdn: float | None = None
    """CDN egress (local pattern); default: one node's upload bandwidth (the supernode's NIC)."""
    fill: float | None = None
    """Rate of the CDN's one origin connection (local pattern); default: the origin cap."""
    machine: float | None = None
    """Aggregate cap of every transfer: all nodes on one machine (--validate)."""
    pattern: str = "local"
    policy: str = "ours"
    waves: int = 1
    wave_gap: float = 0.0
    spread: float = 0.0
    """Arrivals of one wave are spread uniformly over this many seconds."""
    startup: float = 0.0
    """Seconds from a node's start to its registration (process start, peer server spawn);
    counted in its completion time."""
    fail: float = 0.0
    dead_connect: float = 0.05
    supernode_rps: float = 0.0
    """Requests per second the supernode answers, one at a time in arrival order; 0: unbounded."""
    seed: int = 1
    max_events: int = 200_000_000
    max_wall: float = 900.0
    max_sim_time: float = 7200.0


@dataclass
class SimResult:
    config: SimConfig
    pieces: int
    piece_size: int
    makespan: float = 0.0
    completion: list[float] = field(default_factory=list)
    origin_bytes: int = 0
    upstream_bytes: int = 0
    """Bytes peers got from the upstream holder (the CDN, or the origin in the source pattern)."""
    peer_bytes: int = 0
    fallback_bytes: int = 0
    requests: dict[str, int] = field(default_factory=dict)
    peak_rps: int = 0
    schedule_calls: int = 0
    schedule_seconds: float = 0.0
    schedule_p99: float = 0.0
    schedule_max: float = 0.0
    crashed: int = 0
    fallbacks: int = 0
    unfinished: int = 0
    truncated: str = ""
    events: int = 0
    wall: float = 0.0
    last_request: float = 0.0

    def percentile(self, q: float) -> float:
        return _percentile(self.completion, q)

    @property
    def origin_copies(self) -> float:
        return self.origin_bytes / self.config.size

    @property
    def upstream_copies(self) -> float:
        return self.upstream_bytes / self.config.size

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    @property
    def rps(self) -> float:
        span = max(self.makespan, self.last_request)
        return self.total_requests / span if span else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "nodes": self.config.nodes,
            "pattern": self.config.pattern,
            "policy": self.config.policy,
            "makespan": self.makespan,
            "p50": self.percentile(0.5),
            "p99": self.percentile(0.99),
            "origin_copies": self.origin_copies,
            "upstream_copies": self.upstream_copies,
            "requests": dict(self.requests),
            "rps": self.rps,
            "peak_rps": self.peak_rps,
            "schedule_mean_us": 1e6 * self.schedule_seconds / max(self.schedule_calls, 1),
            "schedule_p99_us": 1e6 * self.schedule_p99,
            "crashed": self.crashed,
            "fallbacks": self.fallbacks,
            "unfinished": self.unfinished,
            "truncated": self.truncated,
            "wall": self.wall,
        }


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def scheduler_config(pattern: str, policy: str) -> SchedulerConfig:
    """What `dfget supernode` uses (SupernodeOptions.scheduler_config), or the v1-like policy.

    v1-like: the upstream holder whenever no peer is free (busy or blacklisted holders included,
    in both patterns), and no single-fetcher rule (``fetch_wait=0``): several clients fetch the
    same piece upstream at once. The v1 limits (4 down, 5 up, 4 upstream per task) stay.
    """
    if policy == "ours":
        return SchedulerConfig(upstream_when_busy=pattern == "local")
    if policy == "v1":
        return SchedulerConfig(upstream_when_busy=True, fetch_wait=0.0)
    raise ValueError(f"unknown policy {policy!r}")


class Link:
    __slots__ = ("cap", "flows")

    def __init__(self, cap: float) -> None:
        self.cap = cap
        self.flows: dict[int, Flow] = {}


class Flow:
    __slots__ = (
        "fid",
        "kind",
        "links",
        "node",
        "piece",
        "holder",
        "size",
        "left",
        "rate",
        "last",
        "version",
    )

    def __init__(
        self,
        fid: int,
        kind: int,
        links: tuple[Link, ...],
        node: int,
        piece: int,
        holder: str,
        size: int,
        now: float,
    ) -> None:
        self.fid = fid
        self.kind = kind
        self.links = links
        self.node = node
        self.piece = piece
        self.holder = holder
        self.size = size
        self.left = float(size)
        self.rate = 0.0
        self.last = now
        self.version = 0


class Node:
    __slots__ = (
        "index",
        "cid",
        "arrive",
        "up",
        "down",
        "alive",
        "finish",
        "pending",
        "last_report",
        "in_flight",
        "failures",
        "backoff",
        "token",
        "waiting",
        "done",
        "die_after",
        "fallback",
    )

    def __init__(self, index: int, arrive: float, up: Link, down: Link) -> None:
        self.index = index
        self.cid = f"n{index}"
        self.arrive = arrive
        self.up = up
        self.down = down
        self.alive = True
        self.finish: float | None = None
        self.pending: deque[tuple[int, str, bool]] = deque()
        self.last_report: tuple[int, str, bool] | None = None
        self.in_flight: dict[int, Flow | str] = {}
        """Running pieces: their transfer, or the holder of a connection being refused."""
        self.failures: dict[int, int] = {}
        self.backoff = BACKOFF_FIRST
        self.token = 0
        self.waiting = False
        self.done = 0
        self.die_after = -1
        self.fallback = False


class Simulation:
    def __init__(self, config: SimConfig) -> None:
        self.cfg = config
        self.local = config.pattern == "local"
        if config.pattern not in ("local", "source"):
            raise ValueError(f"unknown pattern {config.pattern!r}")
        self.piece_size = piece_size_for_length(config.size)
        self.pieces = piece_count(config.size, self.piece_size, wrapped=self.local)
        overhead = FRAME_OVERHEAD if self.local else 0
        self.piece_bytes = [
            piece_data_len(k, config.size, self.piece_size, self.local) + overhead
            for k in range(self.pieces)
        ]
        self.raw_bytes = [
            piece_data_len(k, config.size, self.piece_size, self.local) for k in range(self.pieces)
        ]
        self.rng = random.Random(config.seed)
        self.sched = Scheduler(
            self.pieces, scheduler_config(config.pattern, config.policy), config.seed
        )
        self.origin = Link(config.origin)
        cdn = config.cdn if config.cdn is not None else config.node_up
        self.cdn_out = Link(cdn) if self.local else self.origin
        self.cdn_in = Link(min(cdn, config.fill) if config.fill else cdn)
        self.machine = Link(config.machine) if config.machine else None
        self.events: list[tuple[float, int, int, Any, int]] = []
        self.seq = 0
        self.fid = 0
        self.nodes: list[Node] = []
        self.by_cid: dict[str, Node] = {}
        self.cdn_started = False
        self.cdn_done = not self.local
        self.result = SimResult(config, self.pieces, self.piece_size)
        self.requests = {"register": 0, "pull": 0, "piece_suc": 0, "metrics": 0}
        self.per_second: dict[int, int] = {}
        self.timings = array("d")
        self.remaining = 0
        self.service = 1.0 / config.supernode_rps if config.supernode_rps > 0 else 0.0
        self.free_at = 0.0
        self._arrivals()

    # ---- set-up ----------------------------------------------------------------------------

    def _arrivals(self) -> None:
        cfg = self.cfg
        waves = max(1, min(cfg.waves, cfg.nodes))
        crash = set(self.rng.sample(range(cfg.nodes), round(cfg.fail * cfg.nodes)))
        for index in range(cfg.nodes):
            wave = index * waves // cfg.nodes
            arrive = wave * cfg.wave_gap + (self.rng.uniform(0, cfg.spread) if cfg.spread else 0.0)
            node = Node(index, arrive, Link(cfg.node_up), Link(cfg.node_down))
            if index in crash and self.pieces > 1:
                node.die_after = self.rng.randint(1, self.pieces - 1)
            self.nodes.append(node)
            self.by_cid[node.cid] = node
            self._push(arrive + cfg.startup, _ARRIVE, node, 0)
        self.remaining = cfg.nodes

    def _push(self, when: float, kind: int, obj: Any, tag: int) -> None:
        self.seq += 1
        heapq.heappush(self.events, (when, self.seq, kind, obj, tag))

    def _count(self, kind: str, now: float) -> None:
        self.requests[kind] += 1
        self.result.last_request = now
        second = int(now)
        self.per_second[second] = self.per_second.get(second, 0) + 1

    def _served(self, now: float) -> float:
        """When the supernode has answered a request sent at ``now`` (FIFO, one at a time)."""
        self.free_at = max(now, self.free_at) + self.service
        return self.free_at

    # ---- the run ---------------------------------------------------------------------------

    def run(self) -> SimResult:
        cfg = self.cfg
        started = time.monotonic()
        events = 0
        now = 0.0
        heap = self.events
        while heap and self.remaining > 0:
            now, _, kind, obj, tag = heapq.heappop(heap)
            events += 1
            if kind == _FLOW:
                if tag == obj.version:  # otherwise re-timed since, or gone
                    self._flow_done(obj, now)
            elif kind in (_PULL, _ANSWER):
                if tag == obj.token and obj.alive and obj.finish is None:
                    if kind == _PULL and self.service:
                        obj.waiting = False  # the request is on its way: wait for the answer
                        self._push(self._served(now), _ANSWER, obj, obj.token)
                    else:
                        self._pull(obj, now)
            elif kind == _ARRIVE:
                if self.service:
                    self._push(self._served(now), _REGISTERED, obj, 0)
                else:
                    self._arrive(obj, now)
            elif kind == _REGISTERED:
                self._arrive(obj, now)
            elif kind == _SUC:
                self._count("piece_suc", now)
                self.sched.report(obj[0], obj[1], obj[2], True, now)
            else:
                self._refused(obj, tag, now)
            if events % 65536 == 0:
                if events >= cfg.max_events:
                    self.result.truncated = f"stopped after {events} events"
                    break
                if time.monotonic() - started > cfg.max_wall:
                    self.result.truncated = f"stopped after {cfg.max_wall:.0f} s of wall time"
                    break
                if now > cfg.max_sim_time:
                    self.result.truncated = f"stopped at simulated {now:.0f} s"
                    break
        return self._finish_result(events, time.monotonic() - started)

    def _finish_result(self, events: int, wall: float) -> SimResult:
        res = self.result
        res.events = events
        res.wall = wall
        ends = [(n.finish, n.arrive) for n in self.nodes if n.finish is not None]
        res.completion = [end - arrive for end, arrive in ends]
        res.makespan = max((end for end, _ in ends), default=0.0)
        res.crashed = sum(1 for n in self.nodes if not n.alive)
        res.unfinished = sum(1 for n in self.nodes if n.alive and n.finish is None)
        res.fallbacks = sum(1 for n in self.nodes if n.fallback)
        res.requests = dict(self.requests)
        res.peak_rps = max(self.per_second.values(), default=0)
        res.schedule_calls = len(self.timings)
        res.schedule_seconds = sum(self.timings)
        if self.timings:
            ordered = sorted(self.timings)
            res.schedule_p99 = ordered[int(0.99 * (len(ordered) - 1))]
            res.schedule_max = ordered[-1]
        return res

    # ---- nodes -----------------------------------------------------------------------------

    def _arrive(self, node: Node, now: float) -> None:
        self._count("register", now)
        self.sched.add_client(node.cid, serves=True)
        if not self.cdn_started:
            self.cdn_started = True
            if self.local:
                self._fill(0, now)
            else:
                self.sched.mark_all_ready()
        node.token += 1
        self._push(now, _PULL, node, node.token)  # the first pull is a request of its own

    def _pull(self, node: Node, now: float) -> None:
        """One GET /peer/task: the result it carries, then the decision; then p2p's wait rule."""
        node.token += 1
        node.waiting = False
        sched = self.sched
        if node.pending:
            node.last_report = node.pending.popleft()
        report = node.last_report
        if report is not None:
            piece, holder, success = report
            sched.report(node.cid, piece, holder, success, now)
        self._count("pull", now)
        tick = time.thread_time()
        decision = sched.schedule(node.cid, now)
        self.timings.append(time.thread_time() - tick)
        outcome = decision.outcome
        if outcome is PieceOutcome.FINISHED and self.cdn_done:
            self._done(node, now)
            return
        started = 0
        if outcome is PieceOutcome.ASSIGNED:
            for item in decision.assignments:
                self._start(node, item.piece, item.holder, now)
                started += 1
        if node.pending or started:
            self._push(now, _PULL, node, node.token)
            return
        if outcome is PieceOutcome.LIMITED and node.in_flight:
            wait = LIMITED_WAIT
        else:
            wait = self.rng.uniform(node.backoff, 2 * node.backoff)
            node.backoff = min(2 * node.backoff, BACKOFF_CAP)
        node.waiting = True
        self._push(now + wait, _PULL, node, node.token)

    def _wake(self, node: Node, now: float) -> None:
        """A result landed while the node waited in its drain: it pulls now."""
        if node.waiting:
            node.waiting = False
            node.token += 1
            self._push(now, _PULL, node, node.token)

    def _done(self, node: Node, now: float) -> None:
        node.finish = now
        # /task/metrics: nobody waits for it, but it takes its turn
        self._count("metrics", self._served(now) if self.service else now)
        self.remaining -= 1

    def _start(self, node: Node, piece: int, holder: str, now: float) -> None:
        if holder == UPSTREAM:
            links: tuple[Link, ...] = (self.cdn_out, node.down)
            kind = _UPSTREAM
        else:
            source = self.by_cid[holder]
            if not source.alive:
                node.in_flight[piece] = holder
                self._push(now + self.cfg.dead_connect, _REFUSED, node, piece)
                return
            links = (source.up, node.down)
            kind = _PEER
        if self.machine is not None:
            links += (self.machine,)
        node.in_flight[piece] = self._add(
            kind, links, node.index, piece, holder, self.piece_bytes[piece], now
        )

    def _refused(self, node: Node, piece: int, now: float) -> None:
        holder = node.in_flight.get(piece)
        if node.alive and isinstance(holder, str):
            del node.in_flight[piece]
            self._failed(node, piece, holder, now)

    def _failed(self, node: Node, piece: int, holder: str, now: float) -> None:
        count = node.failures[piece] = node.failures.get(piece, 0) + 1
        if count >= MAX_PIECE_FAILURES:
            self._fall_back(node, now)
            return
        node.pending.appendleft((piece, holder, False))
        self._wake(node, now)

    def _fall_back(self, node: Node, now: float) -> None:
        """p2p gives up: cancel the piece fetches, fetch what is missing from the origin."""
        node.fallback = True
        node.token += 1
        node.waiting = False
        for flow in list(node.in_flight.values()):
            if isinstance(flow, Flow):
                self._remove(flow, now)
        node.in_flight.clear()
        missing = self.cfg.size * (self.pieces - node.done) // self.pieces
        links: tuple[Link, ...] = (self.origin, node.down)
        if self.machine is not None:
            links += (self.machine,)
        node.in_flight[-1] = self._add(_FALLBACK, links, node.index, -1, "", max(missing, 1), now)

    def _crash(self, node: Node, now: float) -> None:
        node.alive = False
        node.token += 1
        node.pending.clear()
        for flow in list(node.in_flight.values()):
            if isinstance(flow, Flow):
                self._remove(flow, now)
        node.in_flight.clear()
        for flow in list(node.up.flows.values()):
            self._remove(flow, now)
            victim = self.nodes[flow.node]
            victim.in_flight.pop(flow.piece, None)
            self._failed(victim, flow.piece, node.cid, now)
        self.remaining -= 1

    # ---- transfers -------------------------------------------------------------------------

    def _fill(self, piece: int, now: float) -> None:
        """The CDN fetches the next piece from the origin."""
        links: tuple[Link, ...] = (self.origin, self.cdn_in)
        if self.machine is not None:
            links += (self.machine,)
        self._add(_FILL, links, -1, piece, "", self.raw_bytes[piece], now)

    def _add(
        self,
        kind: int,
        links: tuple[Link, ...],
        node: int,
        piece: int,
        holder: str,
        size: int,
        now: float,
    ) -> Flow:
        self.fid += 1
        flow = Flow(self.fid, kind, links, node, piece, holder, size, now)
        for link in links:
            link.flows[flow.fid] = flow
        self._retime_links(links, now)
        return flow

    def _remove(self, flow: Flow, now: float) -> None:
        for link in flow.links:
            del link.flows[flow.fid]
        flow.version = -1  # its heap entries are stale
        self._retime_links(flow.links, now)

    def _retime_links(self, links: tuple[Link, ...], now: float) -> None:
        seen: set[int] = set()
        for link in links:
            for flow in link.flows.values():
                if flow.fid not in seen:
                    seen.add(flow.fid)
                    self._retime(flow, now)

    def _retime(self, flow: Flow, now: float) -> None:
        rate = float("inf")
        for link in flow.links:
            share = link.cap / len(link.flows)
            if share < rate:
                rate = share
        if rate == flow.rate:
            return
        flow.left -= flow.rate * (now - flow.last)
        if flow.left < 0.0:
            flow.left = 0.0
        flow.last = now
        flow.rate = rate
        flow.version += 1
        self.seq += 1
        heapq.heappush(self.events, (now + flow.left / rate, self.seq, _FLOW, flow, flow.version))

    def _flow_done(self, flow: Flow, now: float) -> None:
        self._remove(flow, now)
        if flow.kind == _FILL:
            self.result.origin_bytes += flow.size
            self.sched.mark_ready(flow.piece)
            if flow.piece + 1 < self.pieces:
                self._fill(flow.piece + 1, now)
            else:
                self.cdn_done = True
            return
        node = self.nodes[flow.node]
        if flow.kind == _FALLBACK:
            self.result.origin_bytes += flow.size
            self.result.fallback_bytes += flow.size
            node.in_flight.clear()
            self._done(node, now)
            return
        if flow.kind == _UPSTREAM:
            self.result.upstream_bytes += flow.size
            if not self.local:
                self.result.origin_bytes += flow.size
        else:
            self.result.peer_bytes += flow.size
        node.in_flight.pop(flow.piece, None)
        if self.service:  # /peer/piece/suc from p2p's reporter thread: nobody waits for it
            self._push(self._served(now), _SUC, (node.cid, flow.piece, flow.holder), 0)
        else:
            self._count("piece_suc", now)
            self.sched.report(node.cid, flow.piece, flow.holder, True, now)
        node.done += 1
        node.backoff = BACKOFF_FIRST
        node.pending.append((flow.piece, flow.holder, True))
        if node.done == node.die_after:
            self._crash(node, now)
            return
        self._wake(node, now)


def simulate(config: SimConfig) -> SimResult:
    gc_was = gc.isenabled()
    gc.disable()  # many small long-lived objects: the cyclic collector only costs time here
    try:
        return Simulation(config).run()
    finally:
        if gc_was:
            gc.enable()


# ---- the scale test --------------------------------------------------------------------------


@dataclass
class ScaleResult:
    holders: int
    pieces: int
    memory: int
    """Bytes traced while building the task's scheduler state (tracemalloc)."""
    free_us: float
    busy_us: float
    busy_max_us: float


def scale(holders: int, pieces: int, seed: int = 1, policy: str = "ours") -> ScaleResult:
    """One task with ``holders`` clients holding every piece: memory, and decision time for a
    fresh client when holders are idle and when almost all of them are saturated."""
    config = scheduler_config("local", policy)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    sched = Scheduler(pieces, config, seed)
    for piece in range(pieces):
        sched.mark_ready(piece)
    for index in range(holders):
        cid = f"n{index}"
        sched.add_client(cid)
        for piece in range(pieces):
            sched.report(cid, piece, UPSTREAM, True, 0.0)
    memory = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()

    def timed_decisions(prefix: str, count: int) -> list[float]:
        spent = []
        for index in range(count):
            cid = f"{prefix}{index}"
            sched.add_client(cid)
            tick = time.thread_time()
            sched.schedule(cid, 1.0)
            spent.append(time.thread_time() - tick)
        return spent

    free = timed_decisions("f", 200)
    # Saturate: downloaders take all but ~1 % of the upload slots, then time fresh clients.
    free_slots = config.up_limit * holders
    started = time.monotonic()
    for index in range(free_slots):
        if free_slots <= holders // 100 + 1 or time.monotonic() - started > 300:
            break
        cid = f"d{index}"
        sched.add_client(cid)
        taken = sum(item.holder != UPSTREAM for item in sched.schedule(cid, 1.0).assignments)
        if not taken:
            break
        free_slots -= taken
    busy = timed_decisions("b", 200)
    return ScaleResult(
        holders,
        pieces,
        memory,
        1e6 * statistics.median(free),
        1e6 * statistics.median(busy),
        1e6 * max(busy),
    )


# ---- reports ---------------------------------------------------------------------------------


def table(results: list[SimResult]) -> str:
    capped = any(r.config.supernode_rps for r in results)
    head = "| N | pattern | policy |" + (" supernode answers |" if capped else "")
    lines = [
        head + " makespan (s) | node p50 / p99 (s) | origin copies | CDN copies "
        "| supernode req/s (mean / peak) | schedule µs (mean / p99) | ok |",
        "|---:|---|---|" + ("---:|" if capped else "") + "---:|---:|---:|---:|---:|---:|---|",
    ]
    for res in results:
        cfg = res.config
        cdn = f"{res.upstream_copies:.2f}" if cfg.pattern == "local" else "-"
        ok = "yes" if not res.unfinished and not res.truncated else f"NO ({res.unfinished} left)"
        if res.crashed:
            ok += f", {res.crashed} crashed"
        if res.fallbacks:
            ok += f", {res.fallbacks} to source"
        mean_us = 1e6 * res.schedule_seconds / max(res.schedule_calls, 1)
        policy = "v1-like" if cfg.policy == "v1" else "ours"
        cap = ""
        if capped:
            cap = f" {cfg.supernode_rps:,.0f} req/s |" if cfg.supernode_rps else " unbounded |"
        lines.append(
            f"| {cfg.nodes:,} | {cfg.pattern} | {policy} |{cap} {res.makespan:.1f} "
            f"| {res.percentile(0.5):.1f} / {res.percentile(0.99):.1f} "
            f"| {res.origin_copies:.2f} | {cdn} | {res.rps:,.0f} / {res.peak_rps:,} "
            f"| {mean_us:.0f} / {1e6 * res.schedule_p99:.0f} | {ok} |"
        )
    return "\n".join(lines)


def heading(cfg: SimConfig, pieces: int, piece_size: int) -> str:
    waves = f", {cfg.waves} waves {cfg.wave_gap:g} s apart" if cfg.waves > 1 else ", all at once"
    fail = f", {cfg.fail:.0%} of nodes crash mid-download" if cfg.fail else ""
    cdn = cfg.cdn if cfg.cdn is not None else cfg.node_up
    return (
        f"Simulated: {cfg.size / GiB:g} GiB blob ({pieces} pieces of {piece_size / MiB:g} MiB), "
        f"nodes {_rate(cfg.node_down)} down / {_rate(cfg.node_up)} up, origin {_rate(cfg.origin)}, "
        f"CDN egress {_rate(cdn)}{waves}{fail}; seed {cfg.seed}"
    )


def _rate(bps: float) -> str:
    return f"{bps / GBIT:g} Gbit/s" if bps >= GBIT / 10 else f"{bps / MB:g} MB/s"


def scale_table(rows: list[ScaleResult]) -> str:
    lines = [
        "| holders | pieces | memory per task | per holder | decision µs, idle holders "
        "| decision µs, ~99% saturated (median / max) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.holders:,} | {row.pieces} | {row.memory / MiB:.1f} MiB "
            f"| {row.memory / row.holders / 1024:.1f} KiB | {row.free_us:.0f} "
            f"| {row.busy_us:.0f} / {row.busy_max_us:.0f} |"
        )
    return "\n".join(lines)


# ---- validation against tests/bench/fanout.py -------------------------------------------------


def calibrate(size_mib: int, workdir: Path | None) -> float:
    """One real fresh-peer pull from a peer that has the blob (tests/bench/p2p.py's setup):
    bytes per second of wall time, process start and digest check included."""
    from tests.bench import common, p2p

    common.require_tools((common.NGINX, "nginx-light"))
    docroot = common.random_docroot(size_mib, workdir, prefix="dfget-sim-calibrate-")
    with docroot as (root, data), common.nginx(root, data.parent) as port:
        bench = p2p.Bench(root, f"http://127.0.0.1:{port}/{data.name}", size_mib * MiB)
        try:
            bench.start_supernode()
            p2p.cold_pull(bench, data)
            command, _, out = bench.pull_command("p2")
            common.fresh(out)
            sample = common.timed(command, root, capture=True, timeout=p2p.PULL_TIMEOUT)
            bench.check_from(sample.stdout, common.peer_address(root / "p1"), {"peer"})
        finally:
            bench.stop()
    rate = size_mib * MiB / sample.wall
    log(f"calibration: one peer-to-peer pull of {size_mib} MiB at {rate / MB:.0f} MB/s")
    return rate


def validate(args: argparse.Namespace) -> str:
    """Simulate fanout.py's setup (512 MiB, origin 50 MB/s, N = 4 and 8, both patterns) and
    compare with its JSON rows when given.

    On one machine the nodes share its cores: each node gets the single-node rate (measured
    with --calibrate or given as --node-mbps), and all transfers together get --machine-mbps
    (default: the single-node rate, as one pull already keeps the cores busy)."""
    node = args.node_mbps * MB if args.node_mbps else calibrate(args.validate_mib, None)
    machine = args.machine_mbps * MB if args.machine_mbps else node
    measured: dict[tuple[int, str], dict[str, Any]] = {}
    for path in args.measured or ():
        for row in json.loads(path.read_text()):
            if row.get("case") in ("together", "curl"):
                measured[(int(row["nodes"]), row["pattern"])] = row
    size = args.validate_mib * MiB
    origin = args.validate_origin * MB
    # One connection gets less than the cap from the test origin (its bucket forgets the time
    # spent between sleeps): the CDN's fill runs at curl's N = 1 rate when that row is given.
    curl = measured.get((1, "direct"))
    fill = min(origin, size / curl["makespan"]) if curl else origin
    # What one node needs beyond the transfer (process and peer server start, registration,
    # the CDN's first bytes): from fanout.py's N = 1 rows when given, else --startup.
    one = {"local": size / fill, "source": size / origin}
    startup = {
        pattern: max(0.0, measured[(1, pattern)]["makespan"] - one[pattern])
        if (1, pattern) in measured
        else args.startup
        for pattern in ("local", "source")
    }
    lines = [
        f"Validation: {args.validate_mib} MiB blob, origin {args.validate_origin:g} MB/s, "
        f"node {node / MB:.0f} MB/s, all transfers on the machine {machine / MB:.0f} MB/s, "
        f"CDN fill {fill / MB:.0f} MB/s, start-up {startup['local']:.1f} s (local) / "
        f"{startup['source']:.1f} s (source)",
        "",
        "| N | pattern | simulated makespan | measured | diff | simulated origin/blob "
        "| measured | diff | simulated CDN copies | measured |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    worst = 0.0
    for n in (4, 8):
        for pattern in ("local", "source"):
            cfg = SimConfig(
                nodes=n,
                size=size,
                node_down=node,
                node_up=node,
                origin=origin,
                cdn=node,
                fill=fill,
                machine=machine,
                pattern=pattern,
                startup=startup[pattern],
                seed=args.seed,
            )
            res = simulate(cfg)
            row = measured.get((n, pattern))
            cdn = f"{res.upstream_copies:.2f}" if pattern == "local" else "-"
            if row is None:
                lines.append(
                    f"| {n} | {pattern} | {res.makespan:.1f} | - | - "
                    f"| {res.origin_copies:.2f} | - | - | {cdn} | - |"
                )
                continue
            real_cdn = row.get("by_kind", {}).get("cdn", 0) / size if pattern == "local" else None
            real_copies = row["origin_bytes"] / size
            d_make = res.makespan / row["makespan"] - 1
            d_copies = res.origin_copies / real_copies - 1 if real_copies else 0.0
            worst = max(worst, abs(d_make), abs(d_copies))
            lines.append(
                f"| {n} | {pattern} | {res.makespan:.1f} | {row['makespan']:.1f} "
                f"| {d_make:+.0%} | {res.origin_copies:.2f} | {real_copies:.2f} | {d_copies:+.0%} "
                f"| {cdn} | {'-' if real_cdn is None else f'{real_cdn:.2f}'} |"
            )
    if measured:
        verdict = "within" if worst <= 0.20 else "NOT within"
        lines += ["", f"largest difference {worst:.0%}: {verdict} the 20 % bar"]
    else:
        lines += [
            "",
            "no --measured FILE (tests/bench/fanout.py --json FILE): simulated figures only",
        ]
    return "\n".join(lines)


# ---- CLI -------------------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part]


def _floats(text: str) -> list[float]:
    return [float(part.replace("_", "")) for part in text.split(",") if part]


def _words(text: str) -> list[str]:
    return [part for part in text.split(",") if part]


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    ap.add_argument("--nodes", type=_ints, default=[100, 1000, 10000])
    ap.add_argument("--size-gib", type=float, default=1.0)
    ap.add_argument("--node-gbps", type=float, default=10.0, help="per-node down and up, Gbit/s")
    ap.add_argument("--origin-gbps", type=float, default=1.0)
    ap.add_argument("--cdn-gbps", type=float, help="CDN egress (default: --node-gbps)")
    ap.add_argument("--pattern", type=_words, default=["local", "source"], help="local,source")
    ap.add_argument("--policy", type=_words, default=["ours", "v1"], help="ours,v1")
    ap.add_argument("--waves", type=int, default=1)
    ap.add_argument("--wave-gap", type=float, default=0.0, help="seconds between waves")
    ap.add_argument("--spread", type=float, default=0.0, help="arrivals within a wave, seconds")
    ap.add_argument("--fail", type=float, default=0.0, help="fraction of nodes that crash")
    ap.add_argument("--dead-connect", type=float, default=0.05, help="seconds to fail a dead peer")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--supernode-rps",
        type=_floats,
        default=[0.0],
        help="requests/s one supernode answers, a list; 0 = unbounded (default)",
    )
    ap.add_argument("--max-wall", type=float, default=900.0, help="wall seconds per run")
    ap.add_argument(
        "--scale", type=_ints, default=[10000], help="scheduler stress test, holder counts"
    )
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs in parallel")
    ap.add_argument("--json", type=Path, help="also write the results as JSON")
    ap.add_argument("--validate", action="store_true", help="fanout.py's setup, N = 4 and 8")
    ap.add_argument(
        "--measured",
        type=Path,
        action="append",
        help="JSON written by tests/bench/fanout.py --json (repeatable; N = 1 rows calibrate)",
    )
    ap.add_argument("--startup", type=float, default=0.0, help="seconds before registering")
    ap.add_argument(
        "--node-mbps", type=float, help="--validate: one node's MB/s (default: measure one pull)"
    )
    ap.add_argument(
        "--machine-mbps", type=float, help="--validate: MB/s of all transfers (default: a node's)"
    )
    ap.add_argument("--validate-mib", type=int, default=512)
    ap.add_argument("--validate-origin", type=float, default=50.0, help="MB/s")
    return ap


def run(args: argparse.Namespace) -> str:
    if args.validate:
        return validate(args)
    base = SimConfig(
        size=int(args.size_gib * GiB),
        node_down=args.node_gbps * GBIT,
        node_up=args.node_gbps * GBIT,
        origin=args.origin_gbps * GBIT,
        cdn=args.cdn_gbps * GBIT if args.cdn_gbps else None,
        waves=args.waves,
        wave_gap=args.wave_gap,
        spread=args.spread,
        startup=args.startup,
        fail=args.fail,
        dead_connect=args.dead_connect,
        seed=args.seed,
        max_wall=args.max_wall,
    )
    configs = [
        replace(base, nodes=n, pattern=pattern, policy=policy, supernode_rps=rps)
        for rps in args.supernode_rps
        for n in args.nodes
        for pattern in args.pattern
        for policy in args.policy
    ]
    results = run_all(configs, args.jobs)
    pieces, piece_size = results[0].pieces, results[0].piece_size
    text = [heading(base, pieces, piece_size), "", table(results), "", LEGEND]
    rows: list[ScaleResult] = []
    for holders in args.scale or ():
        rows.append(scale(holders, pieces, args.seed))
        log(f"scale {holders}: done")
    if rows:
        text += ["", "Scheduler stress: one task, every holder has every piece", ""]
        text.append(scale_table(rows))
    if args.json:
        runs = [r.summary() for r in results]
        args.json.write_text(json.dumps({"runs": runs, "scale": [vars(r) for r in rows]}, indent=1))
    return "\n".join(text)


LEGEND = (
    "origin copies: origin bytes / blob size; CDN copies: bytes the supernode's CDN served / "
    "blob size (local pattern); requests: registrations, /peer/task pulls, /peer/piece/suc and "
    "/task/metrics, per second of makespan and in the busiest second; schedule µs: measured "
    "time of the real `Scheduler.schedule` calls"
)


def run_all(configs: list[SimConfig], jobs: int) -> list[SimResult]:
    """Each configuration in its own process when ``jobs`` > 1; results in the given order."""

    def done(res: SimResult) -> SimResult:
        cfg = res.config
        log(
            f"N={cfg.nodes} {cfg.pattern} {cfg.policy}"
            + (f" supernode {cfg.supernode_rps:g} req/s" if cfg.supernode_rps else "")
            + f": makespan {res.makespan:.1f} s, origin copies {res.origin_copies:.2f}, "
            f"{res.events:,} events in {res.wall:.1f} s"
            + (f" ({res.truncated})" if res.truncated else "")
        )
        return res

    if jobs <= 1 or len(configs) == 1:
        return [done(simulate(cfg)) for cfg in configs]
    # The biggest fleets first, so that the pool is not left waiting for one long run.
    order = sorted(range(len(configs)), key=lambda i: -configs[i].nodes)
    results: dict[int, SimResult] = {}
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(simulate, configs[i]): i for i in order}
        for future in as_completed(futures):
            results[futures[future]] = done(future.result())
    return [results[i] for i in range(len(configs))]


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    started = time.monotonic()
    print(run(args))
    print(f"(simulation took {time.monotonic() - started:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
