"""Choosing the peer server's port.

Automatic ports stay within 15000-65000 because the Go supernode rejects any other peer port.
The first candidates follow v1 (``15000 + (unix_seconds/300) % 50000``, then the next ones) so
the choice looks familiar in logs; random ones follow, and the number of attempts is bounded.
"""

from __future__ import annotations

import errno
import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from dfget.protocol import peer_server

log = logging.getLogger(__name__)

MIN_PORT = 15000
PORT_SPAN = 50000
SEQUENTIAL_TRIES = 10
RANDOM_TRIES = 40
_SKIPPABLE = (errno.EADDRINUSE, errno.EACCES)

S = TypeVar("S")


def candidates(now: float | None = None, rng: random.Random | None = None) -> Iterator[int]:
    base = int(time.time() if now is None else now) // 300
    for i in range(SEQUENTIAL_TRIES):
        yield MIN_PORT + (base + i) % PORT_SPAN
    rng = rng or random.Random()
    for _ in range(RANDOM_TRIES):
        yield MIN_PORT + rng.randrange(PORT_SPAN)


def bind(ip: str, port: int, make: Callable[[int], S]) -> tuple[S | None, int]:
    """Bind with ``make(port)``: ``(server, port)``, or ``(None, port)`` when the requested
    fixed port already runs a dfget peer server, which the caller should adopt.

    A fixed port held by another program falls back to an automatic port rather than failing
    the download's peer server. Raises OSError when no port can be bound.
    """
    if port > 0:
        try:
            return make(port), port
        except OSError as exc:
            if exc.errno not in _SKIPPABLE:
                raise
            if exc.errno == errno.EADDRINUSE and peer_server.ping(ip, port):
                log.info("a peer server already listens on port %d: adopting it", port)
                return None, port
            log.warning("port %d is not available (%s): choosing another", port, exc.strerror)
    last: OSError | None = None
    for candidate in candidates():
        try:
            server = make(candidate)
        except OSError as exc:
            if exc.errno not in _SKIPPABLE:
                raise
            last = exc
            continue
        log.info("listening on automatically chosen port %d", candidate)
        return server, candidate
    raise OSError(
        errno.EADDRINUSE, f"no free port in {RANDOM_TRIES + SEQUENTIAL_TRIES} tries: {last}"
    )
