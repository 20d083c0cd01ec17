"""Early announcement of origin pieces: report an origin piece as ours when its fetch starts,
not when it ends.

v1 sends the pieces nobody holds to the origin first, and a piece being fetched has no holder:
each client asking meanwhile would fetch it from the origin too. Announced at once, it has a
holder, the others get the pieces nobody fetches yet, and those that need this one wait at our
peer server until it lands (it learns which pieces are still coming from the pending file,
dfget/uploader/pending.py).

The announcement names this client as where the piece came from, so v1 does not count it as the
end of an origin fetch: the task's origin slot (four per task) stays taken until the normal
report naming the supernode, sent once the piece is stored (or given up), and the origin never
serves more pieces of the task at once than v1 allows. It is sent at once, beside the fetch: our
listening socket is bound already, so a peer that comes before our server has started waits in
its backlog.

What remains is the few milliseconds between the assignment and the announcement: a client that
gets a freed origin slot then may be given the same piece. Slots are freed by the pull loop
right before it pulls (:meth:`EarlyAnnouncer.release`), so the client that frees one mostly
takes it again, and its own pieces are never handed to it twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path

from dfget.download.reporting import Link, Reports
from dfget.protocol.messages import PieceTask
from dfget.uploader.pending import FETCHING, LOST, STORED, PendingPieces, pending_path

log = logging.getLogger(__name__)

RELEASE_GATHER_SECONDS = 0.02  # origin slots freed within this time go with one pull


class EarlyAnnouncer:
    """Origin pieces announced before they are stored, and the slot releases they owe."""

    def __init__(self, reports: Reports) -> None:
        self.reports = reports
        self.pending: PendingPieces | None = None
        self.announced: set[int] = set()
        self.releases: list[PieceTask] = []
        self.release_due = 0.0

    def share(
        self, work: Path, task_file_name: str, pieces: int, wrapped: bool, link: Link
    ) -> None:
        """In the source pattern, with our peer server serving the work file, open the file
        that tells it which announced pieces are still being fetched."""
        if self.pending is not None:
            if self.pending.pieces == pieces and not wrapped:
                return  # a migration to a supernode with the same layout
            # Another layout numbers pieces differently: announced ones are given up.
            self.give_up({}, link)
            self.pending.close()
            self.pending = None
        if wrapped or not self.reports.server_port or work.name != f"{task_file_name}.service":
            return
        if pieces <= 0:
            return
        try:
            self.pending = PendingPieces(pending_path(work.parent, task_file_name), pieces)
        except OSError as exc:
            log.info("pieces will be reported once stored: %s", exc.strerror or exc)

    def announce(self, task: PieceTask, link: Link) -> None:
        """Announce an origin piece whose fetch starts now (only when our server shares the
        pending file)."""
        if self.pending is None or "://" not in task.path:
            return
        self.pending.mark(task.piece_num, FETCHING)
        self.announced.add(task.piece_num)
        self.reports.announce(link, task.range)

    def stored(self, task: PieceTask) -> bool:
        """The piece landed; True if it was announced, and its origin slot is then released
        by the pull loop right before its next pull (which then most likely takes the slot
        itself), together with the slots of the pieces that land within
        RELEASE_GATHER_SECONDS."""
        if task.piece_num not in self.announced:
            return False
        self.announced.discard(task.piece_num)
        assert self.pending is not None
        self.pending.mark(task.piece_num, STORED)
        if not self.releases:
            self.release_due = time.monotonic() + RELEASE_GATHER_SECONDS
        self.releases.append(task)
        return True

    def release(self, link: Link) -> None:
        """Send the reports naming the supernode that free the origin slots (before a pull)."""
        if self.releases:
            self.reports.await_server()  # as before any report that sends peers to us
        while self.releases:
            done = self.releases.pop()
            self.reports.stored(link, done.cid, done.range)

    def give_up(self, in_flight: Mapping[int, PieceTask], link: Link | None) -> None:
        """Announced pieces that never landed: peers waiting for them are told at once, and
        their origin slots are freed."""
        if self.pending is None:
            return
        for piece in self.announced:
            self.pending.mark(piece, LOST)
            task = in_flight.get(piece)
            if task is not None:
                self.releases.append(task)
        self.announced.clear()
        if link is not None:
            for task in self.releases:
                self.reports.stored_later(link, task.cid, task.range)
        self.releases.clear()

    def close(self) -> None:
        if self.pending is not None:
            self.pending.close()
