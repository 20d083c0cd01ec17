"""What the supernode's handlers share: options, metrics, the clock and the task table.

One lock guards the task table and everything in its tasks, their schedulers included; source
probes and CDN fetches run outside it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from dfget.supernode.metrics import Metrics
from dfget.supernode.options import SupernodeOptions
from dfget.supernode.tasks import Task


class SupernodeState:
    def __init__(self, options: SupernodeOptions, clock: Callable[[], float]) -> None:
        self.options = options
        self.clock = clock
        self.local = options.local_cdn
        self.repo = options.home / "repo"
        self.metrics = Metrics()
        self.lock = threading.Lock()
        self.tasks: dict[str, Task] = {}
