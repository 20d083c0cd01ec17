"""Bookkeeping of one task's scheduling: who holds which piece, what runs where, and the loads.

:class:`Ledger` decides nothing; :class:`~dfget.supernode.scheduler.Scheduler` builds its policy
on it. What it keeps consistent: a piece's holder list and each listed client's ``pos`` entry,
the holders' and upstream's loads and the runs that name them (released on success, failure,
the client's end and expiry alike), one expiry entry per run. Memory per task is about 12 bytes
per (holder, piece) plus a few hundred bytes per client.
"""

from __future__ import annotations

import heapq
from array import array
from dataclasses import dataclass, field

from dfget.errors import ProtocolError
from dfget.supernode.scheduling import UPSTREAM, SchedulerConfig


@dataclass(slots=True)
class Run:
    """A piece running for a client; ``seq`` tells its expiry entry from a later run's."""

    holder: str
    started: float
    seq: int


@dataclass(slots=True)
class ClientState:
    """One downloading client, and (once it holds pieces) one holder."""

    done: bytearray
    serves: bool
    pos: array[int]
    """Per piece: this client's index in that piece's holder list, -1 when not listed (an array,
    not a dict per piece: 4 bytes per piece instead of ~50 at 10,000 holders)."""
    done_count: int = 0
    running: dict[int, Run] = field(default_factory=dict)
    blacklist: set[str] = field(default_factory=set)
    errors: int = 0
    load: int = 0
    service_errors: int = 0
    last_seen: float = 0.0


class UnknownClient(ProtocolError, KeyError):
    """The client was never added to this scheduler (or was removed)."""


class Ledger:
    """Scheduling state of one task. Not thread-safe: callers serialise access."""

    def __init__(self, piece_count: int | None, config: SchedulerConfig) -> None:
        self.config = config
        self._count = piece_count
        self._size = 0
        self._ready = bytearray()
        self._ready_count = 0
        # Per piece its holders; one shared empty tuple until a piece has any, so a task's
        # state follows the pieces in play (a 64 GB task: 35 KB, not 280 KB of empty lists).
        self._holders: list[list[str] | tuple[()]] = []
        self._fetchers: dict[int, dict[str, float]] = {}
        self._upstream_load = 0
        self._clients: dict[str, ClientState] = {}
        self._expiry: list[tuple[float, int, str, int]] = []
        self._seq = 0
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
            self._clients[cid] = ClientState(done=bytearray(self._size), serves=serves, pos=pos)
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

    # ---- bookkeeping -----------------------------------------------------------------------

    def _client(self, cid: str) -> ClientState:
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

    def _done_pieces(self, client: ClientState) -> list[int]:
        return [piece for piece in range(self._size) if client.done[piece]]

    def _add_holder(self, piece: int, cid: str, client: ClientState) -> None:
        if client.pos[piece] < 0:
            holders = self._holders[piece]
            if not isinstance(holders, list):
                holders = self._holders[piece] = []
            client.pos[piece] = len(holders)
            holders.append(cid)

    def _remove_holder(self, piece: int, client: ClientState) -> None:
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

    def _withdraw(self, cid: str, client: ClientState) -> None:
        for piece in self._done_pieces(client):
            self._remove_holder(piece, client)

    def _start(self, cid: str, client: ClientState, piece: int, holder: str, now: float) -> None:
        self._seq += 1
        client.running[piece] = Run(holder, now, self._seq)
        if holder == UPSTREAM:
            self._upstream_load += 1
            self._fetchers.setdefault(piece, {})[cid] = now
        else:
            self._clients[holder].load += 1
        client.last_seen = max(client.last_seen, now)
        deadline = now + min(self.config.running_timeout, self.config.silence_timeout)
        heapq.heappush(self._expiry, (deadline, self._seq, cid, piece))

    def _release(self, cid: str, piece: int, run: Run) -> None:
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
