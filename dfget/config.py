"""Download settings: flags > ``DFGET_*`` environment > config file > defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dfget.protocol.codes import DEFAULT_SUPERNODE_PORT
from dfget.protocol.wire import decimal

if TYPE_CHECKING:
    from dfget.uploader.cache import Amount

DEFAULT_HOME = Path.home() / ".small-dragonfly"
DEFAULT_NODE = f"127.0.0.1:{DEFAULT_SUPERNODE_PORT}"
DEFAULT_MINRATE = 64 * 1024
DEFAULT_CONNECTIONS = 1
DEFAULT_CACHE_MIN_FREE = "1GB"  # the peer server's files never eat into this much free space
PATTERNS = ("p2p", "cdn", "source")


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
    minrate: int = DEFAULT_MINRATE
    totallimit: int = 0
    timeout: float = 0.0
    clientqueue: int = 6
    connections: int = DEFAULT_CONNECTIONS
    home: Path = field(default_factory=lambda: DEFAULT_HOME)
    ip: str = ""
    port: int = 0
    expiretime: float | None = None  # the peer server's upper bounds, when set
    alivetime: float | None = None
    cache_budget: Amount | None = None  # None: the peer server's default
    cache_min_free: Amount | None = None
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
