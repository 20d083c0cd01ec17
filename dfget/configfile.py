"""dfget's configuration files: v1's ``/etc/dragonfly/dfget.yml`` and legacy ``dragonfly.conf``.

The YAML file has a flat schema: ``nodes`` (a list), ``localLimit``, ``minRate``,
``totalLimit`` (rates), ``clientQueueSize`` (int), ``workHome`` (path) and ``logConfig`` (a
mapping, parsed but unused, as in v1). A small parser for exactly that subset keeps PyYAML out
of the dependencies. The INI file has ``[node]`` with ``address = ip1,ip2``.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TypeVar

from dfget.config import Node, parse_nodes
from dfget.errors import UsageError
from dfget.protocol.wire import decimal
from dfget.units import parse_rate

T = TypeVar("T")

DEFAULT_CANDIDATES = (Path("/etc/dragonfly/dfget.yml"), Path("/etc/dragonfly.conf"))


class ConfigError(UsageError, ValueError):
    """A configuration file that cannot be read or has a bad value."""


@dataclass(frozen=True, slots=True)
class FileConfig:
    path: Path | None = None
    nodes: tuple[Node, ...] = ()
    locallimit: int | None = None
    minrate: int | None = None
    totallimit: int | None = None
    clientqueue: int | None = None
    home: Path | None = None

    def settings(self) -> dict[str, object]:
        """What the file sets, by :class:`~dfget.config.Settings` field name; ``nodes`` aside
        (the download takes them from ``--node``, else from the file)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("path", "nodes") and getattr(self, f.name) is not None
        }


def _scalar(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _strip_comment(line: str) -> str:
    quote = ""
    for index, char in enumerate(line):
        if char in "'\"":
            quote = "" if quote == char else (quote or char)
        elif char == "#" and not quote and (index == 0 or line[index - 1].isspace()):
            return line[:index]
    return line


def parse_yaml_subset(text: str) -> dict[str, object]:
    """Top-level ``key: scalar``, ``key: [a, b]``, ``key:`` + ``- item`` lists or nested maps.

    List items may sit at the key's own indentation (``nodes:`` then ``- a``), as YAML allows
    and as many hand-written dfget.yml files do.
    """
    result: dict[str, object] = {}
    current: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw).rstrip()
        if not line.strip() or line.strip() == "---":
            continue
        stripped = line.strip()
        list_item = stripped.startswith("- ") or stripped == "-"
        if line[0].isspace() or list_item:
            if current is None:
                raise ConfigError(f"line {number}: indented line outside a key")
            value = result[current]
            if list_item:
                if not isinstance(value, list):
                    if value not in ("", {}):
                        raise ConfigError(f"line {number}: list item under a scalar key")
                    value = result[current] = []
                value.append(_scalar(stripped[1:]))
            else:
                key, sep, item = stripped.partition(":")
                if not sep:
                    raise ConfigError(f"line {number}: expected 'key: value'")
                if not isinstance(value, dict):
                    value = result[current] = {}
                value[key.strip()] = _scalar(item)
            continue
        key, sep, value_text = stripped.partition(":")
        if not sep or not key.strip():
            raise ConfigError(f"line {number}: expected 'key: value'")
        current = key.strip()
        value_text = value_text.strip()
        if value_text.startswith("[") and value_text.endswith("]"):
            result[current] = [_scalar(v) for v in value_text[1:-1].split(",") if v.strip()]
        else:
            result[current] = _scalar(value_text)
    return result


NULLS = ("", "~", "null", "Null", "NULL")


def _from_yaml(path: Path, text: str) -> FileConfig:
    values = {k: v for k, v in parse_yaml_subset(text).items() if v not in NULLS}

    def parsed(key: str, parse: Callable[[str], T]) -> T | None:
        value = values.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ConfigError(f"{path}: {key}: expected a single value")
        try:
            return parse(value)
        except ValueError as exc:
            raise ConfigError(f"{path}: {key}: {exc}") from exc

    nodes_value = values.get("nodes") or []
    try:
        nodes = parse_nodes(nodes_value if isinstance(nodes_value, list) else str(nodes_value))
    except ValueError as exc:
        raise ConfigError(f"{path}: nodes: {exc}") from exc
    home = parsed("workHome", str)
    return FileConfig(
        path=path,
        nodes=nodes,
        locallimit=parsed("localLimit", parse_rate),
        minrate=parsed("minRate", parse_rate),
        totallimit=parsed("totalLimit", parse_rate),
        clientqueue=parsed("clientQueueSize", _count),
        home=Path(home).expanduser() if home else None,
    )


def _count(text: str) -> int:
    count = decimal(text)
    if count is None:
        raise ValueError(f"{text!r} is not a non-negative integer")
    return count


def _from_ini(path: Path, text: str) -> FileConfig:
    parser = configparser.ConfigParser()
    try:
        parser.read_string(text, source=str(path))
        address = parser.get("node", "address", fallback="")
        return FileConfig(path=path, nodes=parse_nodes(address))
    except (configparser.Error, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def load(path: Path) -> FileConfig:
    """Parse one file, by extension (``.yml``/``.yaml`` YAML, anything else INI)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if path.suffix in (".yml", ".yaml"):
        return _from_yaml(path, text)
    return _from_ini(path, text)


def find(explicit: str | None) -> FileConfig:
    """The configuration in force: ``--config``/``DFGET_CONFIG`` (must load), else the first v1
    default candidate that exists and loads, else nothing."""
    chosen = explicit or os.environ.get("DFGET_CONFIG")
    if chosen:
        return load(Path(chosen))
    for candidate in DEFAULT_CANDIDATES:
        if candidate.is_file():
            try:
                return load(candidate)
            except ConfigError:
                continue
    return FileConfig()
