"""How the pull loop paces itself: the 602 back-off, the stall watch, the fetch threads."""

from __future__ import annotations

import queue
import random
import threading
import time
from typing import Any

from dfget.download.progress import Progress
from dfget.protocol.messages import PieceTask

STALL_SECONDS = 30.0


class Backoff:
    """602 backoff: 50-100 ms doubling up to 0.8-1.6 s, reset when a piece lands."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._low = 0.05

    def next(self) -> float:
        value = random.uniform(self._low, self._low * 2)
        self._low = min(self._low * 2, 0.8)
        return value


class StallWatch:
    """A stall is no new byte for STALL_SECONDS: a slow holder still counts as progress."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.seen = progress.done
        self.at = time.monotonic()

    def stalled(self) -> bool:
        now = time.monotonic()
        if self.progress.done != self.seen:
            self.seen, self.at = self.progress.done, now
        return now - self.at > STALL_SECONDS


class WorkerPool:
    """Fetch threads, each with its own piece-sized buffer."""

    def __init__(self, size: int, work: Any) -> None:
        self._queue: queue.SimpleQueue[PieceTask | None] = queue.SimpleQueue()
        self._work = work
        self._threads = [
            threading.Thread(target=self._run, daemon=True, name=f"piece-{i}") for i in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, task: PieceTask) -> None:
        self._queue.put(task)

    def _run(self) -> None:
        buffer = bytearray()
        while True:
            task = self._queue.get()
            if task is None:
                return
            if len(buffer) < task.piece_size:
                buffer = bytearray(task.piece_size)
            self._work(task, buffer)

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=5)
