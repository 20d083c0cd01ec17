from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.helpers import stop_process
from tests.support.origin import Origin
from tests.support.peers import Peers
from tests.support.servers import (
    FakeSupernode,
    PeerServer,
    SupernodeFactory,
    SupernodeProcess,
    launch_peer_server,
    start_supernode,
)


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[Origin]:
    server = Origin(tmp_path / "origin").start()
    yield server
    server.stop()


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[Peers]:
    group = Peers(tmp_path)
    yield group
    group.stop()


@pytest.fixture
def peer_server(tmp_path: Path) -> Iterator[Callable[..., PeerServer]]:
    """Factory: ``peer_server("--expiretime", "1s", home=...)`` starts a server; all are stopped."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str, home: Path | None = None) -> PeerServer:
        home = home or tmp_path / f"home{len(started)}"
        proc, line = launch_peer_server(home, *args)
        started.append(proc)
        assert line.startswith("dfget uploader server port is "), line
        return PeerServer(proc, int(line.rsplit(" ", 1)[1]), home)

    yield start
    for proc in started:
        stop_process(proc)


@pytest.fixture
def fake_supernode() -> Iterator[FakeSupernode]:
    server = FakeSupernode.start()
    yield server
    server.stop()


@pytest.fixture
def supernode(tmp_path: Path) -> Iterator[SupernodeFactory]:
    """Factory: ``supernode(*extra_args, cdn_pattern="local", shared_port=False,
    scheduling="ours")``; ``scheduling="v1"`` runs tests/support/v1_supernode.py (Dragonfly 1.0.6's
    scheduling rules) instead of ours.

    Starts the real supernode on free ports of 127.0.0.1 with ``--advertise-ip 127.0.0.1`` and
    ``--seed 1``, waits for ``/_ping``, and stops every instance at teardown. ``shared_port``
    uses the API port as download port (as in the transcript's source-pattern capture).
    """
    started: list[SupernodeProcess] = []

    def start(
        *args: str, cdn_pattern: str = "local", shared_port: bool = False, scheduling: str = "ours"
    ) -> SupernodeProcess:
        home = tmp_path / f"supernode-{len(started)}"
        node = start_supernode(home, args, cdn_pattern, shared_port, scheduling)
        started.append(node)
        node.wait_ready()
        return node

    yield start
    for node in started:
        node.stop()


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Thread switches every microsecond: races that need an unlucky switch show up."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)
