"""Pieces a download announced to the supernode before storing them, shared with its peer server.

In the source pattern a piece the supernode sends to the origin has no holder until the client
reports it, and Dragonfly 1.0.6 hands pieces nobody holds to the origin first: every client that
asks while one fetches a piece from the registry is sent to the registry for the same piece
(measured: six clients starting together made the registry serve the blob about twice). So a
download reports such a piece
(``/peer/piece/suc``) as soon as its origin fetch starts, and its peer server holds requests for
that piece until the bytes are stored: the next clients queue behind one origin fetch instead
of making their own.

The download and its peer server are two processes; they share ``<data dir>/<name>.pending``,
one byte per piece: 0 stored (or never announced early: served as before), 1 announced and
still being fetched, 2 given up (the peer server answers 404 at once, and the requester fetches
the piece elsewhere). The peer server removes the file when the task is finished or dropped.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

PENDING_SUFFIX = ".pending"
STORED, FETCHING, LOST = 0, 1, 2
POLL_SECONDS = 0.005
WAIT_SECONDS = 60.0
"""How long the peer server holds a request for a piece still being fetched (a requester's own
timeout for a 4 MiB piece is 74 s in v1)."""


def pending_path(data_dir: Path, name: str) -> Path:
    return data_dir / f"{name}{PENDING_SUFFIX}"


class PendingPieces:
    """The download's side: marks pieces fetching, stored or lost."""

    def __init__(self, path: Path, pieces: int) -> None:
        self.path = path
        self.pieces = pieces
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        self._fd = os.open(path, flags, 0o600)
        os.ftruncate(self._fd, 0)  # nothing announced yet
        os.ftruncate(self._fd, pieces)

    def mark(self, piece: int, state: int) -> None:
        os.pwrite(self._fd, bytes((state,)), piece)

    def close(self) -> None:
        os.close(self._fd)


def wait_until_stored(path: Path, piece: int, timeout: float = WAIT_SECONDS) -> bool:
    """The peer server's side: True once ``piece`` may be served (stored, or never announced
    early), False if the download gave it up or it did not land within ``timeout``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return True  # no early announcements for this task
    try:
        deadline = time.monotonic() + timeout
        while True:
            state = os.pread(fd, 1, piece)
            if not state or state[0] == STORED:
                return True
            if state[0] != FETCHING or time.monotonic() >= deadline:
                return False
            time.sleep(POLL_SECONDS)
    finally:
        os.close(fd)
