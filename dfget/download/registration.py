"""Registering a download with a supernode: the request a v1 supernode expects, and the walk
over the supernodes in the task's order (wrapping around) until one accepts.

Unlike v1, which tries its list once in a shuffled order, every dfget of the same blob walks the
same order (:func:`node_order`), so they meet at the same supernode.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from dfget.config import Node, Settings
from dfget.download.cancel import Cancel
from dfget.download.network import Identity
from dfget.errors import P2PFallback, SupernodeAuthError
from dfget.protocol.codes import (
    CODE_NEED_AUTH,
    CODE_SUCCESS,
    CODE_URL_NOT_REACHABLE,
    CODE_WAIT_AUTH,
    REASON_REGISTER_FAILED,
)
from dfget.protocol.messages import RegisterRequest, Registration, SupernodeError
from dfget.protocol.supernode import SupernodeApi, node_order
from dfget.protocol.taskid import task_url
from dfget.redact import SENSITIVE_HEADERS, Scrubber

log = logging.getLogger(__name__)

ATTEMPTS_PER_NODE = 3  # a node that answers "wait for auth" is asked again, a second apart


class Registrar:
    """Registers this download at the first supernode, in the task's order, that accepts it."""

    def __init__(
        self,
        settings: Settings,
        identity: Identity,
        nodes: Sequence[Node],
        task_key: str,
        headers: Sequence[tuple[str, str]],
        connect: Callable[[Node], SupernodeApi],
        cancel: Cancel,
        scrub: Scrubber,
    ) -> None:
        self.settings = settings
        self.identity = identity
        self.nodes = node_order(nodes, task_key)
        self.headers = list(headers)
        self.connect = connect
        self.cancel = cancel
        self.scrub = scrub
        self.tried: list[str] = []

    def request(self, server_port: int) -> RegisterRequest:
        """The registration; the user's credential headers go along only when the supernode's
        CDN needs them (``supernode_credentials``)."""
        s = self.settings
        return RegisterRequest(
            raw_url=s.url,
            task_url=task_url(s.url, s.filters),
            cid=self.identity.cid,
            ip=self.identity.ip,
            host_name=socket.gethostname(),
            port=server_port,
            path=f"/peer/file/{self.identity.task_file_name}",
            md5=s.md5,
            identifier=s.identifier,
            call_system=s.callsystem,
            headers=tuple(
                f"{name}: {value}"
                for name, value in self.headers
                if s.supernode_credentials or name.lower() not in SENSITIVE_HEADERS
            ),
            dfdaemon=s.dfdaemon,
            insecure=s.insecure,
            root_cas=tuple(_b64_file(path) for path in s.cacerts),
        )

    def register(self, server_port: int, exclude: str = "") -> tuple[SupernodeApi, Registration]:
        """Walk the nodes, skipping ``exclude``; raises P2PFallback when none accepts, and
        SupernodeAuthError when the source needs credentials the supernode lacks."""
        errors: list[str] = []
        request = self.request(server_port)
        for node in self.nodes:
            if node.address == exclude:
                continue
            self.cancel.check()
            api = self.connect(node)
            for _attempt in range(ATTEMPTS_PER_NODE):
                try:
                    code, registration, msg = api.register(request)
                except SupernodeError as exc:
                    errors.append(self.scrub(str(exc)))
                    break
                if code == CODE_WAIT_AUTH:
                    time.sleep(1)
                    continue
                if code == CODE_SUCCESS and registration is not None:
                    self.tried.append(node.address)
                    log.info(
                        "registered at supernode %s: task %s, %d bytes, piece size %d, cdn %s",
                        node.address,
                        registration.task_id,
                        registration.file_length,
                        registration.piece_size,
                        registration.cdn_source,
                    )
                    return api, registration
                if code == CODE_NEED_AUTH:
                    raise SupernodeAuthError(
                        f"supernode {node.address}: the source requires authentication"
                    )
                errors.append(self.scrub(f"{node.address}: code {code} {msg}".strip()))
                if code == CODE_URL_NOT_REACHABLE:
                    raise P2PFallback(REASON_REGISTER_FAILED, "; ".join(errors))
                break
        message = "registration failed: " + ("; ".join(errors) or "no supernode left")
        if ":" in self.identity.ip and errors:
            message += (
                f" (this peer's address {self.identity.ip} is IPv6; Dragonfly 1.0.6 supernodes"
                " accept IPv4 peers only: give an IPv4 address with --ip)"
            )
        raise P2PFallback(REASON_REGISTER_FAILED, message)


def _b64_file(path: str) -> str:
    import base64

    return base64.b64encode(Path(path).read_bytes()).decode()
