"""This host's part in the P2P network: its identity, its peer server, the file's hand-over."""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dfget.config import DEFAULT_NODE, Node, Settings, parse_nodes
from dfget.download.output import Outcome, Reporter
from dfget.errors import P2PFailedError
from dfget.protocol.taskid import task_key
from dfget.units import format_duration

if TYPE_CHECKING:
    # The P2P side (httpx among it) is imported only by downloads that use it: a
    # --pattern source download starts ~60 ms sooner.
    from dfget.download.p2p import P2PDownload
    from dfget.uploader.spawn import ServerStart

log = logging.getLogger(__name__)


SERVER_DID_NOT_START = "peer server did not start: this download is not served to other peers"


CONNECT_TIMEOUT = 1.0


@dataclass(slots=True)
class Identity:
    """Names of this download on the wire."""

    ip: str
    sign: str
    cid: str
    task_file_name: str

    @classmethod
    def new(cls, ip: str, output_name: str) -> Identity:
        sign = f"{os.getpid()}-{time.time():.3f}"
        # The name becomes a URL path segment on our peer server: keep it plain.
        name = re.sub(r"[^A-Za-z0-9._-]", "_", output_name).lstrip(".") or "file"
        return cls(ip, sign, f"{ip}-{sign}", f"{name}-{sign}")


def local_ip_towards(nodes: Sequence[Node]) -> str:
    """The local address of the first supernode that accepts a TCP connection ('' if none)."""
    for node in nodes:
        try:
            with socket.create_connection((node.host, node.port), timeout=CONNECT_TIMEOUT) as sock:
                return str(sock.getsockname()[0])
        except OSError as exc:
            log.info("supernode %s not reachable: %s", node.address, exc.strerror or exc)
    return ""


@dataclass
class Peer:
    """This host's part in the P2P network for one download."""

    identity: Identity
    server: ServerStart | None  # None: nothing served (cdn pattern)

    @property
    def server_port(self) -> int:
        """The port advertised to the supernode; 0: nothing served (cdn pattern, or the peer
        server could not even be given a port)."""
        return self.server.port() if self.server is not None else 0

    @property
    def serving(self) -> bool:
        return self.server_port > 0

    @property
    def served(self) -> bool:
        """Whether the peer server came up and serves this download (waits for its start)."""
        return self.server is not None and self.server.ready()


def nodes_of(settings: Settings) -> list[Node]:
    return list(settings.nodes or parse_nodes(DEFAULT_NODE))


def join_network(settings: Settings, reporter: Reporter, outcome: Outcome) -> Peer | None:
    """Find our address towards the supernodes and our peer server; None: go to the source."""
    from dfget.protocol.codes import REASON_REGISTER_FAILED
    from dfget.protocol.supernode import node_order

    nodes = node_order(nodes_of(settings), task_key(settings.url, settings.filters))
    local_ip = local_ip_towards(nodes)
    if not local_ip:
        why = f"no supernode reachable ({', '.join(n.address for n in nodes)}: connection failed)"
        give_up_p2p(settings, reporter, outcome, REASON_REGISTER_FAILED, why)
        return None
    ip = settings.ip or local_ip
    name = "stdout" if settings.to_stdout else settings.output.name
    identity = Identity.new(ip, name)
    if settings.pattern != "p2p":
        return Peer(identity, None)
    from dfget.uploader.spawn import ServerStart

    peer = Peer(
        identity,
        ServerStart(
            settings.home,
            ip=ip,
            port=settings.port,
            expiretime=settings.expiretime,
            alivetime=settings.alivetime,
            cache_budget=settings.cache_budget,
            cache_min_free=settings.cache_min_free,
            totallimit=settings.totallimit,
            verbose=settings.verbose,
            task_file_name=identity.task_file_name,
        ),
    )
    if not peer.serving:
        reporter.note(SERVER_DID_NOT_START)
    return peer


def give_up_p2p(
    settings: Settings, reporter: Reporter, outcome: Outcome, reason: int, why: str
) -> None:
    outcome.reason = reason
    if settings.notbs:
        outcome.reason = reason + 1000
        raise P2PFailedError(f"P2P download failed and --notbs forbids the source: {why}")
    outcome.accounting.why_source(why)
    reporter.note(f"{why}: downloading from the source")


def announce_finished(
    settings: Settings, peer: Peer | None, p2p: P2PDownload, outcome: Outcome
) -> None:
    """Tell our peer server the file is complete and verified; say for how long it is served."""
    registration = p2p.state.registration
    if peer is None or not peer.served or registration is None:
        return
    from dfget.protocol import peer_server

    supernode = registration.node.address
    host = peer_server.loopback_for(peer.identity.ip)
    if peer_server.finish(
        host,
        peer.server_port,
        peer.identity.task_file_name,
        registration.task_id,
        peer.identity.cid,
        supernode,
    ):
        address = f"[{peer.identity.ip}]" if ":" in peer.identity.ip else peer.identity.ip
        outcome.serving = f"serving pieces on {address}:{peer.server_port} " + (
            f"for at most {format_duration(settings.expiretime)} after their last use"
            if settings.expiretime
            else "while they fit the cache budget (least recently used dropped first)"
        )
