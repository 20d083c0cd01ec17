"""Dragonfly v1 wire conventions: plain numbers from the network, the unescaped query strings
dfget 1.0.6 writes, Go's JSON and the supernode's JSON envelope."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

MAX_DECIMAL_DIGITS = 18  # what fits Go's int64 (strconv.Atoi)


def decimal(text: str, max_digits: int = MAX_DECIMAL_DIGITS) -> int | None:
    """A plain non-negative decimal number from the network or a file, or None.

    Only ASCII digits, at most ``max_digits``: ``str.isdigit`` also takes '²' (which ``int``
    rejects), ``int`` takes '1_0', ' 7', '+7' and '٣', and a 5,000-digit number raises.
    """
    if 0 < len(text) <= max_digits and text.isascii() and text.isdigit():
        return int(text)
    return None


def headers_to_map(headers: Iterable[str]) -> dict[str, str]:
    """v1's conversion of ``Name: value`` strings: split at the first colon, trim, drop empty
    values, join duplicates with commas."""
    result: dict[str, str] = {}
    for entry in headers:
        name, sep, value = entry.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            continue
        result[name] = f"{result[name]},{value}" if name in result else value
    return result


def raw_query(params: Iterable[tuple[str, object]]) -> str:
    """``a=1&b=2`` in the given order, values not escaped, as dfget 1.0.6 writes them."""
    return "&".join(f"{name}={'' if value is None else value}" for name, value in params)


def parse_raw_query(query: str) -> dict[str, str]:
    """Parse a query the way the Go supernode effectively does for dfget's unescaped values.

    Values may contain ``:`` and ``~`` unescaped; percent-escapes are decoded when present.
    """
    from urllib.parse import unquote

    result: dict[str, str] = {}
    for part in query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        result.setdefault(unquote(name), unquote(value))
    return result


def go_json(value: Any) -> bytes:
    """Compact JSON like Go's encoding/json (HTML-safe escaping of <, >, &)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


def envelope(code: int | None = None, msg: str | None = None, data: Any = None) -> bytes:
    """The supernode's ResultInfo body: keys omitted when empty, trailing newline."""
    body: dict[str, Any] = {}
    if code:
        body["code"] = code
    if data is not None:
        body["data"] = data
    if msg:
        body["msg"] = msg
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def lower_keys(value: Mapping[str, Any]) -> dict[str, Any]:
    """JSON keys matched case-insensitively, as the Go supernode does."""
    return {key.lower(): item for key, item in value.items()}
