"""The supernode's domain logic behind the v1 routes: register, pull, reports, CDN, GC.

Every method takes parsed request values and returns a :class:`Reply` with the exact body the
Go supernode would send, so the HTTP layer stays a thin router and tests can drive this class
directly. One lock guards all task state; source probes and CDN fetches run outside it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dfget.net.server import JSON, TEXT
from dfget.protocol.codes import (
    CDN_CID_PREFIX,
    CDN_SOURCE_SOURCE,
    CDN_SOURCE_SUPERNODE,
    CODE_PARAM_ERROR,
    CODE_PEER_CONTINUE,
    CODE_PEER_DOWN_OK,
    CODE_PEER_FINISH,
    CODE_PEER_WAIT,
    CODE_PIECE_REPORT_OK,
    CODE_SUCCESS,
    CODE_SYSTEM_ERROR,
    CODE_TARGET_NOT_FOUND,
    ERROR_FILE_MD5_NOT_MATCH,
    ERROR_FILE_NOT_EXIST,
)
from dfget.protocol.pieces import piece_count, piece_data_len, piece_size_for_length
from dfget.protocol.ranges import PieceRange, RangeError
from dfget.protocol.wire import decimal, envelope, lower_keys
from dfget.redact import redact_url
from dfget.supernode import cdn
from dfget.supernode.metrics import Metrics
from dfget.supernode.options import SupernodeOptions
from dfget.supernode.registration import InvalidRegistration, Registration, parse_registration
from dfget.supernode.scheduler import Scheduler
from dfget.supernode.scheduling import UPSTREAM, Assignment, Outcome, SchedulerConfig
from dfget.supernode.source import (
    PROBE_TIMEOUT,
    NotFound,
    Source,
    SourceError,
    length_from_head,
    probe_ranged,
)
from dfget.supernode.tasks import CdnStatus, Client, Task

log = logging.getLogger(__name__)

UNREACHABLE_FOR = 180.0
"""How long a 404 source is refused without probing again (v1 ``failAccessInterval``)."""
WAIT_TEXT = '{"Code":9,"Msg":"peer should wait"}'
CONTINUE_TEXT = '{"Code":10,"Msg":"peer continue"}'
_TASK_LOCK_STRIPES = 64


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str = JSON
    code: int = 0
    """The envelope's code, for metrics."""


def answer(code: int, data: Any = None, msg: str | None = None) -> Reply:
    """An HTTP 200 envelope: protocol results travel in ``code``."""
    return Reply(200, envelope(code, msg, data), code=code)


def refuse(msg: str) -> Reply:
    """How the Go supernode reports a handler error: HTTP 500 with a 500 envelope."""
    return Reply(500, envelope(CODE_SYSTEM_ERROR, msg), code=CODE_SYSTEM_ERROR)


SchedulerFactory = Callable[[int | None, SchedulerConfig, int | None], Scheduler]
"""Builds a task's scheduler: piece count (None while unknown), limits, seed. Tests swap in a
double that schedules exactly as Dragonfly 1.0.6 does."""


class OverLimit(Exception):
    """A registration that would take the supernode past one of its bounds."""


class TaskConflict(Exception):
    """Same task id, different URL or md5/identifier."""


class Supernode:
    def __init__(
        self,
        options: SupernodeOptions,
        clock: Callable[[], float] = time.monotonic,
        scheduler_factory: SchedulerFactory = Scheduler,
    ) -> None:
        self.options = options
        self._new_scheduler = scheduler_factory
        self.repo = options.home / "repo"
        self.metrics = Metrics()
        self._clock = clock
        self._local = options.local_cdn
        self._config = options.scheduler_config()
        self._lock = threading.Lock()
        self._task_locks = [threading.Lock() for _ in range(_TASK_LOCK_STRIPES)]
        self._tasks: dict[str, Task] = {}
        self._unreachable: dict[str, float] = {}
        self._probing = 0  # new tasks whose source is being contacted

    # ---- POST /peer/registry ---------------------------------------------------------------

    def register(self, body: bytes, content_type: str, local_ip: str) -> Reply:
        """Create or join a task and add the client; any failure is HTTP 500."""
        try:
            registration = parse_registration(body, content_type)
        except InvalidRegistration as exc:
            return self._refused(str(exc))
        tid = registration.task_id
        # Registrations of one task are serialised so that its source is probed only once.
        with self._task_locks[int(tid[:8], 16) % _TASK_LOCK_STRIPES]:
            try:
                task = self._task_for(registration, tid)
            except (SourceError, TaskConflict) as exc:
                return self._refused(str(exc))
            except OverLimit as exc:
                return self._refused(str(exc), logging.WARNING)
            with self._lock:
                now = self._clock()
                clients = len(task.clients)
                if registration.cid not in task.clients and clients >= self.options.max_clients:
                    reason = f"task {tid} has {clients} clients (--max-clients)"
                    return self._refused(reason, logging.WARNING)
                if task.cdn_status is CdnStatus.FAILED and self._local:
                    try:
                        self._check_fetches()
                    except OverLimit as exc:
                        return self._refused(str(exc), logging.WARNING)
                self._tasks.setdefault(tid, task)
                self._add_client(task, registration, local_ip, now)
                if task.cdn_status in (CdnStatus.WAITING, CdnStatus.FAILED):
                    self._start_cdn(task)
                data = {
                    "taskId": tid,
                    "fileLength": task.length,
                    "pieceSize": task.piece_size,
                    "cdnSource": task.cdn_source,
                    "asSeed": False,
                    "seedTaskID": "",
                }
        self.metrics.inc("registrations_total", result="success")
        return answer(CODE_SUCCESS, data, "success")

    def _refused(self, reason: str, level: int = logging.INFO) -> Reply:
        log.log(level, "registration refused: %s", reason)
        self.metrics.inc("registrations_total", result="failure")
        return refuse(reason)

    def _task_for(self, registration: Registration, tid: str) -> Task:
        with self._lock:
            task = self._tasks.get(tid)
            if task is not None:
                if task.task_url != registration.task_url or task.sign != registration.sign:
                    raise TaskConflict(f"task {tid} exists with another URL or md5/identifier")
                return task
            since = self._unreachable.get(tid)
            if since is not None and self._clock() - since < UNREACHABLE_FOR:
                url = redact_url(registration.raw_url)
                raise SourceError(f"source {url} was not found recently")
            self._check_new_task_bounds()
            self._probing += 1
        try:
            return self._new_task(registration, tid)
        finally:
            with self._lock:
                self._probing -= 1

    def _check_new_task_bounds(self) -> None:
        """Called with the lock held before a new task's source is contacted."""
        if len(self._tasks) >= self.options.max_tasks:
            raise OverLimit(f"{len(self._tasks)} tasks already (--max-tasks)")
        self._check_fetches()

    def _check_fetches(self) -> None:
        """Called with the lock held before a source is fetched (a new task, or a failed CDN
        fetched again)."""
        fetching = self._probing + sum(
            task.cdn_status is CdnStatus.RUNNING for task in self._tasks.values()
        )
        if fetching >= self.options.max_cdn_fetches:
            raise OverLimit(f"{fetching} sources are being fetched (--max-cdn-fetches)")

    def _check_length(self, length: int) -> None:
        """A new task's length against --max-file-length and, when the CDN will store it,
        --max-cdn-bytes (the lengths of the tasks it holds, which expire when idle)."""
        if length > self.options.max_file_length:
            raise OverLimit(
                f"the source announces {length} bytes, more than {self.options.max_file_length} "
                "(--max-file-length)"
            )
        if not self._local:
            return
        # A length still unknown (chunked source) may become --max-file-length.
        most = self.options.max_file_length
        with self._lock:
            held = sum(task.length if task.length >= 0 else most for task in self._tasks.values())
        if held + (length if length >= 0 else most) > self.options.max_cdn_bytes:
            raise OverLimit(
                f"the CDN holds {held} bytes; {length} more would pass {self.options.max_cdn_bytes}"
                " (--max-cdn-bytes)"
            )

    def _new_task(self, registration: Registration, tid: str) -> Task:
        source = Source(
            registration.raw_url,
            registration.header_map,
            registration.insecure,
            registration.root_cas,
        )
        fill: cdn.Fill | None = None
        try:
            if self._local:
                fill, length = self._probe_by_fill(source)
            else:
                length = probe_ranged(source)
        except NotFound:
            with self._lock:
                self._unreachable[tid] = self._clock()
            raise
        try:
            self._check_length(length)
        except OverLimit:
            if fill is not None:
                fill.abandon()
            raise
        piece_size = piece_size_for_length(length)
        count = piece_count(length, piece_size, wrapped=self._local) if length >= 0 else None
        return Task(
            id=tid,
            task_url=registration.task_url,
            sign=registration.sign,
            source=source,
            length=length,
            piece_size=piece_size,
            cdn_source=CDN_SOURCE_SUPERNODE if self._local else CDN_SOURCE_SOURCE,
            scheduler=self._new_scheduler(count, self._config, self._task_seed(tid)),
            last_access=self._clock(),
            md5=registration.md5,
            fill=fill,
        )

    @staticmethod
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

    def _task_seed(self, tid: str) -> int | None:
        """A per-task seed derived from ``--seed``, independent of the order tasks arrive in."""
        if self.options.seed is None:
            return None
        digest = hashlib.sha256(f"{self.options.seed}:{tid}".encode()).digest()
        return int.from_bytes(digest[:8], "big")

    def _add_client(
        self, task: Task, registration: Registration, local_ip: str, now: float
    ) -> None:
        cdn_ip = self.options.advertise_ip or registration.supernode_ip or local_ip
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

    # ---- CDN -------------------------------------------------------------------------------

    def _start_cdn(self, task: Task) -> None:
        """(Re)start filling the task's upstream copy; called with the lock held.

        A new task's fill is already running (its head was the length probe); a failed or
        damaged copy gets a fresh fill.
        """
        task.cdn_generation += 1
        if not self._local:
            task.scheduler.mark_all_ready()
            task.cdn_status = CdnStatus.SUCCESS
            return
        fill = task.fill
        if fill is None or fill.stop.is_set() or task.cdn_status is not CdnStatus.WAITING:
            if fill is not None:
                fill.abandon()
            fill = task.fill = cdn.Fill(task.source).start()
        task.cdn_status = CdnStatus.RUNNING
        task.piece_md5.clear()
        task.scheduler.reset_ready()
        generation = task.cdn_generation

        def on_piece(piece: int, md5: str) -> None:
            with self._lock:
                if self._current(task, generation):
                    task.piece_md5[piece] = md5
                    task.scheduler.mark_ready(piece)

        def on_done(result: cdn.CdnResult | None, error: str) -> None:
            self._cdn_done(task, generation, result, error)

        fill.begin(
            cdn.Layout(
                cdn.cache_path(self.repo, task.id),
                task.piece_size,
                task.length,
                task.md5,
                on_piece,
                on_done,
                self.options.max_file_length,
            )
        )

    def _current(self, task: Task, generation: int) -> bool:
        return self._tasks.get(task.id) is task and task.cdn_generation == generation

    def _cdn_done(
        self, task: Task, generation: int, result: cdn.CdnResult | None, error: str
    ) -> None:
        self.metrics.inc("cdn_fetches_total", result="success" if result else "failure")
        with self._lock:
            if not self._current(task, generation):
                return
            if result is None:
                log.warning("CDN of task %s failed: %s", task.id, error)
                task.cdn_status = CdnStatus.FAILED
                return
            task.length = result.length
            task.file_md5 = result.md5
            task.wrapped_length = result.wrapped_length
            task.scheduler.set_piece_count(result.pieces)
            task.cdn_status = CdnStatus.SUCCESS
        self.metrics.inc("cdn_source_bytes_total", result.length)
        log.info("CDN of task %s done: %d bytes, md5 %s", task.id, result.length, result.md5)

    # ---- GET /peer/task --------------------------------------------------------------------

    def pull(self, query: Mapping[str, str]) -> Reply:
        """Record the reported piece result, then hand out work."""
        tid, cid = query.get("taskId", ""), query.get("srcCid", "")
        reply = self._pull(tid, cid, query)
        self.metrics.inc("pulls_total", code=str(reply.code))
        return reply

    def _pull(self, tid: str, cid: str, query: Mapping[str, str]) -> Reply:
        if not tid or not cid:
            return answer(CODE_PARAM_ERROR, msg="taskId and srcCid are required")
        with self._lock:
            task = self._tasks.get(tid)
            client = task.clients.get(cid) if task is not None else None
            if task is None or client is None:
                return answer(CODE_TARGET_NOT_FOUND, msg=f"taskID({tid}) clientID({cid}): unknown")
            now = self._clock()
            task.last_access = client.last_seen = now
            status = query.get("status", "")
            if status in ("701", "702"):
                problem = self._apply_result(task, cid, query, now)
                if problem:
                    return answer(CODE_PARAM_ERROR, msg=problem)
            elif status != "700":
                return answer(CODE_PARAM_ERROR, msg=f"invalid status {status!r}")
            return self._work_for(task, client, now)

    def _apply_result(self, task: Task, cid: str, query: Mapping[str, str], now: float) -> str:
        """Apply the piece result carried by a pull; returns a problem text or ""."""
        success = {"503": True, "501": True, "500": False}.get(query.get("result", ""))
        if success is None:
            return f"invalid result {query.get('result', '')!r}"
        piece = self._piece_of(task, query.get("range", ""))
        if piece is None:
            return f"invalid range {query.get('range', '')!r}"
        holder = self._holder_id(query.get("dstCid", ""))
        self._record(task, cid, piece, holder, success, now, announce=False)
        return ""

    def _work_for(self, task: Task, client: Client, now: float) -> Reply:
        if task.cdn_status is CdnStatus.FAILED:
            return answer(CODE_SYSTEM_ERROR, msg=f"taskID({task.id}): the CDN failed")
        decision = task.scheduler.schedule(client.cid, now)
        outcome = decision.outcome
        if outcome is Outcome.FINISHED:
            if task.cdn_status is CdnStatus.SUCCESS:
                return answer(CODE_PEER_FINISH, self._finish_data(task))
            outcome = Outcome.NOTHING_AVAILABLE
        if outcome is Outcome.ASSIGNED:
            ordered = sorted(decision.assignments, key=lambda item: item.piece)
            return answer(CODE_PEER_CONTINUE, [self._piece_task(task, client, a) for a in ordered])
        ids = f"taskID({task.id}) clientID({client.cid})"
        if outcome is Outcome.LIMITED:
            return answer(CODE_PEER_CONTINUE, msg=f"{ids}: {CONTINUE_TEXT}")
        if outcome is Outcome.NOTHING_AVAILABLE:
            done = task.scheduler.done_count(client.cid)
            counts = f"clientSucCount:{done},cdnSucCount:{task.scheduler.ready_count}"
            return answer(CODE_PEER_WAIT, msg=f"{counts}: {WAIT_TEXT}")
        if outcome is Outcome.ALL_RUNNING:
            return answer(CODE_PEER_WAIT, msg=f"{ids}: {WAIT_TEXT}")
        return answer(CODE_PEER_WAIT, msg=WAIT_TEXT)

    def _finish_data(self, task: Task) -> dict[str, Any]:
        if not self._local:
            return {"fileLength": 0, "md5": ""}
        return {"fileLength": task.wrapped_length, "md5": task.file_md5}

    def _piece_task(self, task: Task, client: Client, assignment: Assignment) -> dict[str, Any]:
        """One element of a 601 answer, keys in the Go order."""
        if assignment.holder == UPSTREAM:
            cid = f"{CDN_CID_PREFIX}{client.cdn_ip}~{task.id}"
            ip, port = client.cdn_ip, self.options.download_port
            path = cdn.download_path(task.id) if self._local else client.raw_url
        else:
            holder = task.clients[assignment.holder]
            cid, ip, port, path = holder.cid, holder.ip, holder.port, holder.path
        return {
            "range": str(PieceRange.of_piece(assignment.piece, task.piece_size)),
            "pieceNum": assignment.piece,
            "pieceSize": task.piece_size,
            "pieceMd5": task.piece_md5.get(assignment.piece, ""),
            "cid": cid,
            "peerIp": ip,
            "peerPort": port,
            "path": path,
            "downLink": 0,
        }

    # ---- reports ---------------------------------------------------------------------------

    def piece_success(self, query: Mapping[str, str]) -> Reply:
        """``/peer/piece/suc``: the client stored a piece and may now serve it."""
        tid, cid = query.get("taskId", ""), query.get("cid", "")
        with self._lock:
            task = self._tasks.get(tid)
            if task is None or cid not in task.clients:
                return refuse(f"taskID({tid}) clientID({cid}): unknown")
            piece = self._piece_of(task, query.get("pieceRange", ""))
            if piece is None:
                return refuse(f"invalid pieceRange {query.get('pieceRange', '')!r}")
            now = self._clock()
            task.last_access = task.clients[cid].last_seen = now
            holder = self._holder_id(query.get("dstCid", ""))
            self._record(task, cid, piece, holder, True, now, announce=True)
        return answer(CODE_PIECE_REPORT_OK)

    def piece_error(self, query: Mapping[str, str]) -> Reply:
        """``/peer/piece/error``: blacklist a peer holder; recheck the CDN when it is the holder."""
        tid, cid = query.get("taskId", ""), query.get("srcCid", "")
        holder = self._holder_id(query.get("dstCid", ""))
        recheck: tuple[Task, int, int | None, str] | None = None
        with self._lock:
            task = self._tasks.get(tid)
            if task is not None and cid in task.clients and holder is not None:
                self.metrics.inc("piece_errors_total", holder=self._holder_kind(holder))
                if holder != UPSTREAM:
                    task.scheduler.piece_error(cid, holder)
                elif self._local:
                    piece = self._piece_of(task, query.get("range", ""))
                    recheck = (task, task.cdn_generation, piece, query.get("errorType", ""))
        if recheck is not None:
            self._recheck_cdn(*recheck)
        return Reply(200, b"", TEXT)

    def _recheck_cdn(self, task: Task, generation: int, piece: int | None, error: str) -> None:
        """Rebuild the CDN copy if a client's complaint about it turns out to be true."""
        path = cdn.cache_path(self.repo, task.id)
        if error == ERROR_FILE_NOT_EXIST:
            broken = not path.is_file()
        elif error == ERROR_FILE_MD5_NOT_MATCH and piece is not None:
            with self._lock:
                expected = task.piece_md5.get(piece)
            broken = expected is not None and not cdn.verify_piece(
                path, piece, task.piece_size, expected
            )
        else:
            broken = False
        if broken:
            with self._lock:
                if self._current(task, generation):
                    log.warning("CDN copy of task %s is damaged; fetching it again", task.id)
                    self._start_cdn(task)

    def service_down(self, query: Mapping[str, str]) -> Reply:
        """``/peer/service/down``: the client's peer server is gone; stop offering it at once."""
        tid, cid = query.get("taskId", ""), query.get("cid", "")
        with self._lock:
            task = self._tasks.get(tid)
            client = task.clients.get(cid) if task is not None else None
            if task is None or client is None:
                return refuse(f"taskID({tid}) clientID({cid}): unknown")
            task.scheduler.service_down(cid)
            client.down_since = self._clock()
        return answer(CODE_PEER_DOWN_OK)

    def download_report(self, body: bytes) -> Reply:
        """``POST /task/metrics``: count the outcome; v1 answers a bare ``null``."""
        try:
            report = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return refuse("malformed JSON body")
        if not isinstance(report, dict):
            return refuse("the body must be a JSON object")
        fields = lower_keys(report)
        tid, cid = str(fields.get("taskid") or ""), str(fields.get("cid") or "")
        with self._lock:
            task = self._tasks.get(tid)
            if task is not None:
                # Finished or failed, it pulls no more: a piece it had running (say it was
                # interrupted) must not keep the others waiting for it to land there.
                task.scheduler.stop_running(cid)
        self.metrics.inc(
            "downloads_total",
            result="success" if fields.get("success") is True else "failure",
            backsource_reason=_reason_label(fields.get("backsourcereason")),
        )
        return Reply(200, b"null\n")

    def _record(
        self,
        task: Task,
        cid: str,
        piece: int,
        holder: str | None,
        success: bool,
        now: float,
        *,
        announce: bool,
    ) -> None:
        stored = task.scheduler.report(cid, piece, holder, success, now, announce=announce)
        kind = self._holder_kind(holder)
        if stored:
            self.metrics.inc("pieces_total", holder=kind)
            size = task.piece_size - 5 if self._local else task.piece_size
            if task.length >= 0:
                size = piece_data_len(piece, task.length, task.piece_size, self._local)
            self.metrics.inc("piece_bytes_total", size, holder=kind)
        elif not success:
            self.metrics.inc("piece_errors_total", holder=kind)

    def _piece_of(self, task: Task, text: str) -> int | None:
        try:
            rng = PieceRange.parse(text)
        except RangeError:
            return None
        count = task.scheduler.piece_count
        piece = rng.start // task.piece_size
        return piece if count is None or piece < count else None

    @staticmethod
    def _holder_id(dst_cid: str) -> str | None:
        if not dst_cid:
            return None
        return UPSTREAM if dst_cid.startswith(CDN_CID_PREFIX) else dst_cid

    def _holder_kind(self, holder: str | None) -> str:
        if holder is None:
            return "unknown"
        if holder == UPSTREAM:
            return "cdn" if self._local else "source"
        return "peer"

    # ---- housekeeping ----------------------------------------------------------------------

    def collect(self) -> None:
        """Drop idle tasks (a pull then gets 502) and peers that have been down for a while."""
        now = self._clock()
        expired: list[Task] = []
        with self._lock:
            for tid, task in list(self._tasks.items()):
                if now - task.last_access >= self.options.task_expire:
                    del self._tasks[tid]
                    if task.fill is not None:
                        task.fill.abandon()
                    expired.append(task)
                    continue
                for cid, client in list(task.clients.items()):
                    down = client.down_since
                    if down is not None and now - down >= self.options.peer_gc_delay:
                        task.scheduler.remove_client(cid)
                        del task.clients[cid]
            for tid, since in list(self._unreachable.items()):
                if now - since >= UNREACHABLE_FOR:
                    del self._unreachable[tid]
        for task in expired:
            log.info("task %s expired", task.id)
            if self._local:
                cdn.cache_path(self.repo, task.id).unlink(missing_ok=True)

    def gauges(self) -> dict[str, float]:
        with self._lock:
            return {
                "tasks": len(self._tasks),
                "peers": sum(len(task.clients) for task in self._tasks.values()),
            }

    def stop(self) -> None:
        """Stop every running CDN fetch (shutdown)."""
        with self._lock:
            for task in self._tasks.values():
                if task.fill is not None:
                    task.fill.abandon()


def _reason_label(value: object) -> str:
    """A back-source reason as a metrics label: v1's numbers (0-10, +1000 with --notbs), not
    whatever string a client sends (each new label would grow the metrics for ever)."""
    reason = decimal(str(value or "0"), 4)
    return str(reason) if reason is not None and reason < 2000 else "other"
