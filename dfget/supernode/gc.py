"""Periodic garbage collection of idle tasks and departed peers."""

from __future__ import annotations

import logging
import threading

from dfget.supernode.service import Supernode

log = logging.getLogger(__name__)

FIRST_RUN_AFTER = 6.0
"""v1 runs the first pass 6 s after start, then every interval."""


class Collector(threading.Thread):
    def __init__(self, service: Supernode, interval: float) -> None:
        super().__init__(name="supernode-gc", daemon=True)
        self._service = service
        self._interval = max(interval, 0.05)
        self._stopped = threading.Event()

    def run(self) -> None:
        delay = min(FIRST_RUN_AFTER, self._interval)
        while not self._stopped.wait(delay):
            try:
                self._service.collect()
            except Exception:  # keep collecting: one bad pass must not leak memory forever
                log.exception("garbage collection failed")
            delay = self._interval

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=5)
