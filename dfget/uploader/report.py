"""``/peer/service/down`` for every finished task the peer server stops serving.

Reports run on a small thread pool so neither a request handler (a file changed under us) nor
the collector waits for a slow supernode; shutdown waits for them, but only for a bounded time.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading

from dfget.protocol.supernode import service_down
from dfget.uploader.served_task import ServedTask

log = logging.getLogger(__name__)


class DownReporter:
    def __init__(self, workers: int = 4) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(
            workers, thread_name_prefix="service-down"
        )
        self._pending: set[concurrent.futures.Future[None]] = set()
        self._lock = threading.Lock()

    def submit(self, task: ServedTask) -> None:
        if not task.supernode:
            log.info("no supernode recorded for %s: nobody to tell it is gone", task.name)
            return
        try:
            future = self._pool.submit(_report, task)
        except RuntimeError:  # a handler dropping a task while the server shuts down
            log.warning("not reporting %s: the server is shutting down", task.name)
            return
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._done)

    def close(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the reports in flight, then give up on the rest."""
        with self._lock:
            pending = set(self._pending)
        _, late = concurrent.futures.wait(pending, timeout=timeout)
        if late:
            log.warning("%d service-down reports did not finish in time", len(late))
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _done(self, future: concurrent.futures.Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)


def _report(task: ServedTask) -> None:
    if service_down(task.supernode, task.task_id, task.cid):
        log.info(
            "reported service down for %s (task %s) to %s", task.name, task.task_id, task.supernode
        )
    else:
        log.warning("service-down report for %s to %s failed", task.name, task.supernode)
