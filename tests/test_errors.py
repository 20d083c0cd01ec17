"""The exception hierarchy: every exception dfget defines derives from DfgetError (private
control-flow signals, named with a leading underscore, excepted), and each maps to one exit code."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import signal

import dfget
from dfget.config import SettingsError
from dfget.configfile import ConfigError
from dfget.download.trace import TraceError
from dfget.errors import (
    EXIT_CODE_HELP,
    DfgetError,
    DigestMismatchError,
    DownloadTimeout,
    ExitCode,
    Interrupted,
    LocalIOError,
    P2PFailedError,
    SupernodeAuthError,
    source_http_error,
)
from dfget.net.heads import WireError
from dfget.protocol.messages import SupernodeError
from dfget.protocol.pieces import FramingError
from dfget.uploader.sender import ShortFile


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


def test_each_kind_of_failure_keeps_its_exit_code() -> None:
    """What dfdaemon and scripts rely on: 100 for authentication, 1 for usage, the rest by
    cause (the table in --help)."""
    expected = {
        SupernodeAuthError: ExitCode.AUTH_REQUIRED,
        SettingsError: ExitCode.USAGE,
        ConfigError: ExitCode.USAGE,
        TraceError: ExitCode.USAGE,
        LocalIOError: ExitCode.LOCAL_IO,
        ShortFile: ExitCode.LOCAL_IO,
        SupernodeError: ExitCode.NETWORK,
        WireError: ExitCode.NETWORK,
        FramingError: ExitCode.NETWORK,
        P2PFailedError: ExitCode.P2P_FAILED,
        DigestMismatchError: ExitCode.DIGEST_MISMATCH,
        DownloadTimeout: ExitCode.TIMEOUT,
    }
    for cls, code in expected.items():
        assert cls.exit_code == code, cls
        assert code in EXIT_CODE_HELP
    assert source_http_error("u", 404).exit_code == ExitCode.NOT_FOUND
    assert source_http_error("u", 403).exit_code == ExitCode.AUTH_REQUIRED
    assert source_http_error("u", 500).exit_code == ExitCode.SOURCE_HTTP
    assert Interrupted(signal.SIGINT).exit_code == ExitCode.INTERRUPTED
    assert Interrupted(signal.SIGTERM).exit_code == ExitCode.TERMINATED
