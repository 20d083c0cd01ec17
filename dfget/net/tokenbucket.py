"""A token bucket for rate limits: a download's ``--locallimit`` and the peer server's
host-wide upload limit (``--totallimit``).

Tokens may go negative: a caller reserves what it needs and sleeps off its own debt, so callers
are served in arrival order and no lock is held while sleeping. The burst is a tenth of a
second of traffic, so a pause is not followed by a flood. Rate 0 means unlimited.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

MIN_CHUNK = 16 * 1024
MAX_CHUNK = 1024 * 1024


class TokenBucket:
    def __init__(
        self,
        rate: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._stamp = clock()
        self.set_rate(rate)
        self._tokens = self._capacity

    def set_rate(self, rate: int) -> None:
        if rate < 0:
            raise ValueError("rate must not be negative")
        with self._lock:
            self.rate = rate
            self._capacity = max(rate / 10, 1.0)

    @property
    def chunk(self) -> int:
        """Bytes to move between two acquisitions: about 1/10 s worth, within sane bounds."""
        return int(min(MAX_CHUNK, max(MIN_CHUNK, self.rate // 10))) if self.rate else MAX_CHUNK

    def consume(self, amount: int) -> None:
        """Account for ``amount`` bytes, sleeping as long as the rate requires."""
        if not self.rate:
            return
        with self._lock:
            now = self._clock()
            self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= amount
            debt = -self._tokens
        if debt > 0:
            self._sleep(debt / self.rate)
