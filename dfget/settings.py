"""Turn command-line values, the environment and the configuration file into Settings.

Precedence: flags > ``DFGET_*`` environment > configuration file > defaults. Unlike v1, an
explicit ``0`` on the command line is honoured (``-s 0`` really means unlimited).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from dfget.config import Settings, parse_nodes
from dfget.configfile import ConfigError, find

HEADER_ENV_PREFIX = "DFGET_HEADER_"


class SettingsError(ValueError):
    """Values that cannot make a valid download."""


def headers_from_env(environ: Mapping[str, str]) -> list[str]:
    """``DFGET_HEADER_X_AUTH_TOKEN=v`` -> ``X-Auth-Token: v`` (sorted, so the order is stable)."""
    headers = []
    for key in sorted(environ):
        if key.startswith(HEADER_ENV_PREFIX) and len(key) > len(HEADER_ENV_PREFIX):
            name = "-".join(p.capitalize() for p in key[len(HEADER_ENV_PREFIX) :].split("_"))
            headers.append(f"{name}: {environ[key]}")
    return headers


def headers_from_file(path: Path) -> list[str]:
    """One ``Name: value`` per line; blank lines and ``#`` comments ignored."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SettingsError(f"cannot read header file {path}: {exc.strerror or exc}") from exc
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _split(values: Iterable[str], sep: str = ",") -> tuple[str, ...]:
    return tuple(part.strip() for value in values for part in value.split(sep) if part.strip())


def build_settings(values: Mapping[str, object], explicit: set[str]) -> Settings:
    """``values`` are click's parsed download options; ``explicit`` names those given by flag or
    environment (the configuration file fills in only the others)."""
    from dfget.download.output import default_output

    url = str(values["url"])
    if not url.lower().startswith(("http://", "https://")):
        raise SettingsError(f"--url {url!r}: only http and https URLs are supported")
    try:
        output = str(values["output"] or default_output(url))
        config = find(str(values["config"]) if values.get("config") else None)
    except (ValueError, ConfigError) as exc:
        raise SettingsError(str(exc)) from exc

    def pick(name: str, from_file: object) -> object:
        return values[name] if name in explicit or from_file is None else from_file

    node_values = values["nodes"]
    assert isinstance(node_values, tuple)
    try:
        nodes = parse_nodes(node_values[-1]) if node_values else config.nodes
    except ValueError as exc:
        raise SettingsError(f"--node: {exc}") from exc
    headers = list(values["headers"])  # type: ignore[call-overload]
    if values.get("header_file"):
        headers += headers_from_file(Path(str(values["header_file"])))
    headers += headers_from_env(os.environ)
    for header in headers:
        name, sep, _ = header.partition(":")
        if not sep or not name.strip():
            raise SettingsError(f"--header {header.split(':')[0]!r}: use 'Name: value'")
    home = pick("home", config.home)
    return Settings(
        url=url,
        output=Path(output) if output == "-" else Path(output).absolute(),
        nodes=tuple(nodes),
        nodes_explicit=bool(node_values),
        pattern=str(values["pattern"]),
        headers=tuple(headers),
        md5=str(values["md5"] or "").lower(),
        identifier=str(values["identifier"] or ""),
        digest=str(values["digest"] or ""),
        callsystem=str(values["callsystem"] or ""),
        filters=tuple(f for f in str(values["filters"] or "").split("&") if f),
        cacerts=_split(values["cacerts"]),  # type: ignore[arg-type]
        insecure=bool(values["insecure"]),
        notbs=bool(values["notbs"]),
        dfdaemon=bool(values["dfdaemon"]),
        locallimit=int(pick("locallimit", config.locallimit)),  # type: ignore[call-overload]
        minrate=int(pick("minrate", config.minrate)),  # type: ignore[call-overload]
        totallimit=int(pick("totallimit", config.totallimit)),  # type: ignore[call-overload]
        timeout=float(values["timeout"]),  # type: ignore[arg-type]
        connections=int(values["connections"]),  # type: ignore[call-overload]
        clientqueue=int(pick("clientqueue", config.clientqueue)),  # type: ignore[call-overload]
        home=Path(str(home)).expanduser(),
        ip=str(values["ip"]),
        port=int(values["port"]),  # type: ignore[call-overload]
        expiretime=float(values["expiretime"]),  # type: ignore[arg-type]
        alivetime=float(values["alivetime"]),  # type: ignore[arg-type]
        showbar=bool(values["showbar"]),
        quiet=bool(values["quiet"]),
        json=bool(values["as_json"]),
        trace=Path(str(values["trace"])) if values.get("trace") else None,
        console=bool(values["console"]),
        verbose=bool(values["verbose"]),
    )
