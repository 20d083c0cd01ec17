"""One stream, two threads: receive into a ring of buffers while the previous ones are written.

A single source stream (one GET for a whole file, as curl makes) would otherwise alternate
between waiting for the socket and copying into the page cache; with two cores the two overlap.
The reader fills whole buffers (fewer, larger writes) and hands them over in order; the writer
stores them. Every byte received is stored before :meth:`Pipeline.close` returns, also when the
stream broke, so the caller can continue from the last byte received.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

BUFFER_SIZE = 1024 * 1024
BUFFERS = 4

Store = Callable[[int, memoryview], None]


class Pipeline:
    """Usage: ``view = p.buffer()``, fill it, ``p.submit(offset, count)``; ``p.close()``."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._free: queue.SimpleQueue[memoryview] = queue.SimpleQueue()
        for _ in range(BUFFERS):
            self._free.put(memoryview(bytearray(BUFFER_SIZE)))
        self._full: queue.SimpleQueue[tuple[int, memoryview, int] | None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._current: memoryview | None = None
        self._thread = threading.Thread(target=self._write, name="writer", daemon=True)
        self._thread.start()

    def buffer(self) -> memoryview:
        """A free buffer to fill; raises what the writer failed with, if it did."""
        self._raise_error()
        self._current = self._free.get()
        return self._current

    def submit(self, offset: int, count: int) -> None:
        """The buffer from :meth:`buffer` holds ``count`` bytes for ``offset``."""
        assert self._current is not None
        buffer, self._current = self._current, None
        if count:
            self._full.put((offset, buffer, count))
        else:
            self._free.put(buffer)

    def close(self) -> None:
        """Wait until everything submitted is stored; raise what the writer failed with."""
        self._full.put(None)
        self._thread.join()
        self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _write(self) -> None:
        while True:
            item = self._full.get()
            if item is None:
                return
            offset, buffer, count = item
            if self._error is None:
                try:
                    self._store(offset, buffer[:count])
                except BaseException as exc:  # handed to the reader
                    self._error = exc
            self._free.put(buffer)
