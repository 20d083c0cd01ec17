"""A token bucket shared by every fetch of one download (``--locallimit``)."""

from __future__ import annotations

import threading
import time


class TokenBucket:
    """Blocks callers so that, over time, at most ``rate`` bytes per second pass.

    The burst is a tenth of a second of traffic (at least 64 KiB), so a limit is smooth
    without costing a syscall per small read. ``rate`` 0 means unlimited.
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._burst = max(rate / 10, 64 * 1024)
        self._tokens = self._burst
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def set_rate(self, rate: int) -> None:
        with self._lock:
            self.rate = rate
            self._burst = max(rate / 10, 64 * 1024)

    def consume(self, count: int) -> None:
        if not self.rate:
            return
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= count
            deficit = -self._tokens
        if deficit > 0:
            time.sleep(deficit / self.rate)
