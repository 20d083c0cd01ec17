"""The parameter types and shared options of dfget's commands (units, sizes, the peer
server's lifetime and cache options)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from dfget.config import DEFAULT_CACHE_MIN_FREE, DEFAULT_HOME
from dfget.units import parse_duration, parse_rate

if TYPE_CHECKING:
    from dfget.uploader.cache import Amount

    IntParam = click.ParamType[int]
    FloatParam = click.ParamType[float]
    AmountParam = click.ParamType[Amount]
else:  # click < 8.2: ParamType is not generic
    IntParam = FloatParam = AmountParam = click.ParamType

Param = click.Parameter | None
Ctx = click.Context | None


class RateType(IntParam):
    name = "RATE"

    def convert(self, value: Any, param: Param, ctx: Ctx) -> int:
        try:
            return parse_rate(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class DurationType(FloatParam):
    name = "DURATION"

    def convert(self, value: Any, param: Param, ctx: Ctx) -> float:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if seconds < 0:
            self.fail(f"duration {value!r} must not be negative", param, ctx)
        return seconds


F = TypeVar("F", bound=Callable[..., Any])
RATE = RateType()
DURATION = DurationType()


def home_option(help_text: str, path_type: click.Path) -> Callable[[F], F]:
    return click.option(
        "--home",
        type=path_type,
        default=str(DEFAULT_HOME),
        show_default="~/.small-dragonfly",
        help=help_text,
    )


def limit_option(name: str, default: int, help_text: str) -> Callable[[F], F]:
    """A supernode concurrency limit (1-1000)."""
    return click.option(
        name, type=click.IntRange(1, 1000), default=default, show_default=True, help=help_text
    )


def expiretime_option(help_text: str) -> Callable[[F], F]:
    return click.option(
        "--expiretime",
        type=DURATION,
        default=None,
        show_default="unset: the cache budget decides",
        help=help_text,
    )


def alivetime_option(help_text: str) -> Callable[[F], F]:
    return click.option(
        "--alivetime",
        type=DURATION,
        default=None,
        show_default="unset: up while serving",
        help=help_text,
    )


class AmountType(AmountParam):
    """A size (RATE syntax, in bytes) or a percentage of the data filesystem."""

    name = "SIZE|PCT"

    def convert(self, value: Any, param: Param, ctx: Ctx) -> Amount:
        from dfget.uploader.cache import Amount

        if not isinstance(value, str):
            return value  # type: ignore[no-any-return]
        try:
            return Amount.parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


AMOUNT = AmountType()


def cache_options(f: F) -> F:
    """--cache-budget and --cache-min-free, shared by dfget (for the server it starts) and
    dfget server."""
    f = click.option(
        "--cache-min-free",
        type=AMOUNT,
        default=DEFAULT_CACHE_MIN_FREE,
        show_default=True,
        help="Free space the served files never eat into: least recently used files are "
        "dropped first to keep it.",
    )(f)
    return click.option(
        "--cache-budget",
        type=AMOUNT,
        default=None,
        show_default="10%, at most 8GB",
        help="Disk the peer server's served files may take, e.g. 20GB or 25% (of the data "
        "filesystem); beyond it the least recently used file is dropped and reported down.",
    )(f)
