"""What the supernode remembers about tasks and the clients downloading them.

Plain records; :class:`~dfget.supernode.state.SupernodeState` keeps them under one lock.
Scheduling state (who holds what, who runs what) lives in each task's
:class:`~dfget.supernode.scheduler.Scheduler`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from dfget.supernode.cdn import Fill
from dfget.supernode.scheduler import Scheduler
from dfget.supernode.source import Source


class CdnStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"


@dataclass(slots=True)
class Client:
    """One dfget run (cid) registered for a task; also a holder once it stores pieces."""

    cid: str
    ip: str
    port: int
    path: str
    raw_url: str
    cdn_ip: str
    """IP given to this client for pieces the supernode serves: the address it reached us at."""
    last_seen: float
    down_since: float | None = None


@dataclass(slots=True)
class Task:
    id: str
    task_url: str
    sign: str
    source: Source
    length: int
    """Raw length from the probe (-1 unknown) until the CDN learns the real one."""
    piece_size: int
    cdn_source: str
    scheduler: Scheduler
    last_access: float
    md5: str = ""
    """Expected md5 given by the user, checked by the CDN."""
    clients: dict[str, Client] = field(default_factory=dict)
    cdn_status: CdnStatus = CdnStatus.WAITING
    cdn_generation: int = 0
    fill: Fill | None = None
    piece_md5: dict[int, str] = field(default_factory=dict)
    file_md5: str = ""
    wrapped_length: int = 0
