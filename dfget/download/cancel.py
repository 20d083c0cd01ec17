"""Cooperative cancellation of fetch threads, prompt even while they block in recv()."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

from dfget.errors import Cancelled


class Cancel:
    """An event plus the sockets in use: cancelling shuts them down so blocked reads return."""

    def __init__(self, deadline: float | None = None) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[Any] = set()
        self.deadline = deadline

    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled()

    def remaining(self, cap: float) -> float:
        """Seconds until the deadline, capped; at least a little so sockets don't spin."""
        if self.deadline is None:
            return cap
        return max(0.05, min(cap, self.deadline - time.monotonic()))

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if cancelled meanwhile."""
        return self._event.wait(seconds)

    def watch(self, sock: Any) -> None:
        with self._lock:
            self._sockets.add(sock)
        if self._event.is_set():
            self._shutdown(sock)

    def unwatch(self, sock: Any) -> None:
        with self._lock:
            self._sockets.discard(sock)

    def cancel(self) -> None:
        self._event.set()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            self._shutdown(sock)

    @staticmethod
    def _shutdown(sock: Any) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
