"""Each default is written once, as a field default of its role's dataclass: the download's
:class:`~dfget.config.Settings`, the peer server's
:class:`~dfget.uploader.options.ServerOptions` and the supernode's
:class:`~dfget.supernode.options.SupernodeOptions`. The command line, its ``--help`` and the
settings builder read them from there."""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any


def field_default(role: type[Any], name: str) -> Any:
    """The default of the field ``name`` of the dataclass ``role``."""
    for field in fields(role):
        if field.name == name:
            if field.default is not MISSING:
                return field.default
            if field.default_factory is not MISSING:
                return field.default_factory()
            raise LookupError(f"{role.__name__}.{name} has no default")
    raise LookupError(f"{role.__name__} has no field {name!r}")
