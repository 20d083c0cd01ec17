"""What the supernode's handlers answer: the status and exact body the Go supernode would send.

Handlers return a :class:`Reply` instead of writing to a socket, so the HTTP layer stays a thin
router and tests can drive the handlers directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dfget.net.server import JSON
from dfget.protocol.codes import CODE_SYSTEM_ERROR
from dfget.protocol.wire import envelope


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str = JSON
    code: int = 0
    """The envelope's code, for metrics."""


def answer(code: int, data: Any = None, msg: str | None = None) -> Reply:
    """An HTTP 200 envelope: protocol results travel in ``code``."""
    return Reply(200, envelope(code, msg, data), code=code)


def refuse(msg: str) -> Reply:
    """How the Go supernode reports a handler error: HTTP 500 with a 500 envelope."""
    return Reply(500, envelope(CODE_SYSTEM_ERROR, msg), code=CODE_SYSTEM_ERROR)
