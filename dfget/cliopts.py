"""The parameter types and shared options of dfget's commands (units, sizes, the peer
server's lifetime and cache options), and the options whose defaults are those of a role's
dataclass (see :mod:`dfget.defaults`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import click

from dfget.config import Settings
from dfget.defaults import field_default
from dfget.units import format_duration, format_rate, parse_duration, parse_rate
from dfget.uploader.cache import DEFAULT_BUDGET, DEFAULT_BUDGET_CAP, Amount
from dfget.uploader.options import ServerOptions

if TYPE_CHECKING:
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

    def written(self, rate: int) -> str:
        """The rate as one would type it: ``64KB``; ``0`` (the help says what it means)."""
        return format_rate(rate) if rate else "0"


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

    def written(self, seconds: float) -> str:
        """The duration as one would type it: ``3m0s``; ``0`` (the help says what it means)."""
        return format_duration(seconds) if seconds else "0"


F = TypeVar("F", bound=Callable[..., Any])
RATE = RateType()
DURATION = DurationType()
Role = Callable[[], type[Any]]


class FieldOption(click.Option):
    """An option whose default is that of the field of the same name of its role's dataclass,
    looked up when first needed, so that defining a command imports no role's module.

    Rates and durations get it as one would type it, so that ``--help`` shows ``64KB`` rather
    than ``65536``; with ``show_default=True`` a path in the home directory is shown as ``~/...``.
    """

    def __init__(self, param_decls: Sequence[str], *, role: Role, **attrs: Any) -> None:
        super().__init__(param_decls, **attrs)
        self.role = role
        self.resolved = False

    def resolve(self) -> None:
        if self.resolved:
            return
        assert self.name is not None
        value = field_default(self.role(), self.name)
        if value is not None and isinstance(self.type, RateType | DurationType):
            value = self.type.written(value)
        elif isinstance(value, Path) and self.show_default is True:
            home = Path.home()
            self.show_default = (
                f"~/{value.relative_to(home)}" if value.is_relative_to(home) else str(value)
            )
        self.default = value
        self.resolved = True

    def get_default(self, ctx: click.Context, call: bool = True) -> Any:
        self.resolve()
        return super().get_default(ctx, call=call)

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        self.resolve()
        return super().get_help_record(ctx)


class OptionMaker(Protocol):
    """``click.option`` for the options of one role."""

    def __call__(self, *param_decls: str, **attrs: Any) -> Callable[[F], F]: ...


def role_option(role: Role) -> OptionMaker:
    """Options whose defaults are the fields of the dataclass ``role()`` returns."""

    def option(*param_decls: str, **attrs: Any) -> Callable[[F], F]:
        return click.option(*param_decls, cls=FieldOption, role=role, **attrs)

    return option


settings_option = role_option(lambda: Settings)
server_option = role_option(lambda: ServerOptions)


def home_option(option: OptionMaker, help_text: str, path_type: click.Path) -> Callable[[F], F]:
    return option("--home", type=path_type, show_default=True, help=help_text)


def expiretime_option(option: OptionMaker, help_text: str) -> Callable[[F], F]:
    return option(
        "--expiretime",
        type=DURATION,
        show_default="unset: the cache budget decides",
        help=help_text,
    )


def alivetime_option(option: OptionMaker, help_text: str) -> Callable[[F], F]:
    return option(
        "--alivetime", type=DURATION, show_default="unset: up while serving", help=help_text
    )


class AmountType(AmountParam):
    """A size (RATE syntax, in bytes) or a percentage of the data filesystem."""

    name = "SIZE|PCT"

    def convert(self, value: Any, param: Param, ctx: Ctx) -> Amount:
        if not isinstance(value, str):
            return value  # type: ignore[no-any-return]
        try:
            return Amount.parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


AMOUNT = AmountType()


def cache_options(option: OptionMaker) -> Callable[[F], F]:
    """--cache-budget and --cache-min-free, shared by dfget (for the server it starts) and
    dfget server."""

    def decorate(f: F) -> F:
        f = option(
            "--cache-min-free",
            type=AMOUNT,
            show_default=True,
            help="Free space the served files never eat into: least recently used files are "
            "dropped first to keep it.",
        )(f)
        return option(
            "--cache-budget",
            type=AMOUNT,
            show_default=f"{DEFAULT_BUDGET}, at most {format_rate(DEFAULT_BUDGET_CAP)}",
            help="Disk the peer server's served files may take, e.g. 20GB or 25% (of the data "
            "filesystem); beyond it the least recently used file is dropped and reported down.",
        )(f)

    return decorate
