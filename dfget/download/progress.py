"""Byte counter with an optional tqdm bar on stderr (only when asked or on a terminal)."""

from __future__ import annotations

import sys
import threading
from typing import Any


class Progress:
    """Counts bytes from many fetch threads; a ticker thread redraws the bar 5 times a second."""

    def __init__(self, enabled: bool, description: str = "") -> None:
        self.done = 0
        self._lock = threading.Lock()
        self._bar: Any = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._description = description
        self.enabled = enabled

    @staticmethod
    def wanted(showbar: bool, quiet: bool) -> bool:
        return not quiet and (showbar or sys.stderr.isatty())

    def start(self, total: int | None) -> None:
        if not self.enabled or self._bar is not None:
            return
        from tqdm import tqdm

        self._bar = tqdm(
            total=total if total and total > 0 else None,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=self._description,
            file=sys.stderr,
            leave=False,
            dynamic_ncols=True,
        )
        self._ticker = threading.Thread(target=self._tick, name="progress", daemon=True)
        self._ticker.start()

    def add(self, count: int) -> None:
        with self._lock:
            self.done += count

    def _tick(self) -> None:
        shown = 0
        while not self._stop.wait(0.2):
            done = self.done
            if done != shown:
                self._bar.update(done - shown)
                shown = done

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=1)
        if self._bar is not None:
            self._bar.close()
            self._bar = None
