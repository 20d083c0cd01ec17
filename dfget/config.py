"""The download's settings: the :class:`Settings` dataclass, whose field defaults are the
download's defaults, the supernode list, and :func:`build_settings`, which fills Settings from
flags > ``DFGET_*`` environment > configuration file > those defaults.

Unlike v1, an explicit ``0`` on the command line is honoured (``-s 0`` really means unlimited).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from dfget.defaults import field_default
from dfget.errors import UsageError
from dfget.protocol.codes import DEFAULT_SUPERNODE_PORT
from dfget.protocol.wire import decimal
from dfget.uploader.cache import Amount
from dfget.uploader.options import ServerOptions

DEFAULT_NODE = f"127.0.0.1:{DEFAULT_SUPERNODE_PORT}"  # when neither flags nor the file name one
PATTERNS = ("p2p", "cdn", "source")
HEADER_ENV_PREFIX = "DFGET_HEADER_"
# DFGET_HEADER_FILE is the --header-file option, not a header named "File".
NOT_HEADERS = frozenset({"DFGET_HEADER_FILE"})


@dataclass(frozen=True, slots=True)
class Node:
    """One supernode entry ``host[:port][=weight]``."""

    host: str
    port: int = DEFAULT_SUPERNODE_PORT
    weight: int = 1

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Node:
        entry, _, weight_text = text.strip().partition("=")
        weight = _node_number(weight_text, 1, "weight", text)
        if weight <= 0:
            raise ValueError(f"invalid node weight in {text!r}")
        if entry.startswith("["):
            host, bracket, rest = entry[1:].partition("]")
            if not bracket or (rest and not rest.startswith(":")):
                raise ValueError(f"invalid node {text!r}")
            port_text = rest[1:]
        elif entry.count(":") == 1:
            host, _, port_text = entry.partition(":")
        else:
            host, port_text = entry, ""
        if not host:
            raise ValueError(f"invalid node {text!r}")
        port = _node_number(port_text, DEFAULT_SUPERNODE_PORT, "port", text)
        if not 0 < port < 65536:
            raise ValueError(f"invalid node port in {text!r}")
        return cls(host, port, weight)


def _node_number(value: str, default: int, what: str, text: str) -> int:
    """A port or weight: plain ASCII digits, so the error names the entry, not int()."""
    if not value:
        return default
    number = decimal(value)
    if number is None:
        raise ValueError(f"invalid node {what} in {text!r}")
    return number


def parse_nodes(text: str | list[str] | tuple[str, ...]) -> tuple[Node, ...]:
    items = text.split(",") if isinstance(text, str) else [n for t in text for n in t.split(",")]
    return tuple(Node.parse(item) for item in items if item.strip())


@dataclass(slots=True)
class Settings:
    """Everything one download needs, already validated and normalised."""

    url: str
    output: Path
    nodes: tuple[Node, ...] = ()
    pattern: str = "p2p"
    headers: tuple[str, ...] = ()
    md5: str = ""
    identifier: str = ""
    digest: str = ""
    callsystem: str = ""
    filters: tuple[str, ...] = ()
    cacerts: tuple[str, ...] = ()
    insecure: bool = False
    notbs: bool = False
    supernode_credentials: bool = True  # the user's credential headers go into the registration
    dfdaemon: bool = False
    locallimit: int = 0
    minrate: int = 64 * 1024
    totallimit: int = field_default(ServerOptions, "totallimit")
    timeout: float = 0.0
    clientqueue: int = 6
    connections: int = 1
    # The work home and the peer server's options, which the download passes on to the server
    # it starts: the server's defaults.
    home: Path = field_default(ServerOptions, "home")
    ip: str = field_default(ServerOptions, "ip")
    port: int = field_default(ServerOptions, "port")
    expiretime: float | None = field_default(ServerOptions, "expiretime")
    alivetime: float | None = field_default(ServerOptions, "alivetime")
    cache_budget: Amount | None = field_default(ServerOptions, "cache_budget")
    cache_min_free: Amount = field_default(ServerOptions, "cache_min_free")
    showbar: bool = False
    quiet: bool = False
    json: bool = False
    trace: Path | None = None
    console: bool = False
    verbose: bool = False
    resume: bool = True
    partial_max_age: float = 7 * 24 * 3600.0
    partial_budget: int = 20 * 1024**3

    @property
    def to_stdout(self) -> bool:
        return str(self.output) == "-"

    def download_timeout(self, length: int) -> float:
        """v1: explicit --timeout, else length/minrate + 10 s, else 5 minutes."""
        if self.timeout > 0:
            return self.timeout
        if length > 0 and self.minrate > 0:
            return length // self.minrate + 10.0
        return 300.0


class SettingsError(UsageError, ValueError):
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
    environment (the configuration file fills in only the others). An option click has no
    value for leaves the field's default."""
    from dfget.configfile import ConfigError, find
    from dfget.download.output import default_output

    url = str(values["url"])
    if not url.lower().startswith(("http://", "https://")):
        raise SettingsError(f"--url {url!r}: only http and https URLs are supported")
    try:
        output = str(values["output"] or default_output(url))
        config = find(str(values["config"]) if values.get("config") else None)
    except (ValueError, ConfigError) as exc:
        raise SettingsError(str(exc)) from exc
    chosen = {f.name: values[f.name] for f in fields(Settings) if values.get(f.name) is not None}
    chosen.update((k, v) for k, v in config.settings().items() if k not in explicit)

    node_values = values["nodes"]
    assert isinstance(node_values, tuple)
    try:
        chosen["nodes"] = parse_nodes(node_values[-1]) if node_values else config.nodes
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
    cacerts = _split(values["cacerts"])  # type: ignore[arg-type]
    check_cacerts(cacerts)
    chosen.update(
        output=Path(output) if output == "-" else Path(output).absolute(),
        headers=tuple(headers),
        md5=str(values["md5"] or "").lower(),
        filters=tuple(f for f in str(values["filters"] or "").split("&") if f),
        cacerts=cacerts,
        home=Path(str(chosen["home"])).expanduser(),
        json=bool(values["as_json"]),
    )
    return Settings(**chosen)  # type: ignore[arg-type]
