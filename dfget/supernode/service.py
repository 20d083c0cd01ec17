"""The supernode's domain logic behind the v1 routes: register, pull, reports, CDN, GC.

Every method takes parsed request values and returns a :class:`Reply` with the exact body the
Go supernode would send, so the HTTP layer stays a thin router and tests can drive this class
directly. Each route is handled in its own module (:mod:`~dfget.supernode.admission`,
:mod:`~dfget.supernode.pulls`, :mod:`~dfget.supernode.reports`, with
:mod:`~dfget.supernode.cdn_copy` keeping the tasks' upstream copies); this class gives them
one shared state and does the housekeeping.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from dfget.supernode import cdn, pulls, reports
from dfget.supernode.admission import Admission
from dfget.supernode.options import SupernodeOptions
from dfget.supernode.replies import Reply
from dfget.supernode.scheduler import Scheduler, SchedulerFactory
from dfget.supernode.state import SupernodeState
from dfget.supernode.tasks import Task

log = logging.getLogger(__name__)


class Supernode:
    def __init__(
        self,
        options: SupernodeOptions,
        clock: Callable[[], float] = time.monotonic,
        scheduler_factory: SchedulerFactory = Scheduler,
    ) -> None:
        self.options = options
        self._state = SupernodeState(options, clock)
        self.repo = self._state.repo
        self.metrics = self._state.metrics
        self._admission = Admission(self._state, scheduler_factory)

    def register(self, body: bytes, content_type: str, local_ip: str) -> Reply:
        return self._admission.register(body, content_type, local_ip)

    def pull(self, query: Mapping[str, str]) -> Reply:
        return pulls.pull(self._state, query)

    def piece_success(self, query: Mapping[str, str]) -> Reply:
        return reports.piece_success(self._state, query)

    def piece_error(self, query: Mapping[str, str]) -> Reply:
        return reports.piece_error(self._state, query)

    def service_down(self, query: Mapping[str, str]) -> Reply:
        return reports.service_down(self._state, query)

    def download_report(self, body: bytes) -> Reply:
        return reports.download_report(self._state, body)

    # ---- housekeeping ----------------------------------------------------------------------

    def collect(self) -> None:
        """Drop idle tasks (a pull then gets 502) and peers that have been down for a while."""
        state = self._state
        now = state.clock()
        expired: list[Task] = []
        with state.lock:
            for tid, task in list(state.tasks.items()):
                if now - task.last_access >= self.options.task_expire:
                    del state.tasks[tid]
                    if task.fill is not None:
                        task.fill.abandon()
                    expired.append(task)
                    continue
                for cid, client in list(task.clients.items()):
                    down = client.down_since
                    if down is not None and now - down >= self.options.peer_gc_delay:
                        task.scheduler.remove_client(cid)
                        del task.clients[cid]
            self._admission.forget_unreachable(now)
        for task in expired:
            log.info("task %s expired", task.id)
            if state.local:
                cdn.cache_path(self.repo, task.id).unlink(missing_ok=True)

    def gauges(self) -> dict[str, float]:
        with self._state.lock:
            tasks = self._state.tasks
            return {
                "tasks": len(tasks),
                "peers": sum(len(task.clients) for task in tasks.values()),
            }

    def stop(self) -> None:
        """Stop every running CDN fetch (shutdown)."""
        with self._state.lock:
            for task in self._state.tasks.values():
                if task.fill is not None:
                    task.fill.abandon()
