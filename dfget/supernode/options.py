"""Options of `dfget supernode` (v1 names and defaults)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dfget.protocol.codes import DEFAULT_DOWNLOAD_PORT, DEFAULT_SUPERNODE_PORT

DEFAULT_SUPERNODE_HOME = Path.home() / ".small-dragonfly" / "supernode"


@dataclass(slots=True)
class SupernodeOptions:
    home: Path = DEFAULT_SUPERNODE_HOME
    listen_ip: str = "0.0.0.0"
    port: int = DEFAULT_SUPERNODE_PORT
    download_port: int = DEFAULT_DOWNLOAD_PORT
    advertise_ip: str = ""
    cdn_pattern: str = "local"
    up_limit: int = 5
    down_limit: int = 4
    cdn_limit: int = 4
    max_connections: int = 4096  # per port (each downloading client keeps one); beyond, 503
    max_tasks: int = 10_000
    max_clients: int = 10_000  # per task
    max_file_length: int = 64 * 1024**3  # a source claiming more is refused
    max_cdn_fetches: int = 16  # sources fetched at once (local pattern) or probed
    max_cdn_bytes: int = 256 * 1024**3  # the lengths of the tasks the CDN stores at once
    fetch_wait: float = 15.0
    task_gc_interval: float = 120.0
    task_expire: float = 180.0
    peer_gc_delay: float = 180.0
    seed: int | None = None
    verbose: bool = False
