"""``POST /peer/registry``: a registration creates or joins a task, within the supernode's bounds.

Registrations of one task are serialised so that its source is contacted once; a source found
missing is refused for a while without being contacted again. The bounds (tasks, clients per
task, sources fetched at once, file length, bytes the CDN holds) keep a flood of registrations
from exhausting the supernode; any refusal is HTTP 500, as in v1.
"""

from __future__ import annotations

import hashlib
import logging
import threading

from dfget.errors import Refused
from dfget.protocol.codes import CDN_SOURCE_SOURCE, CDN_SOURCE_SUPERNODE, CODE_SUCCESS
from dfget.protocol.pieces import piece_count, piece_size_for_length
from dfget.redact import redact_url
from dfget.supernode import cdn
from dfget.supernode.cdn_copy import start_cdn
from dfget.supernode.registration import InvalidRegistration, PeerRegistration, parse_registration
from dfget.supernode.replies import Reply, answer, refuse
from dfget.supernode.scheduler import SchedulerFactory
from dfget.supernode.source import (
    PROBE_TIMEOUT,
    NotFound,
    Source,
    SourceError,
    length_from_head,
    probe_ranged,
)
from dfget.supernode.state import SupernodeState
from dfget.supernode.tasks import CdnStatus, Client, Task

log = logging.getLogger(__name__)

UNREACHABLE_FOR = 180.0
"""How long a 404 source is refused without probing again (v1 ``failAccessInterval``)."""
_TASK_LOCK_STRIPES = 64


class OverLimit(Refused):
    """A registration that would take the supernode past one of its bounds."""


class TaskConflict(Refused):
    """Same task id, different URL or md5/identifier."""


class Admission:
    def __init__(self, state: SupernodeState, scheduler_factory: SchedulerFactory) -> None:
        self._state = state
        self._options = state.options
        self._new_scheduler = scheduler_factory
        self._config = state.options.scheduler_config()
        self._task_locks = [threading.Lock() for _ in range(_TASK_LOCK_STRIPES)]
        self._unreachable: dict[str, float] = {}
        self._probing = 0  # new tasks whose source is being contacted
        # Lengths of new tasks that passed --max-cdn-bytes and are not in the task table yet:
        # counted, so that registrations of other new tasks meanwhile see them.
        self._reserved: dict[str, int] = {}

    def register(self, body: bytes, content_type: str, local_ip: str) -> Reply:
        """Create or join a task and add the client; any failure is HTTP 500."""
        try:
            registration = parse_registration(body, content_type)
        except InvalidRegistration as exc:
            return self._refused(str(exc))
        tid = registration.task_id
        state = self._state
        # Registrations of one task are serialised so that its source is probed only once.
        with self._task_locks[int(tid[:8], 16) % _TASK_LOCK_STRIPES]:
            try:
                return self._admit(registration, tid, local_ip)
            finally:
                with state.lock:
                    self._reserved.pop(tid, None)

    def _admit(self, registration: PeerRegistration, tid: str, local_ip: str) -> Reply:
        state = self._state
        try:
            task = self._task_for(registration, tid)
        except (SourceError, TaskConflict) as exc:
            return self._refused(str(exc))
        except OverLimit as exc:
            return self._refused(str(exc), logging.WARNING)
        with state.lock:
            now = state.clock()
            clients = len(task.clients)
            if registration.cid not in task.clients and clients >= self._options.max_clients:
                reason = f"task {tid} has {clients} clients (--max-clients)"
                return self._refused(reason, logging.WARNING)
            if task.cdn_status is CdnStatus.FAILED and state.local:
                try:
                    self._check_fetches()
                except OverLimit as exc:
                    return self._refused(str(exc), logging.WARNING)
            state.tasks.setdefault(tid, task)
            self._reserved.pop(tid, None)  # counted in the table now
            self._add_client(task, registration, local_ip, now)
            if task.cdn_status in (CdnStatus.WAITING, CdnStatus.FAILED):
                start_cdn(state, task)
            data = {
                "taskId": tid,
                "fileLength": task.length,
                "pieceSize": task.piece_size,
                "cdnSource": task.cdn_source,
                "asSeed": False,
                "seedTaskID": "",
            }
        state.metrics.inc("registrations_total", result="success")
        return answer(CODE_SUCCESS, data, "success")

    def forget_unreachable(self, now: float) -> None:
        """Let sources found missing long enough ago be probed again; called with the lock
        held (garbage collection)."""
        for tid, since in list(self._unreachable.items()):
            if now - since >= UNREACHABLE_FOR:
                del self._unreachable[tid]

    def _refused(self, reason: str, level: int = logging.INFO) -> Reply:
        log.log(level, "registration refused: %s", reason)
        self._state.metrics.inc("registrations_total", result="failure")
        return refuse(reason)

    def _task_for(self, registration: PeerRegistration, tid: str) -> Task:
        state = self._state
        with state.lock:
            task = state.tasks.get(tid)
            if task is not None:
                if task.task_url != registration.task_url or task.sign != registration.sign:
                    raise TaskConflict(f"task {tid} exists with another URL or md5/identifier")
                return task
            since = self._unreachable.get(tid)
            if since is not None and state.clock() - since < UNREACHABLE_FOR:
                url = redact_url(registration.raw_url)
                raise SourceError(f"source {url} was not found recently")
            self._check_new_task_bounds()
            self._probing += 1
        try:
            return self._new_task(registration, tid)
        finally:
            with state.lock:
                self._probing -= 1

    def _check_new_task_bounds(self) -> None:
        """Called with the lock held before a new task's source is contacted; new tasks whose
        source is being contacted count too (they are not in the task table yet)."""
        tasks = len(self._state.tasks) + self._probing
        if tasks >= self._options.max_tasks:
            raise OverLimit(f"{tasks} tasks already (--max-tasks)")
        self._check_fetches()

    def _check_fetches(self) -> None:
        """Called with the lock held before a source is fetched (a new task, or a failed CDN
        fetched again)."""
        fetching = self._probing + sum(
            task.cdn_status is CdnStatus.RUNNING for task in self._state.tasks.values()
        )
        if fetching >= self._options.max_cdn_fetches:
            raise OverLimit(f"{fetching} sources are being fetched (--max-cdn-fetches)")

    def _check_length(self, tid: str, length: int) -> None:
        """A new task's length against --max-file-length and, when the CDN will store it,
        --max-cdn-bytes (the lengths of the tasks it holds, which expire when idle)."""
        options = self._options
        if length > options.max_file_length:
            raise OverLimit(
                f"the source announces {length} bytes, more than {options.max_file_length} "
                "(--max-file-length)"
            )
        if not self._state.local:
            return
        # A length still unknown (chunked source) may become --max-file-length.
        most = options.max_file_length
        wanted = length if length >= 0 else most
        with self._state.lock:
            tasks = self._state.tasks.values()
            held = sum(task.length if task.length >= 0 else most for task in tasks)
            held += sum(self._reserved.values())
            if held + wanted > options.max_cdn_bytes:
                raise OverLimit(
                    f"the CDN holds {held} bytes; {length} more would pass "
                    f"{options.max_cdn_bytes} (--max-cdn-bytes)"
                )
            self._reserved[tid] = wanted

    def _new_task(self, registration: PeerRegistration, tid: str) -> Task:
        state = self._state
        source = Source(
            registration.raw_url,
            registration.header_map,
            registration.insecure,
            registration.root_cas,
        )
        fill: cdn.Fill | None = None
        try:
            if state.local:
                fill, length = _probe_by_fill(source)
            else:
                length = probe_ranged(source)
        except NotFound:
            with state.lock:
                self._unreachable[tid] = state.clock()
            raise
        try:
            self._check_length(tid, length)
        except OverLimit:
            if fill is not None:
                fill.abandon()
            raise
        piece_size = piece_size_for_length(length)
        count = piece_count(length, piece_size, wrapped=state.local) if length >= 0 else None
        return Task(
            id=tid,
            task_url=registration.task_url,
            sign=registration.sign,
            source=source,
            length=length,
            piece_size=piece_size,
            cdn_source=CDN_SOURCE_SUPERNODE if state.local else CDN_SOURCE_SOURCE,
            scheduler=self._new_scheduler(count, self._config, self._task_seed(tid)),
            last_access=state.clock(),
            md5=registration.md5,
            fill=fill,
        )

    def _task_seed(self, tid: str) -> int | None:
        """A per-task seed derived from ``--seed``, independent of the order tasks arrive in."""
        if self._options.seed is None:
            return None
        digest = hashlib.sha256(f"{self._options.seed}:{tid}".encode()).digest()
        return int.from_bytes(digest[:8], "big")

    def _add_client(
        self, task: Task, registration: PeerRegistration, local_ip: str, now: float
    ) -> None:
        cdn_ip = self._options.advertise_ip or registration.supernode_ip or local_ip
        task.clients[registration.cid] = Client(
            cid=registration.cid,
            ip=registration.ip,
            port=registration.port,
            path=registration.path,
            raw_url=registration.raw_url,
            cdn_ip=cdn_ip,
            last_seen=now,
        )
        # A client without a peer server (cdn pattern: port 0) is never offered as a holder;
        # v1 did offer it, and every peer then failed against it.
        task.scheduler.add_client(registration.cid, serves=registration.port > 0)
        task.last_access = now


def _probe_by_fill(source: Source) -> tuple[cdn.Fill, int]:
    """Start the CDN fill and read the length from its response head."""
    fill = cdn.Fill(source).start()
    head = fill.head(PROBE_TIMEOUT)
    if head is None or head.error:
        return fill, -1
    try:
        return fill, length_from_head(head.status, head.content_length)
    except SourceError:
        fill.abandon()
        raise
