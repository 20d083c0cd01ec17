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
holders (tests/bench/simulate.py --scale measures it).

The bookkeeping behind these rules (holder lists, runs, loads, expiry) is
:class:`~dfget.supernode.ledger.Ledger`'s; this module holds the rules.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Sequence

from dfget.supernode.ledger import ClientState, Ledger
from dfget.supernode.scheduling import UPSTREAM, Assignment, Decision, PieceOutcome, SchedulerConfig


class Scheduler(Ledger):
    """Scheduling decisions of one task. Not thread-safe: callers serialise access."""

    def __init__(
        self,
        piece_count: int | None,
        config: SchedulerConfig | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(piece_count, config or SchedulerConfig())
        self._rng = random.Random(seed)
        self._scan_left = 0

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
            # sake (dfget/download/announce.py). Here others already wait for it
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

    def _penalise(self, cid: str, client: ClientState, holder: str) -> None:
        client.errors += 1
        source = self._clients.get(holder)
        if holder == UPSTREAM or source is None:
            return
        client.blacklist.add(holder)
        source.service_errors += 1
        if source.service_errors >= self.config.elimination_limit:
            source.serves = False
            self._withdraw(holder, source)

    # ---- the decision ----------------------------------------------------------------------

    def schedule(self, cid: str, now: float) -> Decision:
        """Pieces for a client to fetch next, each with the holder to fetch it from."""
        self._expire(now)
        client = self._client(cid)
        client.last_seen = now
        if self._count is not None and client.done_count >= self._count:
            return Decision(PieceOutcome.FINISHED)
        done, ready, holders = client.done, self._ready, self._holders
        if len(client.running) >= self.config.down_limit:
            # Only whether anything is available matters: no candidates to rank.
            for piece in range(self._size):
                if not done[piece] and (ready[piece] or holders[piece]):
                    return Decision(PieceOutcome.LIMITED)
            return Decision(PieceOutcome.NOTHING_AVAILABLE)
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
            return Decision(PieceOutcome.NOTHING_AVAILABLE)
        if not candidates:
            return Decision(PieceOutcome.NO_HOLDER if blocked else PieceOutcome.ALL_RUNNING)
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
            return Decision(PieceOutcome.NO_HOLDER)
        return Decision(PieceOutcome.ASSIGNED, tuple(assignments))

    def _choose(
        self, cid: str, client: ClientState, piece: int, now: float, skip: dict[str, bool]
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
        self, cid: str, client: ClientState, piece: int, skip: dict[str, bool]
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
        self,
        cid: str,
        client: ClientState,
        order: Sequence[str],
        skip: dict[str, bool],
        first: bool,
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


SchedulerFactory = Callable[[int | None, SchedulerConfig, int | None], Scheduler]
"""Builds a task's scheduler: piece count (None while unknown), limits, seed. Tests swap in a
double that schedules exactly as Dragonfly 1.0.6 does."""
