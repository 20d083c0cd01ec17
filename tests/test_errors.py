"""The exception hierarchy: every exception dfget defines derives from DfgetError (private
control-flow signals, named with a leading underscore, excepted), and each maps to one exit code."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import dfget
from dfget.errors import EXIT_CODE_HELP, DfgetError


def _dfget_exceptions() -> list[type[BaseException]]:
    found = []
    for module_info in pkgutil.walk_packages(dfget.__path__, "dfget."):
        if module_info.name.endswith("__main__"):
            continue
        module = importlib.import_module(module_info.name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == module.__name__:
                found.append(value)
    return found


def test_every_dfget_exception_is_a_dfget_error() -> None:
    exceptions = _dfget_exceptions()
    assert len(exceptions) > 20  # the walk found the package's modules
    strays = [
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in exceptions
        if not issubclass(cls, DfgetError) and not cls.__name__.startswith("_")
    ]
    assert strays == []


def test_every_exception_has_a_documented_exit_code() -> None:
    for cls in _dfget_exceptions():
        if issubclass(cls, DfgetError):
            assert cls.exit_code in EXIT_CODE_HELP, cls
