"""Rates and durations in the syntax dfget 1.0.6 accepts.

Rates: a plain non-negative integer is bytes per second; otherwise ``<int><unit>`` with unit
``B``, ``K``/``KB``, ``M``/``MB``, ``G``/``GB`` (case-insensitive, powers of 1024).
Durations: Go syntax such as ``3m0s``, ``300ms``, ``1h30m``, ``2.5s``; a bare number means seconds.
"""

from __future__ import annotations

import re

_RATE = re.compile(r"^\s*(\d+)\s*([bkmg]?)(b?)\s*$", re.IGNORECASE)
_RATE_FACTORS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}

_PLAIN_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")  # not float(): it takes "inf" and "nan"
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_FACTORS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_rate(text: str | int) -> int:
    """Bytes per second from ``20M``, ``100MB``, ``64KB``, ``1048576``."""
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"rate must not be negative: {text}")
        return text
    match = _RATE.match(text)
    if not match or (match.group(2).lower() == "b" and match.group(3)):
        raise ValueError(f"invalid rate {text!r}: use bytes or a number with B, K, M or G")
    return int(match.group(1)) * _RATE_FACTORS[match.group(2).lower()]


def format_rate(rate: int) -> str:
    """Human form of a rate, e.g. ``20MB``."""
    for unit, factor in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if rate and rate % factor == 0:
            return f"{rate // factor}{unit}"
    return f"{rate}B"


def parse_duration(text: str | float | int) -> float:
    """Seconds from a Go duration (``3m0s``, ``300ms``) or a plain number of seconds."""
    if isinstance(text, int | float):
        return float(text)
    value = text.strip()
    sign = -1.0 if value.startswith("-") else 1.0
    value = value.lstrip("+-")
    if value in ("0", ""):
        if value == "":
            raise ValueError("empty duration")
        return 0.0
    if _PLAIN_NUMBER.fullmatch(value):
        return sign * float(value)
    total, position = 0.0, 0
    for match in _DURATION_PART.finditer(value):
        if match.start() != position:
            break
        total += float(match.group(1)) * _DURATION_FACTORS[match.group(2)]
        position = match.end()
    if position != len(value):
        raise ValueError(f"invalid duration {text!r}: use Go syntax such as 30s, 3m0s or 300ms")
    return sign * total


def format_duration(seconds: float) -> str:
    """Go's Duration.String() for whole milliseconds and above: ``3m0s``, ``1h0m0s``, ``300ms``."""
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 1:
        millis = seconds * 1000
        return f"{sign}{millis:g}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    secs_text = f"{secs:.9f}".rstrip("0").rstrip(".")
    if hours:
        return f"{sign}{int(hours)}h{int(minutes)}m{secs_text}s"
    if minutes:
        return f"{sign}{int(minutes)}m{secs_text}s"
    return f"{sign}{secs_text}s"


def human_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"  # pragma: no cover
