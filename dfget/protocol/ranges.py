"""Byte ranges on the wire: v1 piece ranges (``start-end``), the peers' ``Range`` header and
``Content-Range``; numbers are plain ASCII decimals (:func:`dfget.protocol.wire.decimal`)."""

from __future__ import annotations

from dataclasses import dataclass

from dfget.errors import ProtocolError
from dfget.protocol.wire import decimal


class RangeError(ProtocolError, ValueError):
    """A range header or range string that cannot be parsed or satisfied."""


@dataclass(frozen=True, slots=True)
class PieceRange:
    """An inclusive byte range ``start-end`` as written in v1 piece tasks."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def __str__(self) -> str:
        return f"{self.start}-{self.end}"

    @classmethod
    def parse(cls, text: str) -> PieceRange:
        start_text, sep, end_text = text.partition("-")
        start, end = decimal(start_text), decimal(end_text)
        if not sep or start is None or end is None or end < start:
            raise RangeError(f"invalid range {text!r}")
        return cls(start, end)

    @classmethod
    def of_piece(cls, piece_num: int, piece_size: int) -> PieceRange:
        """The range the supernode announces for piece k: always a full piece."""
        start = piece_num * piece_size
        return cls(start, start + piece_size - 1)

    def piece_num(self) -> int:
        return self.start // self.length


def range_sides(value: str) -> tuple[str, str] | None:
    """The two sides of a single ``bytes=first-last`` Range header, as text (either may be
    empty); None for anything else: another unit, several ranges, no dash or more than one.
    The one Range parser: peers' strict ranges and the download port's HTTP ranges read it."""
    unit, sep, spec = value.partition("=")
    if not sep or unit.strip().lower() != "bytes" or "," in spec or spec.count("-") != 1:
        return None
    first, _, last = spec.strip().partition("-")
    return first, last


def parse_range_header(value: str) -> PieceRange:
    """A peer's ``bytes=S-E``; anything else is rejected.

    Multi-range, open-ended and suffix ranges are not part of the v1 peer protocol.
    """
    sides = range_sides(value)
    start, end = (decimal(sides[0]), decimal(sides[1])) if sides else (None, None)
    if start is None or end is None or end <= start:
        raise RangeError(f"unsupported Range {value!r}")
    return PieceRange(start, end)


def parse_unsatisfied_range(value: str) -> int | None:
    """The length in a 416's ``bytes */N`` Content-Range, None for anything else."""
    unit, _, spec = value.strip().partition(" ")
    star, slash, total = spec.strip().partition("/")
    if unit.lower() != "bytes" or star != "*" or not slash:
        return None
    return decimal(total)


def parse_content_range(value: str) -> tuple[int, int, int | None] | None:
    """``(first, last, total)`` of a ``bytes F-L/T`` (or ``/*``) Content-Range, None if it is
    anything else or impossible (last before first, beyond the total)."""
    unit, _, spec = value.strip().partition(" ")
    span, slash, total_text = spec.strip().partition("/")
    first_text, dash, last_text = span.partition("-")
    first, last = decimal(first_text), decimal(last_text)
    total = None if total_text == "*" else decimal(total_text)
    if unit.lower() != "bytes" or not (slash and dash) or first is None or last is None:
        return None
    if last < first or (total_text != "*" and (total is None or last >= total)):
        return None
    return first, last, total
