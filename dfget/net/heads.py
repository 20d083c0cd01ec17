"""HTTP/1.1 heads, the one place they are written and parsed: a request's (its target made
safe, the caller's headers checked), a response's (status line, headers in the caller's order),
and a received response head split into status and headers."""

from __future__ import annotations

import re
from collections.abc import Iterable
from http import HTTPStatus
from urllib.parse import quote

from dfget.errors import ProtocolError
from dfget.protocol.wire import decimal

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TARGET_SAFE = "/?#[]@!$&'()*+,;=:%~-._"


class WireError(ProtocolError, OSError):
    """Malformed or truncated HTTP traffic (treated like a network error by callers)."""


def request_target_of(target: str) -> str:
    """``target`` as it may stand in a request line: control characters (CR and LF would end
    the line and start a request of someone else's making) are refused; spaces and non-ASCII
    characters are percent-encoded (UTF-8), as Go's client does for a peer's path."""
    if _CONTROL.search(target):
        raise WireError(f"refusing a request target with control characters: {target[:60]!r}")
    return quote(target, safe=_TARGET_SAFE)


def request_head(
    method: str, target: str, host: str, headers: Iterable[tuple[str, str]] = ()
) -> bytes:
    """The head of a bodiless request; ``target`` is written as given (see
    :func:`request_target_of`), a header that could break the head is refused."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    for name, value in headers:
        if _CONTROL.search(name) or _CONTROL.search(value) or not name or ":" in name:
            raise WireError(f"refusing to send header {name[:40]!r}: invalid characters")
        lines.append(f"{name}: {value}")
    return _head(lines)


def response_head(status: int, headers: Iterable[tuple[str, str]]) -> bytes:
    """A response head with the standard reason phrase and ``headers`` in their order."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    return _head([f"HTTP/1.1 {status} {reason}", *(f"{name}: {value}" for name, value in headers)])


def parse_response_head(
    head: str,
) -> tuple[str, int, str, dict[str, str], list[tuple[str, str]]]:
    """Version, status, reason, headers (names lower-cased, repeats joined with ", ") and the
    headers as received, from a response head without its blank line."""
    status_line, *lines = head.split("\r\n")
    parts = status_line.split(" ", 2)
    code = decimal(parts[1], 3) if len(parts) >= 2 else None
    if code is None or not parts[0].startswith("HTTP/"):
        raise WireError(f"bad status line {status_line[:80]!r}")
    raw = []
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            raw.append((name.strip(), value.strip()))
    headers: dict[str, str] = {}
    for name, value in raw:
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return parts[0], code, parts[2] if len(parts) > 2 else "", headers, raw


def _head(lines: list[str]) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
