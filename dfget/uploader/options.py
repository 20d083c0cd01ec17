"""Options of `dfget server`, plus the cache budget that replaces v1's timers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dfget.defaults import field_default
from dfget.uploader.cache import Amount, CachePolicy


@dataclass(slots=True)
class ServerOptions:
    """The peer server's options; their defaults are also those of the peer server options of
    the download (``dfget --home``, ``--cache-budget``, ...), which it passes on."""

    home: Path = Path.home() / ".small-dragonfly"
    data: Path | None = None
    meta: Path | None = None
    ip: str = ""
    port: int = 0
    expiretime: float | None = None  # set: a file is dropped this long after its last use
    alivetime: float | None = None  # set: the server exits after this long without uploads
    cache_budget: Amount | None = None  # None: 10% of the data filesystem, at most 8 GiB
    cache_min_free: Amount = field_default(CachePolicy, "min_free")
    totallimit: int = 0
    verbose: bool = False
    listen_fd: int | None = None  # an inherited listening socket to serve on

    @property
    def data_dir(self) -> Path:
        return self.data if self.data is not None else self.home / "data"

    @property
    def meta_file(self) -> Path:
        return self.meta if self.meta is not None else self.home / "meta" / "host.meta"

    @property
    def policy(self) -> CachePolicy:
        return CachePolicy(self.cache_budget, self.cache_min_free)
