"""A rollout outlasts v1's timers: node 2 still pulls from node 1 long after its download.

Node 1's peer server runs in this process with a clock the test moves (no sleeping past v1's
3-minute expiry); its dfget finds it through the meta file like any server it started. Everything
else is real: the supernode process, dfget processes, the origin, sockets.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from dfget.uploader import meta
from dfget.uploader.lifecycle import exit_reason
from dfget.uploader.options import ServerOptions
from dfget.uploader.report import DownReporter
from dfget.uploader.server import UploaderServer
from dfget.uploader.service import Clock, Uploader
from tests.support.helpers import FakeClock, random_bytes, run_dfget
from tests.support.origin import Origin
from tests.support.peers import Peers, by_kind
from tests.support.servers import SupernodeFactory

MiB = 1024 * 1024
SIZE = 24 * MiB
PAST_V1_TIMERS = 3600.0  # an hour later: past v1's 3m expiry and 5m idle exit


@contextmanager
def peer_server_in_process(options: ServerOptions, clock: FakeClock) -> Iterator[Uploader]:
    """A peer server for ``options.home`` on 127.0.0.1, recorded in its meta file."""
    reporter = DownReporter()
    uploader = Uploader(options, reporter.submit, Clock(clock.wall, clock.monotonic))
    server = UploaderServer(("127.0.0.1", 0), uploader)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    meta.write_port(options.meta_file, port)
    uploader.port, uploader.status_dir = port, options.meta_file.parent
    try:
        yield uploader
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        reporter.close(1.0)


@pytest.mark.parametrize(
    ("scheduling", "timers"),
    [("ours", "budget"), ("v1", "budget"), ("v1", "v1 timers")],
)
def test_node_two_pulls_from_node_one_after_v1_would_have_expired(
    tmp_path: Path,
    origin: Origin,
    supernode: SupernodeFactory,
    peers: Peers,
    scheduling: str,
    timers: str,
) -> None:
    data = random_bytes(SIZE, seed=7)
    url = origin.add("/v2/app/blobs/sha256-layer", data)
    node = supernode(cdn_pattern="source", scheduling=scheduling)
    clock = FakeClock()
    v1_timers = {"expiretime": 180.0, "alivetime": 300.0} if timers == "v1 timers" else {}
    options = ServerOptions(home=tmp_path / "n1", ip="127.0.0.1", **v1_timers)  # type: ignore[arg-type]
    with peer_server_in_process(options, clock) as uploader:
        first = peers.json("n1", url, "--node", node.node)
        assert by_kind(first)["source"] == SIZE
        pieces = first["source_assigned_pieces"]
        assert first["source_reasons"] == [
            f"the supernode sent {pieces} piece(s) to the source: no other peer held pieces "
            "of this task yet"
        ]
        origin_requests = len(origin.stats.requests)

        clock.advance(PAST_V1_TIMERS)
        uploader.housekeep()
        second = peers.json("n2", url, "--node", node.node)
        after = len(origin.stats.requests) - origin_requests
        if timers == "v1 timers":  # the control: v1's rule sends node 2 to the registry
            assert exit_reason(uploader, options) == "no upload activity for 5m0s"
            assert not uploader.store.tasks()
            assert after > 0 and by_kind(second)["source"] == SIZE
            return
        assert exit_reason(uploader, options) is None
        assert after == 0, f"node 2 made {after} origin requests"
        assert by_kind(second)["peer"] == SIZE
        holders = {h["address"] for h in second["holders"] if h["pieces"]}  # type: ignore[attr-defined]
        assert holders == {f"127.0.0.1:{uploader.port}"}
    assert peers.output("n2") == data


def served_names(home: Path) -> list[str]:
    """What `dfget cache --json` lists as served, least recently used first."""
    result = run_dfget(["cache", "--home", str(home), "--json"], timeout=30)
    assert result.returncode == 0, result.stderr.decode()
    status = json.loads(result.stdout)
    return [entry["name"] for entry in status["served"]]


def test_budget_of_two_and_a_half_files_keeps_the_two_most_recent(
    origin: Origin, supernode: SupernodeFactory, peers: Peers
) -> None:
    size = 4 * MiB
    blobs = [random_bytes(size, seed=seed) for seed in (1, 2, 3)]
    urls = [origin.add(f"/v2/app/blobs/layer{i}", blob) for i, blob in enumerate(blobs)]
    node = supernode()
    home = peers.home("n1")
    budget = ("--cache-budget", str(5 * size // 2), "--cache-min-free", "0")
    listed = []
    for i, url in enumerate(urls):
        result = peers.json(
            "n1", url, "--node", node.node, *budget, out=f"n1-{i}.bin", timers=False
        )
        assert "while they fit the cache budget" in str(result["serving"])
        listed.append(served_names(home))
    first, second, third = (names[-1] for names in listed)
    assert listed[2] == [second, third], listed  # the least recently used one went
    text = run_dfget(["cache", "--home", str(home)], timeout=30).stdout.decode()
    assert "serving 2 file(s), 8.0 MiB of a 10.0 MiB budget" in text, text
    assert f"{second}  <- dropped next" in text and f"{third}\n" in text
    assert sorted(p.name for p in (home / "data").iterdir()) == sorted(
        f"{name}{suffix}" for name in (second, third) for suffix in (".service", ".verified")
    )
    port = meta.read_port(home / "meta" / "host.meta")
    reply = httpx.get(
        f"http://127.0.0.1:{port}/peer/file/{first}",
        headers={"pieceNum": "0", "pieceSize": str(size), "Range": "bytes=0-99"},
    )
    assert reply.status_code == 404
    metrics = httpx.get(f"{node.url}/metrics").text
    assert 'api_requests_total{route="/peer/service/down"} 1' in metrics

    result = peers.json("n2", urls[0], "--node", node.node)
    assert peers.output("n2") == blobs[0]
    node1 = f"127.0.0.1:{port}"
    assert all(h["address"] != node1 for h in result["holders"]), result["holders"]  # type: ignore[attr-defined]
    assert by_kind(result)["cdn"] == size


def test_node_one_still_seeds_after_its_output_is_deleted(
    origin: Origin, supernode: SupernodeFactory, peers: Peers
) -> None:
    """dfdaemon deletes each blob once docker has it; the output is a hard link of the file the
    peer server serves (same filesystem), so deleting it must not end the seeding."""
    data = random_bytes(SIZE, seed=8)
    url = origin.add("/v2/app/blobs/sha256-handed-over", data)
    node = supernode(cdn_pattern="source")
    peers.json("n1", url, "--node", node.node, timers=False)
    output = peers.out / "n1.bin"
    assert output.stat().st_nlink == 2  # the output is the served file
    output.unlink()
    before = len(origin.stats.requests)
    second = peers.json("n2", url, "--node", node.node)
    assert len(origin.stats.requests) == before
    assert by_kind(second)["peer"] == SIZE
    assert peers.output("n2") == data
