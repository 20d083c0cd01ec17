"""The Dragonfly v1 supernode API as typed calls, and the choice of supernode for a task.

Requests look like dfget 1.0.6's on the wire: unescaped queries in v1
parameter order, JSON bodies with dfget's key spellings and Go's escaping, 5 s timeouts.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from dfget import PROTOCOL_VERSION
from dfget.config import Node
from dfget.net.oneshot import get, query
from dfget.protocol.codes import (
    DEFAULT_SUPERNODE_PORT,
    JSON_REQUEST_CONTENT_TYPE,
)
from dfget.protocol.messages import (
    PieceErrorReport,
    PieceReport,
    PullAnswer,
    RegisterRequest,
    Registration,
    SupernodeError,
)
from dfget.protocol.wire import go_json, raw_query

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

API_TIMEOUT = 5.0


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
        return Registration.from_envelope(envelope, self.node)

    def pull(self, registration: Registration, cid: str, report: PieceReport) -> PullAnswer:
        """GET /peer/task carrying the result of one piece (or the start marker)."""
        params = [
            ("srcCid", cid),
            ("dstCid", report.dst_cid),
            ("range", report.range),
            ("result", report.result),
            ("status", report.status),
            ("taskId", registration.task_id),
        ]
        return PullAnswer.from_envelope(_envelope(self._get("/peer/task", params)), registration)

    def piece_success(self, task_id: str, cid: str, dst_cid: str, piece_range: str) -> None:
        params = [
            ("taskId", task_id),
            ("cid", cid),
            ("dstCid", dst_cid),
            ("pieceRange", piece_range),
        ]
        _envelope(self._get("/peer/piece/suc", params))

    def piece_error(self, report: PieceErrorReport) -> None:
        self._get("/peer/piece/error", report.query())

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

    def pull(self, registration: Registration, cid: str, report: PieceReport) -> PullAnswer: ...

    def piece_success(self, task_id: str, cid: str, dst_cid: str, piece_range: str) -> None: ...

    def piece_error(self, report: PieceErrorReport) -> None: ...

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
