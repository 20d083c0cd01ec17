"""Piece scheduling for one task: which holder serves which piece to which client.

The v1 supernode sent clients back to itself (and, in the source-CDN pattern, to the origin)
far too eagerly: a second node fetched a whole layer from the registry although the first node
held every piece. This scheduler is built around the opposite rule:

* **Peers first.** A piece goes to the upstream holder (the supernode's CDN cache or, in the
  source pattern, the origin) only when no live peer holding it has upload capacity. With
  ``upstream_when_busy=False`` (source pattern) it does not even fall back when peers are merely
  busy: it waits for them.
* **One upstream fetch per piece.** While one client fetches a piece from upstream, others that
  need it wait for it to land on that client, for at most ``fetch_wait`` seconds; so each byte
  leaves the origin about once.
* **Rarest first**, least loaded holder first ("power of d choices" over a random sample, then a
  full scan only when the sample has nobody free). Among equally rare pieces, earlier windows of
  ``order_window`` pieces first, seeded randomness within a window: a client then completes
  its file roughly front to back, so its whole-file digest (sha256 hashes in file order) and
  ``-o -`` streaming keep pace with the download instead of waiting for its end.
* A holder that failed a client is blacklisted for that client; a holder that keeps failing is
  eliminated; a holder whose service went down is dropped at once. Upstream slots are released
  on success *and* failure (v1 leaked them on failure), and every running piece expires after
  ``running_timeout`` so a vanished client cannot pin slots.

The class is pure and deterministic, so a fleet-scale discrete-event simulation can drive it:
no I/O, no clock (callers pass ``now``), randomness only from its seeded ``random.Random``, and
every collection walked during a decision is insertion-ordered (no ``set`` iteration, whose order
depends on string hashing). A decision costs O(pieces + holders examined), and the holders examined
beyond the samples are capped by ``scan_limit``, so it stays well under a millisecond at 10,000
holders (tests/bench/simulate.py --scale measures it). Memory per task is about 12 bytes per
(holder, piece) plus a few hundred bytes per client.
"""

from __future__ import annotations

import enum
import heapq
import random
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

UPSTREAM = "\x00upstream"
"""Holder id of the supernode itself: its CDN cache, or the origin in the source pattern."""


class Outcome(enum.Enum):
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
    outcome: Outcome
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


@dataclass(slots=True)
class _Run:
    holder: str
    started: float
    seq: int


@dataclass(slots=True)
class _Client:
    """One downloading client, and (once it holds pieces) one holder."""

    done: bytearray
    serves: bool
    pos: array[int]
    """Per piece: this client's index in that piece's holder list, -1 when not listed (an array,
    not a dict per piece: 4 bytes per piece instead of ~50 at 10,000 holders)."""
    done_count: int = 0
    running: dict[int, _Run] = field(default_factory=dict)
    blacklist: set[str] = field(default_factory=set)
    errors: int = 0
    load: int = 0
    service_errors: int = 0
    last_seen: float = 0.0


class UnknownClient(KeyError):
    """The client was never added to this scheduler (or was removed)."""


class Scheduler:
    """Scheduling state of one task. Not thread-safe: callers serialise access."""

    def __init__(
        self,
        piece_count: int | None,
        config: SchedulerConfig | None = None,
        seed: int | None = None,
    ) -> None:
        self.config = config or SchedulerConfig()
        self._rng = random.Random(seed)
        self._count = piece_count
        self._size = 0
        self._ready = bytearray()
        self._ready_count = 0
        # Per piece its holders; one shared empty tuple until a piece has any, so a task's
        # state follows the pieces in play (a 64 GB task: 35 KB, not 280 KB of empty lists).
        self._holders: list[list[str] | tuple[()]] = []
        self._fetchers: dict[int, dict[str, float]] = {}
        self._upstream_load = 0
        self._clients: dict[str, _Client] = {}
        self._expiry: list[tuple[float, int, str, int]] = []
        self._seq = 0
        self._scan_left = 0
        if piece_count:
            self._grow(piece_count)

    # ---- task-level events -------------------------------------------------------------

    @property
    def piece_count(self) -> int | None:
        return self._count

    @property
    def ready_count(self) -> int:
        return self._ready_count

    @property
    def upstream_load(self) -> int:
        return self._upstream_load

    def set_piece_count(self, count: int) -> None:
        """Fix the piece total once it is known (unknown-length sources learn it at the end)."""
        self._grow(count)
        self._count = count

    def mark_ready(self, piece: int) -> None:
        """The upstream holder can serve ``piece`` (a CDN piece landed)."""
        self._grow(piece + 1)
        if not self._ready[piece]:
            self._ready[piece] = 1
            self._ready_count += 1

    def mark_all_ready(self) -> None:
        """Source pattern: the origin has every piece from the start."""
        if self._count is None:
            raise ValueError("piece count unknown")
        for piece in range(self._count):
            self.mark_ready(piece)

    def reset_ready(self) -> None:
        """The upstream copy is being rebuilt: nothing is ready upstream until it lands again."""
        self._ready = bytearray(self._size)
        self._ready_count = 0

    # ---- clients ---------------------------------------------------------------------------

    def add_client(self, cid: str, serves: bool = True) -> None:
        """Add a client (idempotent). ``serves``: it runs a peer server others can fetch from."""
        client = self._clients.get(cid)
        if client is None:
            pos = array("i", [-1]) * self._size
            self._clients[cid] = _Client(done=bytearray(self._size), serves=serves, pos=pos)
        elif client.serves != serves:
            client.serves = serves
            if serves:
                for piece in self._done_pieces(client):
                    self._add_holder(piece, cid, client)
            else:
                self._withdraw(cid, client)

    def done_count(self, cid: str) -> int:
        return self._client(cid).done_count

    def running(self, cid: str) -> dict[int, str]:
        """Pieces running for a client, with their holders (for inspection and tests)."""
        return {piece: run.holder for piece, run in self._client(cid).running.items()}

    def holders(self, piece: int) -> list[str]:
        return list(self._holders[piece]) if piece < self._size else []

    def load(self, cid: str) -> int:
        """Current upload load of a holder."""
        return self._client(cid).load

    def service_down(self, cid: str) -> bool:
        """The client's peer server went away: stop handing it out at once."""
        client = self._clients.get(cid)
        if client is None:
            return False
        client.serves = False
        self._withdraw(cid, client)
        return True

    def stop_running(self, cid: str) -> None:
        """The client ended its download (it reported the result, or gave up): the pieces it
        was fetching will never be reported, so others need not wait for them."""
        client = self._clients.get(cid)
        if client is None:
            return
        for piece, run in client.running.items():
            self._release(cid, piece, run)
        client.running.clear()

    def remove_client(self, cid: str) -> None:
        """Forget a client entirely (garbage collection)."""
        client = self._clients.get(cid)
        if client is None:
            return
        self._withdraw(cid, client)
        for piece, run in client.running.items():
            self._release(cid, piece, run)
        del self._clients[cid]

    # ---- reports ---------------------------------------------------------------------------

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
        """A client's result for a piece; returns True when the piece is newly stored.

        Success arrives twice from Go dfget (``/peer/task`` with result 503 and
        ``/peer/piece/suc``) in either order; both are idempotent, and either one makes the
        client a holder (``announce``, true for ``/peer/piece/suc``, matters only to v1, which
        adds holders from that report alone). ``holder`` is None when the reporting client
        named an unknown holder.
        """
        self._expire(now)
        client = self._client(cid)
        client.last_seen = max(client.last_seen, now)
        if not 0 <= piece < self._size:
            return False
        if announce and holder == cid:
            # A piece the client is still fetching from upstream, announced early for v1's
            # sake (dfget/download/p2p.py, _announce_early). Here others already wait for it
            # (fetch_wait) and get it from this client once it is reported stored.
            return False
        run = client.running.get(piece)
        if success:
            if run is not None:
                self._release(cid, piece, client.running.pop(piece))
            if client.done[piece]:
                return False
            client.done[piece] = 1
            client.done_count += 1
            client.errors = 0
            source = self._clients.get(holder) if holder is not None else None
            if source is not None:
                source.service_errors = 0
            if client.serves:
                self._add_holder(piece, cid, client)
            return True
        # A failure only counts for the run it belongs to: Go dfget may repeat a stale result.
        if run is None or (holder is not None and run.holder != holder):
            return False
        self._release(cid, piece, client.running.pop(piece))
        if holder is not None and not client.done[piece]:
            self._penalise(cid, client, holder)
        return False

    def piece_error(self, cid: str, holder: str) -> None:
        """A client reported that ``holder`` lacks a piece or served a corrupt one."""
        client = self._clients.get(cid)
        if client is not None and holder != UPSTREAM and holder in self._clients:
            client.blacklist.add(holder)

    # ---- the decision ----------------------------------------------------------------------

    def schedule(self, cid: str, now: float) -> Decision:
        """Pieces for a client to fetch next, each with the holder to fetch it from."""
        self._expire(now)
        client = self._client(cid)
        client.last_seen = now
        if self._count is not None and client.done_count >= self._count:
            return Decision(Outcome.FINISHED)
        done, ready, holders = client.done, self._ready, self._holders
        if len(client.running) >= self.config.down_limit:
            # Only whether anything is available matters: no candidates to rank.
            for piece in range(self._size):
                if not done[piece] and (ready[piece] or holders[piece]):
                    return Decision(Outcome.LIMITED)
            return Decision(Outcome.NOTHING_AVAILABLE)
        upstream_full = self._upstream_load >= self.config.upstream_limit
        candidates: list[tuple[int, int, float, int]] = []
        window = self.config.order_window
        needed = blocked = False
        for piece in range(self._size):
            held = holders[piece]
            if done[piece] or not (held or ready[piece]):
                continue
            needed = True
            if piece in client.running:
                continue
            fetchers = self._fetchers.get(piece)
            if not held and (upstream_full or self._fetched_by_others(cid, fetchers, now)):
                blocked = True  # only upstream has it, and upstream cannot take it now
                continue
            rarity = len(held) + (len(fetchers) if fetchers else 0)
            candidates.append((rarity, piece // window, self._rng.random(), piece))
        if not needed:
            return Decision(Outcome.NOTHING_AVAILABLE)
        if not candidates:
            return Decision(Outcome.NO_HOLDER if blocked else Outcome.ALL_RUNNING)
        heapq.heapify(candidates)
        skip: dict[str, bool] = {}
        self._scan_left = self.config.scan_limit
        assignments: list[Assignment] = []
        while candidates and len(client.running) < self.config.down_limit:
            piece = heapq.heappop(candidates)[3]
            holder = self._choose(cid, client, piece, now, skip)
            if holder is not None:
                self._start(cid, client, piece, holder, now)
                assignments.append(Assignment(piece, holder))
        if not assignments:
            return Decision(Outcome.NO_HOLDER)
        return Decision(Outcome.ASSIGNED, tuple(assignments))

    def _choose(
        self, cid: str, client: _Client, piece: int, now: float, skip: dict[str, bool]
    ) -> str | None:
        busy = False
        if self._holders[piece] and client.errors <= self.config.failure_limit:
            holder, busy = self._pick_peer(cid, client, piece, skip)
            if holder is not None:
                return holder
        if busy and not self.config.upstream_when_busy:
            return None
        if not self._ready[piece] or self._upstream_load >= self.config.upstream_limit:
            return None
        if self._fetched_by_others(cid, self._fetchers.get(piece), now):
            return None
        return UPSTREAM

    def _fetched_by_others(self, cid: str, fetchers: dict[str, float] | None, now: float) -> bool:
        """Another client fetches this piece upstream and others should wait for it."""
        if not fetchers:
            return False
        return any(
            other != cid and now - started < self.config.fetch_wait
            for other, started in fetchers.items()
        )

    def _pick_peer(
        self, cid: str, client: _Client, piece: int, skip: dict[str, bool]
    ) -> tuple[str | None, bool]:
        """The least loaded usable holder of a piece, and whether a usable one was busy.

        A random sample is tried first (power of d choices spreads load well at any scale);
        only when it has nobody free are the holders scanned, from a random offset so ties
        stay random, for the first free one (nearly everybody is saturated then), at most
        ``scan_limit`` holders per decision: when most of 10,000 holders are saturated,
        unbounded scans cost tens of milliseconds per decision. A piece whose scan was cut
        short without finding a free holder counts as busy. A short list (no sample) is
        scanned whole for the least loaded holder. ``skip`` caches, for this decision, holders
        that cannot serve this client (value False: gone, blacklisted or eliminated; True:
        saturated); loads only grow within a decision, so a cached holder stays unusable.
        """
        holders = self._holders[piece]
        count = len(holders)
        if count <= self.config.sample:
            return self._least_loaded(cid, client, holders, skip, False)[:2]
        assert isinstance(holders, list)  # more than ``sample`` holders
        sampled = self._rng.choices(holders, k=self.config.sample)
        best, busy, _ = self._least_loaded(cid, client, sampled, skip, False)
        if best is not None:
            return best, busy
        budget = min(count, self._scan_left)
        if budget <= 0:
            return None, True
        offset = self._rng.randrange(count)
        order = holders[offset : offset + budget]
        if len(order) < budget:
            order += holders[: budget - len(order)]
        best, busy_scan, examined = self._least_loaded(cid, client, order, skip, True)
        self._scan_left -= examined
        return best, busy or busy_scan or (best is None and budget < count)

    def _least_loaded(
        self, cid: str, client: _Client, order: Sequence[str], skip: dict[str, bool], first: bool
    ) -> tuple[str | None, bool, int]:
        """The least loaded usable holder in ``order`` (``first``: the first free one), whether
        a usable one was saturated, and how many holders were examined."""
        best: str | None = None
        best_load = self.config.up_limit
        busy = False
        examined = 0
        for holder in order:
            examined += 1
            cached = skip.get(holder)
            if cached is not None:
                busy = busy or cached
                continue
            source = self._clients.get(holder)
            if (
                holder == cid
                or source is None
                or not source.serves
                or source.service_errors >= self.config.elimination_limit
                or holder in client.blacklist
            ):
                skip[holder] = False
            elif source.load >= self.config.up_limit:
                skip[holder] = busy = True
            elif source.load < best_load:
                best, best_load = holder, source.load
                if best_load == 0 or first:
                    break
        return best, busy, examined

    # ---- bookkeeping -----------------------------------------------------------------------

    def _client(self, cid: str) -> _Client:
        try:
            return self._clients[cid]
        except KeyError:
            raise UnknownClient(cid) from None

    def _grow(self, size: int) -> None:
        if size <= self._size:
            return
        extra = size - self._size
        self._ready.extend(bytes(extra))
        self._holders.extend([()] * extra)
        for client in self._clients.values():
            client.done.extend(bytes(extra))
            client.pos.extend(array("i", [-1]) * extra)
        self._size = size

    def _done_pieces(self, client: _Client) -> list[int]:
        return [piece for piece in range(self._size) if client.done[piece]]

    def _add_holder(self, piece: int, cid: str, client: _Client) -> None:
        if client.pos[piece] < 0:
            holders = self._holders[piece]
            if not isinstance(holders, list):
                holders = self._holders[piece] = []
            client.pos[piece] = len(holders)
            holders.append(cid)

    def _remove_holder(self, piece: int, client: _Client) -> None:
        index = client.pos[piece]
        if index < 0:
            return
        client.pos[piece] = -1
        holders = self._holders[piece]
        assert isinstance(holders, list)  # this client is listed there
        last = holders.pop()
        if index < len(holders):
            holders[index] = last
            self._clients[last].pos[piece] = index

    def _withdraw(self, cid: str, client: _Client) -> None:
        for piece in self._done_pieces(client):
            self._remove_holder(piece, client)

    def _penalise(self, cid: str, client: _Client, holder: str) -> None:
        client.errors += 1
        source = self._clients.get(holder)
        if holder == UPSTREAM or source is None:
            return
        client.blacklist.add(holder)
        source.service_errors += 1
        if source.service_errors >= self.config.elimination_limit:
            source.serves = False
            self._withdraw(holder, source)

    def _start(self, cid: str, client: _Client, piece: int, holder: str, now: float) -> None:
        self._seq += 1
        client.running[piece] = _Run(holder, now, self._seq)
        if holder == UPSTREAM:
            self._upstream_load += 1
            self._fetchers.setdefault(piece, {})[cid] = now
        else:
            self._clients[holder].load += 1
        client.last_seen = max(client.last_seen, now)
        deadline = now + min(self.config.running_timeout, self.config.silence_timeout)
        heapq.heappush(self._expiry, (deadline, self._seq, cid, piece))

    def _release(self, cid: str, piece: int, run: _Run) -> None:
        if run.holder == UPSTREAM:
            self._upstream_load -= 1
            fetchers = self._fetchers.get(piece)
            if fetchers is not None:
                fetchers.pop(cid, None)
                if not fetchers:
                    del self._fetchers[piece]
        else:
            source = self._clients.get(run.holder)
            if source is not None:
                source.load -= 1

    def _expire(self, now: float) -> None:
        """Forget runs that were never reported (amortised O(1): one heap entry per run)."""
        while self._expiry and self._expiry[0][0] <= now:
            _, seq, cid, piece = heapq.heappop(self._expiry)
            client = self._clients.get(cid)
            run = client.running.get(piece) if client is not None else None
            if client is None or run is None or run.seq != seq:
                continue
            deadline = min(
                run.started + self.config.running_timeout,
                client.last_seen + self.config.silence_timeout,
            )
            if deadline <= now:
                self._release(cid, piece, client.running.pop(piece))
            else:  # the client pulled since: look again later
                heapq.heappush(self._expiry, (deadline, seq, cid, piece))
