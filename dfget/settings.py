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
# DFGET_HEADER_FILE is the --header-file option, not a header named "File".
NOT_HEADERS = frozenset({"DFGET_HEADER_FILE"})


class SettingsError(ValueError):
    """Values that cannot make a valid download."""


def headers_from_env(environ: Mapping[str, str]) -> list[str]:
    """``DFGET_HEADER_X_AUTH_TOKEN=v`` -> ``X-Auth-Token: v`` (sorted, so the order is stable)."""
    headers = []
    for key in sorted(environ):
        if (
            key.startswith(HEADER_ENV_PREFIX)
            and len(key) > len(HEADER_ENV_PREFIX)
            and key not in NOT_HEADERS
        ):
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


def check_cacerts(paths: Iterable[str]) -> None:
    """Each ``--cacerts`` file must hold PEM certificates: fail now, naming the file, rather
    than with a bare ``[Errno 2]`` in the middle of the download."""
    for path in paths:
        import ssl  # only when there are CA files: plain-http downloads start sooner

        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
        except FileNotFoundError:
            raise SettingsError(f"--cacerts {path!r}: no such file") from None
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "reason", None) or exc.strerror or exc
            raise SettingsError(f"--cacerts {path!r}: not a PEM CA file ({reason})") from exc


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
        if not sep or not name.strip() or len(name.split()) != 1:
            # Only the first word: the rest of a malformed header may well be a token.
            first = header.split()[0][:40] if header.split() else ""
            raise SettingsError(f"--header {first!r}...: use 'Name: value'")
    home = pick("home", config.home)
    cacerts = _split(values["cacerts"])  # type: ignore[arg-type]
    check_cacerts(cacerts)
    return Settings(
        url=url,
        output=Path(output) if output == "-" else Path(output).absolute(),
        nodes=tuple(nodes),
        pattern=str(values["pattern"]),
        headers=tuple(headers),
        md5=str(values["md5"] or "").lower(),
        identifier=str(values["identifier"] or ""),
        digest=str(values["digest"] or ""),
        callsystem=str(values["callsystem"] or ""),
        filters=tuple(f for f in str(values["filters"] or "").split("&") if f),
        cacerts=cacerts,
        insecure=bool(values["insecure"]),
        notbs=bool(values["notbs"]),
        supernode_credentials=bool(values["supernode_credentials"]),
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
        expiretime=_optional_seconds(values["expiretime"]),
        alivetime=_optional_seconds(values["alivetime"]),
        cache_budget=values.get("cache_budget"),  # type: ignore[arg-type]
        cache_min_free=values.get("cache_min_free"),  # type: ignore[arg-type]
        showbar=bool(values["showbar"]),
        quiet=bool(values["quiet"]),
        json=bool(values["as_json"]),
        trace=Path(str(values["trace"])) if values.get("trace") else None,
        resume=bool(values["resume"]),
        partial_max_age=float(values["partial_max_age"]),  # type: ignore[arg-type]
        partial_budget=int(values["partial_budget"]),  # type: ignore[call-overload]
        console=bool(values["console"]),
        verbose=bool(values["verbose"]),
    )


def _optional_seconds(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
