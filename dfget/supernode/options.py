"""Options of `dfget supernode` (v1 names and defaults).

The scheduling options take their defaults from :class:`SchedulerConfig`, where each is
written once, and :meth:`SupernodeOptions.scheduler_config` maps them back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dfget.protocol.codes import CDN_SOURCE_SOURCE, DEFAULT_DOWNLOAD_PORT, DEFAULT_SUPERNODE_PORT
from dfget.supernode.scheduling import SchedulerConfig

DEFAULT_SUPERNODE_HOME = Path.home() / ".small-dragonfly" / "supernode"
_SCHEDULING = SchedulerConfig()


@dataclass(slots=True)
class SupernodeOptions:
    home: Path = DEFAULT_SUPERNODE_HOME
    listen_ip: str = "0.0.0.0"
    port: int = DEFAULT_SUPERNODE_PORT
    download_port: int = DEFAULT_DOWNLOAD_PORT
    advertise_ip: str = ""
    cdn_pattern: str = "local"
    up_limit: int = _SCHEDULING.up_limit
    down_limit: int = _SCHEDULING.down_limit
    cdn_limit: int = _SCHEDULING.upstream_limit
    max_connections: int = 4096  # per port (each downloading client keeps one); beyond, 503
    max_tasks: int = 10_000
    max_clients: int = 10_000  # per task
    max_file_length: int = 64 * 1024**3  # a source claiming more is refused
    max_cdn_fetches: int = 16  # sources fetched at once (local pattern) or probed
    max_cdn_bytes: int = 256 * 1024**3  # the lengths of the tasks the CDN stores at once
    fetch_wait: float = _SCHEDULING.fetch_wait
    task_gc_interval: float = 120.0
    task_expire: float = 180.0
    peer_gc_delay: float = 180.0
    seed: int | None = None
    verbose: bool = False

    @property
    def local_cdn(self) -> bool:
        """Sources are fetched into the supernode's own CDN (every pattern but ``source``)."""
        return self.cdn_pattern != CDN_SOURCE_SOURCE

    def scheduler_config(self) -> SchedulerConfig:
        """Each task's scheduling limits. Without a local CDN the upstream holder is the origin:
        clients wait for busy peers rather than fall back to it."""
        return SchedulerConfig(
            down_limit=self.down_limit,
            up_limit=self.up_limit,
            upstream_limit=self.cdn_limit,
            upstream_when_busy=self.local_cdn,
            fetch_wait=self.fetch_wait,
        )
