"""Options of `dfget server` (spec §6.3)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dfget.config import DEFAULT_ALIVETIME, DEFAULT_EXPIRETIME, DEFAULT_HOME


@dataclass(slots=True)
class ServerOptions:
    home: Path = DEFAULT_HOME
    data: Path | None = None
    meta: Path | None = None
    ip: str = ""
    port: int = 0
    expiretime: float = DEFAULT_EXPIRETIME
    alivetime: float = DEFAULT_ALIVETIME
    totallimit: int = 0
    verbose: bool = False
    listen_fd: int | None = None  # an inherited listening socket to serve on

    @property
    def data_dir(self) -> Path:
        return self.data if self.data is not None else self.home / "data"

    @property
    def meta_file(self) -> Path:
        return self.meta if self.meta is not None else self.home / "meta" / "host.meta"
