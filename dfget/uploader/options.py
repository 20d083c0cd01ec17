"""Options of `dfget server`, plus the cache budget that replaces v1's timers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dfget.config import DEFAULT_CACHE_MIN_FREE, DEFAULT_HOME
from dfget.uploader.cache import Amount, CachePolicy


@dataclass(slots=True)
class ServerOptions:
    home: Path = DEFAULT_HOME
    data: Path | None = None
    meta: Path | None = None
    ip: str = ""
    port: int = 0
    expiretime: float | None = None  # set: a file is dropped this long after its last use
    alivetime: float | None = None  # set: the server exits after this long without uploads
    cache_budget: Amount | None = None  # None: 10% of the data filesystem, at most 8 GiB
    cache_min_free: Amount = field(default_factory=lambda: Amount.parse(DEFAULT_CACHE_MIN_FREE))
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
