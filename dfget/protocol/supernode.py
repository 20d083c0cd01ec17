"""The Dragonfly v1 supernode API as typed calls, and the choice of supernode for a task.

Requests look like dfget 1.0.6's on the wire: unescaped queries in v1
parameter order, JSON bodies with dfget's key spellings and Go's escaping, 5 s timeouts.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from dfget import PROTOCOL_VERSION
from dfget.config import Node
from dfget.net.oneshot import get, query
from dfget.protocol.codes import (
    CDN_SOURCE_SOURCE,
    CDN_SOURCE_SUPERNODE,
    CODE_PEER_CONTINUE,
    DEFAULT_SUPERNODE_PORT,
    JSON_REQUEST_CONTENT_TYPE,
)
from dfget.protocol.pieces import MAX_PIECE_SIZE, MiB, piece_count
from dfget.protocol.ranges import PieceRange
from dfget.protocol.wire import go_json, raw_query

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

API_TIMEOUT = 5.0


class SupernodeError(Exception):
    """A supernode call failed: transport error, non-200 HTTP status or unusable body."""


@dataclass(frozen=True, slots=True)
class RegisterRequest:
    """What dfget tells a supernode when it registers a download (``/peer/registry``); the
    client adds the supernode's own address. Keys go out in dfget 1.0.6's order, optional ones
    only when set."""

    raw_url: str
    task_url: str
    cid: str
    ip: str
    host_name: str
    port: int  # our peer server's; 0: this peer serves nothing
    path: str
    md5: str = ""
    identifier: str = ""
    call_system: str = ""
    headers: tuple[str, ...] = ()
    dfdaemon: bool = False
    insecure: bool = False
    root_cas: tuple[str, ...] = ()  # base64 PEM files

    def as_json(self, supernode_ip: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "superNodeIp": supernode_ip,
            "rawUrl": self.raw_url,
            "taskUrl": self.task_url,
            "cid": self.cid,
            "ip": self.ip,
            "hostName": self.host_name,
            "port": self.port,
            "path": self.path,
            "version": PROTOCOL_VERSION,
        }
        if self.md5:
            body["md5"] = self.md5
        elif self.identifier:
            body["identifier"] = self.identifier
        optional = {
            "callSystem": self.call_system,
            "headers": list(self.headers),
            "dfdaemon": self.dfdaemon,
            "insecure": self.insecure,
            "rootCAs": list(self.root_cas),
        }
        body.update((key, value) for key, value in optional.items() if value)
        return body


@dataclass(frozen=True, slots=True)
class Registration:
    node: Node
    task_id: str
    file_length: int
    piece_size: int
    cdn_source: str

    @classmethod
    def from_answer(cls, data: object, node: Node) -> Registration:
        """The ``data`` of a 200 registration answer, every field checked: a task id of 64
        hex digits, a known cdnSource, a length up to 1 PiB, a piece size up to v1's 15 MiB
        (wrapped pieces: whole MiB, or their frame heads would be ambiguous)."""
        if not isinstance(data, dict):
            raise SupernodeError("supernode sent a registration answer without data")
        registration = cls(
            node=node,
            task_id=_text(data, "taskId"),
            file_length=_number(data, "fileLength", -1, MAX_FILE_LENGTH, default=-1),
            piece_size=_number(data, "pieceSize", 6, MAX_PIECE_SIZE),
            cdn_source=_text(data, "cdnSource") or CDN_SOURCE_SUPERNODE,
        )
        if not re.fullmatch(r"[0-9a-f]{64}", registration.task_id):
            raise SupernodeError(f"supernode sent taskId {registration.task_id[:70]!r}")
        if registration.cdn_source not in (CDN_SOURCE_SUPERNODE, CDN_SOURCE_SOURCE):
            raise SupernodeError(f"supernode sent cdnSource {registration.cdn_source[:40]!r}")
        if registration.cdn_source == CDN_SOURCE_SUPERNODE and registration.piece_size % MiB:
            raise SupernodeError(
                f"supernode sent pieceSize {registration.piece_size} for wrapped pieces"
            )
        return registration


@dataclass(frozen=True, slots=True)
class PieceTask:
    """One piece assignment of a 601 answer."""

    range: str
    piece_num: int
    piece_size: int
    piece_md5: str
    cid: str
    peer_ip: str
    peer_port: int
    path: str

    @classmethod
    def from_json(cls, item: dict[str, Any], registration: Registration) -> PieceTask:
        """A piece task checked against the registration: the registered piece size, a piece
        inside the file, its own range; anything else is the supernode's error."""
        task = cls(
            range=_text(item, "range"),
            piece_num=_number(item, "pieceNum", 0, MAX_PIECES),
            piece_size=_number(item, "pieceSize", 0, MAX_PIECE_SIZE),
            piece_md5=_text(item, "pieceMd5"),
            cid=_text(item, "cid"),
            peer_ip=_text(item, "peerIp"),
            peer_port=_number(item, "peerPort", 0, 65535),
            path=_text(item, "path"),
        )
        size = registration.piece_size
        if task.piece_size != size:
            raise SupernodeError(f"supernode sent pieceSize {task.piece_size}, registered {size}")
        if task.range != str(PieceRange.of_piece(task.piece_num, size)):
            raise SupernodeError(f"supernode sent piece {task.piece_num} as {task.range[:40]!r}")
        length = registration.file_length
        wrapped = registration.cdn_source != CDN_SOURCE_SOURCE
        if length >= 0 and task.piece_num >= piece_count(length, size, wrapped):
            raise SupernodeError(f"supernode sent piece {task.piece_num}, past the end of the file")
        return task

    @property
    def md5(self) -> str:
        """The bare md5 hex of the wrapped piece ('' when unknown)."""
        return self.piece_md5.split(":", 1)[0]


MAX_FILE_LENGTH = 1 << 50
MAX_TASKS_PER_ANSWER = 64  # v1 hands out at most 4 pieces per pull
MAX_PIECES = MAX_FILE_LENGTH // 5


def _number(item: dict[str, Any], name: str, low: int, high: int, default: int = 0) -> int:
    """An integer field of a supernode answer, within [low, high]."""
    value = item.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SupernodeError(f"supernode sent {name}={str(value)[:40]!r}")
    return value


def _text(item: dict[str, Any], name: str) -> str:
    value = item.get(name) or ""
    if not isinstance(value, str) or len(value) > 8192:
        raise SupernodeError(f"supernode sent a {type(value).__name__} as {name}")
    return value


@dataclass(slots=True)
class PullAnswer:
    code: int
    msg: str = ""
    pieces: list[PieceTask] = field(default_factory=list)
    md5: str = ""


def _envelope(response: httpx.Response) -> dict[str, Any]:
    if response.status_code != 200:
        raise SupernodeError(f"{response.status_code}:{response.text.strip()[:200]}")
    try:
        body = response.json()
    except ValueError as exc:
        raise SupernodeError(f"invalid JSON from supernode: {response.text[:80]!r}") from exc
    if not isinstance(body, dict):
        raise SupernodeError(f"unexpected answer from supernode: {response.text[:80]!r}")
    return body


REQUEST_KINDS = {
    "/peer/registry": "registrations",
    "/peer/task": "pulls",
    "/peer/piece/suc": "piece_reports",
    "/peer/piece/error": "piece_errors",
    "/task/metrics": "metrics",
}


class RequestCount:
    """Supernode requests one download made, by kind (supernodes are small shared machines:
    ``--json`` shows what a download cost them)."""

    def __init__(self) -> None:
        self._counts = dict.fromkeys(REQUEST_KINDS.values(), 0)
        self._lock = threading.Lock()

    def add(self, path: str) -> None:
        with self._lock:
            self._counts[REQUEST_KINDS[path]] += 1

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return {**self._counts, "total": sum(self._counts.values())}


class SupernodeClient:
    """Calls to one supernode over a keep-alive connection, counted in ``counts``."""

    def __init__(self, node: Node, http: httpx.Client, counts: RequestCount | None = None) -> None:
        self.node = node
        self.http = http
        self.base = f"http://{node.address}"
        self.counts = counts or RequestCount()

    def _get(self, path: str, params: Sequence[tuple[str, object]]) -> httpx.Response:
        import httpx

        self.counts.add(path)
        try:
            return self.http.get(f"{self.base}{path}?{raw_query(params)}")
        except httpx.HTTPError as exc:
            raise SupernodeError(f"{self.node.address}: {exc or type(exc).__name__}") from exc

    def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        import httpx

        self.counts.add(path)
        try:
            return self.http.post(
                f"{self.base}{path}",
                content=go_json(body),
                headers={"Content-Type": JSON_REQUEST_CONTENT_TYPE},
            )
        except httpx.HTTPError as exc:
            raise SupernodeError(f"{self.node.address}: {exc or type(exc).__name__}") from exc

    def register(self, request: RegisterRequest) -> tuple[int, Registration | None, str]:
        """POST /peer/registry; returns (code, registration or None, message)."""
        envelope = _envelope(self._post("/peer/registry", request.as_json(self.node.host)))
        code = _number(envelope, "code", 0, 999)
        msg = _text(envelope, "msg")
        if code != 200:
            return code, None, msg
        return code, Registration.from_answer(envelope.get("data"), self.node), msg

    def pull(
        self,
        registration: Registration,
        src_cid: str,
        dst_cid: str,
        piece_range: str,
        result: int,
        status: int,
    ) -> PullAnswer:
        """GET /peer/task carrying the result of one piece (or the start marker)."""
        params = [
            ("srcCid", src_cid),
            ("dstCid", dst_cid),
            ("range", piece_range),
            ("result", result),
            ("status", status),
            ("taskId", registration.task_id),
        ]
        envelope = _envelope(self._get("/peer/task", params))
        answer = PullAnswer(_number(envelope, "code", 0, 999), _text(envelope, "msg"))
        data = envelope.get("data")
        if answer.code == CODE_PEER_CONTINUE and isinstance(data, list):
            if len(data) > MAX_TASKS_PER_ANSWER or not all(isinstance(i, dict) for i in data):
                raise SupernodeError("supernode sent an unusable piece list")
            answer.pieces = [PieceTask.from_json(item, registration) for item in data]
        elif isinstance(data, dict):
            answer.md5 = _text(data, "md5")
            if answer.md5 and not re.fullmatch(r"[0-9a-f]{32}", answer.md5):
                raise SupernodeError(f"supernode sent md5 {answer.md5[:40]!r}")
        return answer

    def piece_success(self, task_id: str, cid: str, dst_cid: str, piece_range: str) -> None:
        params = [
            ("taskId", task_id),
            ("cid", cid),
            ("dstCid", dst_cid),
            ("pieceRange", piece_range),
        ]
        _envelope(self._get("/peer/piece/suc", params))

    def piece_error(
        self,
        error_type: str,
        src_cid: str,
        dst_cid: str,
        dst_ip: str,
        task_id: str,
        piece_range: str,
        real_md5: str = "",
        expected_md5: str = "",
    ) -> None:
        params = [
            ("errorType", error_type),
            ("srcCid", src_cid),
            ("dstCid", dst_cid),
            ("dstIp", dst_ip),
            ("taskId", task_id),
            ("range", piece_range),
            ("realMd5", real_md5),
            ("expectedMd5", expected_md5),
        ]
        self._get("/peer/piece/error", params)

    def metrics(self, body: dict[str, Any]) -> None:
        response = self._post("/task/metrics", body)
        if response.status_code != 200:
            raise SupernodeError(f"{response.status_code}:{response.text.strip()[:200]}")

    def service_down(self, task_id: str, cid: str) -> bool:
        return service_down(self.node.address, task_id, cid)


class SupernodeApi(Protocol):
    """The calls a download makes to its supernode (:class:`SupernodeClient` over HTTP, or a
    stand-in in tests). Every call but ``service_down`` raises SupernodeError on failure."""

    node: Node

    def register(self, request: RegisterRequest) -> tuple[int, Registration | None, str]: ...

    def pull(
        self,
        registration: Registration,
        src_cid: str,
        dst_cid: str,
        piece_range: str,
        result: int,
        status: int,
    ) -> PullAnswer: ...

    def piece_success(self, task_id: str, cid: str, dst_cid: str, piece_range: str) -> None: ...

    def piece_error(
        self,
        error_type: str,
        src_cid: str,
        dst_cid: str,
        dst_ip: str,
        task_id: str,
        piece_range: str,
        real_md5: str = "",
        expected_md5: str = "",
    ) -> None: ...

    def metrics(self, body: dict[str, Any]) -> None: ...

    def service_down(self, task_id: str, cid: str) -> bool: ...


def service_down(supernode: str, task_id: str, cid: str) -> bool:
    """``/peer/service/down`` to ``supernode`` (``ip:port``, v1's port if none): the peer
    server no longer serves the task. A one-shot GET (the peer server has no httpx client);
    True if the supernode answered HTTP 200."""
    if ":" not in supernode.rsplit("]", 1)[-1]:
        supernode = f"{supernode}:{DEFAULT_SUPERNODE_PORT}"
    reply = get(supernode, f"/peer/service/down?{query([('taskId', task_id), ('cid', cid)])}")
    return reply is not None and reply[0] == 200


def new_http_client() -> httpx.Client:
    """One keep-alive client for every supernode call of a download (no env proxies: v1's
    fasthttp client ignores them, and a supernode is an internal service).

    The supernode API is plain HTTP (``SupernodeClient.base``), so no TLS context is built:
    loading the CA bundle for one would cost ~0.1 s of every run.
    """
    import httpx

    return httpx.Client(
        timeout=API_TIMEOUT,
        trust_env=False,
        verify=False,
        headers={"User-Agent": f"dfget/{PROTOCOL_VERSION}"},
    )


def node_order(nodes: Sequence[Node], task_key: str) -> list[Node]:
    """All nodes in the order this task tries them: weighted rendezvous hashing of the task key.

    Every dfget downloading the same blob computes the same order, so all its peers meet at
    the same supernode (v1 shuffles the list, scattering them); on failure the next node in
    this order takes over, and the preferred one is back as soon as it answers again.
    """

    def score(node: Node) -> float:
        digest = hashlib.sha256(f"{node.host}:{node.port}|{task_key}".encode()).digest()
        uniform = (int.from_bytes(digest[:8], "big") + 1) / 2.0**64
        return -node.weight / math.log(uniform)

    unique = list(dict.fromkeys(nodes))
    return sorted(unique, key=score, reverse=True)
