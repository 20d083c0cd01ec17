"""IPv6 end to end: supernode, peer servers, origin and every request on ::1 only."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from dfget.errors import ExitCode
from tests.support.helpers import random_bytes, run_dfget
from tests.support.origin import Origin
from tests.support.peers import Peers, by_kind
from tests.support.servers import SupernodeFactory


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback (::1)")


@pytest.fixture
def origin6(tmp_path: Path) -> Origin:
    server = Origin(tmp_path / "origin6", host="::1").start()
    yield server  # type: ignore[misc]
    server.stop()


@pytest.mark.parametrize("pattern", ["local", "source"])
def test_p2p_download_over_ipv6_only(
    origin6: Origin, supernode: SupernodeFactory, peers: Peers, pattern: str
) -> None:
    size = 9 * 1024 * 1024 + 17
    data = random_bytes(size, seed=31)
    url = origin6.add("/v6.bin", data)
    assert url.startswith("http://[::1]:")
    node = supernode(
        "--listen-ip", "::", "--advertise-ip", "::1",
        cdn_pattern=pattern, shared_port=pattern == "source",
    )  # fmt: skip
    node6 = f"[::1]:{node.port}"
    first = peers.json("p1", url, "--node", node6, "--ip", "::1")
    second = peers.json("p2", url, "--node", node6, "--ip", "::1")
    assert peers.output("p1") == data and peers.output("p2") == data
    assert first["serving"] and "[::1]:" in first["serving"]
    assert by_kind(second)["peer"] == size
    assert all(h["address"].startswith("[::1]:") for h in second["holders"])
    assert {r.client for r in origin6.stats.requests} == {"::1"}
    meta = json.loads((peers.root / "p1" / "meta" / "host.meta").read_text())
    with socket.create_connection(("::1", meta["servicePort"]), timeout=2):
        pass  # the peer server listens on ::1


def test_ipv6_address_refused_by_an_ipv4_only_supernode_is_explained(
    origin: Origin, tmp_path: Path
) -> None:
    from tests.support.scripted_supernode import ScriptedSupernode

    data = random_bytes(1000, seed=32)
    url = origin.add("/f.bin", data)
    go_like = ScriptedSupernode(url, data, refuse_ipv6=True)
    try:
        result = run_dfget(
            ["-u", url, "-o", str(tmp_path / "out.bin"), "--node", go_like.address,
             "--home", str(tmp_path / "h"), "--ip", "::1", "--pattern", "cdn"],
            timeout=60,
        )  # fmt: skip
    finally:
        go_like.stop()
    assert result.returncode == ExitCode.OK  # back to the source, with a reason
    assert b"IPv6" in result.stderr and b"--ip" in result.stderr
    assert (tmp_path / "out.bin").read_bytes() == data
