"""The host-wide upload limit (``--totallimit``) and the ``/rate/`` grants (spec §4.2, §5.10)."""

from __future__ import annotations

import threading
import time

MIN_CHUNK = 16 * 1024
MAX_CHUNK = 1024 * 1024


class TokenBucket:
    """A token bucket shared by all uploads; callers wait for their bytes, they never fail.

    Tokens may go negative: a caller reserves what it needs and sleeps off its own debt, so
    waiting uploads are served in arrival order and no lock is held while sleeping. The burst
    is a tenth of a second worth of bytes, so short pauses are not followed by a flood.
    """

    def __init__(self, rate: int) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self._capacity = max(rate / 10, 1.0)
        self._tokens = self._capacity
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    @property
    def chunk(self) -> int:
        """Bytes to send between two acquisitions: about 1/10 s worth, within sane bounds."""
        return int(min(MAX_CHUNK, max(MIN_CHUNK, self.rate // 10)))

    def acquire(self, amount: int) -> None:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= amount
            debt = -self._tokens
        if debt > 0:
            time.sleep(debt / self.rate)


def grant(requested: int, total_limit: int, unfinished_total: int) -> int:
    """The rate granted to one download (v1 ``calculateRateLimit``).

    Without a host limit the request is granted as is. Otherwise, when the rates requested by
    all unfinished downloads exceed the limit, each gets its share of the limit, rounded up.
    """
    if total_limit <= 0 or unfinished_total <= total_limit:
        return requested
    return -(-requested * total_limit // unfinished_total)
