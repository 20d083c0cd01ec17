"""End-to-end P2P downloads: real supernode, real peer servers, real dfget processes.

Every test asserts where the bytes came from (origin request/byte counts, per-holder
accounting in --json), not only that the output is right: a downloader that quietly falls back
to the source would also produce the right bytes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from dfget.errors import ExitCode
from tests.support.helpers import free_port, random_bytes, run_dfget, start_dfget
from tests.support.origin import Origin
from tests.support.peers import Peers, by_kind
from tests.support.servers import SupernodeFactory

SIZE = 9 * 1024 * 1024 + 4321  # three pieces, the last one partial


def test_local_cdn_then_peer(origin: Origin, supernode: SupernodeFactory, peers: Peers) -> None:
    data = random_bytes(SIZE, seed=11)
    url = origin.add("/blob.bin", data)
    node = supernode()
    first = peers.json("p1", url, "--node", node.node)
    assert peers.output("p1") == data
    assert first["serving"], "peer 1 is not serving: its peer server did not start"
    assert by_kind(first)["cdn"] == SIZE and by_kind(first)["source"] == 0
    requests = first["supernode_requests"]
    assert requests == {  # type: ignore[comparison-overlap]
        "registrations": 1,
        "pulls": requests["pulls"],  # type: ignore[index]
        "piece_reports": 3,
        "piece_errors": 0,
        "metrics": 1,
        "total": 5 + requests["pulls"],  # type: ignore[index]
    }
    assert 2 <= requests["pulls"] <= 12  # type: ignore[index]
    served = origin.stats.bytes_by_path["/blob.bin"]
    assert SIZE <= served <= SIZE * 1.05  # the supernode fetched it once (plus its probe)

    origin.reset_stats()
    second = peers.json("p2", url, "--node", node.node)
    assert peers.output("p2") == data
    assert by_kind(second) == {"peer": SIZE, "cdn": 0, "source": 0, "resumed": 0}
    assert origin.stats.body_bytes == 0 and not origin.stats.requests
    holders = second["holders"]
    assert {h["kind"] for h in holders} == {"peer"}  # type: ignore[index, union-attr]


def test_source_pattern_second_peer_takes_nothing_from_origin(
    origin: Origin, supernode: SupernodeFactory, peers: Peers
) -> None:
    data = random_bytes(SIZE, seed=12)
    url = origin.add("/layer.bin", data)
    node = supernode(cdn_pattern="source", shared_port=True)
    first = peers.json("p1", url, "--node", node.node)
    assert peers.output("p1") == data
    assert first["serving"], "peer 1 is not serving: its peer server did not start"
    assert by_kind(first)["source"] == SIZE
    piece_bytes = sum(
        1 for r in origin.stats.requests if r.headers.get("Cdnsource") or r.headers.get("cdnSource")
    )
    assert piece_bytes >= 1
    assert origin.stats.bytes_by_path["/layer.bin"] <= SIZE * 1.05  # each byte left once (+probes)

    origin.reset_stats()
    second = peers.json("p2", url, "--node", node.node)
    assert peers.output("p2") == data
    assert by_kind(second)["peer"] == SIZE and by_kind(second)["source"] == 0
    assert origin.stats.body_bytes <= 1  # at most the supernode's bytes=0-0 probe


def test_failover_to_a_live_supernode(
    origin: Origin, supernode: SupernodeFactory, peers: Peers
) -> None:
    data = random_bytes(SIZE, seed=13)
    url = origin.add("/f.bin", data)
    node = supernode()
    dead = f"127.0.0.1:{free_port()}"
    for nodes in (f"{dead},{node.node}", f"{node.node},{dead}"):
        result = peers.json(f"p{len(peers.homes)}", url, "--node", nodes)
        assert by_kind(result)["source"] == 0
    assert peers.output("p0") == data


def test_notbs_with_supernode_down_fails_clearly(origin: Origin, peers: Peers) -> None:
    url = origin.add("/f.bin", random_bytes(1000, seed=1))
    args = peers.args("p1", url, "--node", f"127.0.0.1:{free_port()}", "--notbs")
    result = run_dfget(args, timeout=60)
    assert result.returncode == ExitCode.P2P_FAILED
    assert b"--notbs" in result.stderr
    assert not (peers.out / "p1.bin").exists()
    assert not origin.stats.requests


def test_supernode_unreachable_means_one_line_and_the_source(origin: Origin, peers: Peers) -> None:
    data = random_bytes(5000, seed=2)
    url = origin.add("/f.bin", data)
    args = peers.args("p1", url, "--node", f"127.0.0.1:{free_port()}")
    result = run_dfget(args, timeout=60)
    assert result.returncode == ExitCode.OK
    notes = [line for line in result.stderr.decode().splitlines() if "supernode" in line]
    assert len(notes) == 1 and "no supernode reachable" in notes[0]
    assert peers.output("p1") == data


def test_holder_killed_mid_download(
    origin: Origin, supernode: SupernodeFactory, peers: Peers
) -> None:
    size = 24 * 1024 * 1024
    data = random_bytes(size, seed=14)
    url = origin.add("/big.bin", data)
    node = supernode()
    peers.json("p1", url, "--node", node.node)
    holder_pid = peers.server_pid("p1")
    # Peer 2 pulls slowly from peer 1; peer 1's server dies half way.
    proc = start_dfget(peers.args("p2", url, "--node", node.node, "--json", "--locallimit", "8M"))
    try:
        time.sleep(1.2)
        os.kill(holder_pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == ExitCode.OK, stderr.decode()[-2000:]
    assert peers.output("p2") == data
    result = json.loads(stdout)
    assert by_kind(result)["peer"] > 0  # it did start from the peer
    assert sum(by_kind(result).values()) >= size


def test_verbose_logs_one_line_per_piece(
    origin: Origin, supernode: SupernodeFactory, peers: Peers
) -> None:
    url = origin.add("/v.bin", random_bytes(SIZE, seed=15))
    node = supernode()
    peers.json("p1", url, "--node", node.node, "--verbose")
    log = (peers.root / "p1" / "logs" / "dfclient.log").read_text()
    lines = [line for line in log.splitlines() if " from cdn " in line and "bytes in" in line]
    assert len(lines) == 3
    assert all(" ms" in line and "range " in line for line in lines)


def test_text_summary_names_holders_and_serving_time(
    origin: Origin, supernode: SupernodeFactory, peers: Peers
) -> None:
    url = origin.add("/s.bin", random_bytes(SIZE, seed=16))
    node = supernode()
    result = run_dfget(peers.args("p1", url, "--node", node.node), timeout=60)
    out = result.stdout.decode()
    assert "download SUCCESS" in out
    assert "3 pieces: 3 from supernode CDN 127.0.0.1:" in out
    assert "serving pieces on 127.0.0.1:" in out and "for at most 1m0s after their last use" in out


def test_go_style_dfdaemon_invocation(
    origin: Origin, supernode: SupernodeFactory, tmp_path: Path
) -> None:
    data = random_bytes(SIZE, seed=17)
    url = origin.add(
        "/v2/lib/app/blobs/sha256:" + __import__("hashlib").sha256(data).hexdigest(), data
    )
    node = supernode()
    home = tmp_path / "dfdaemon"
    out = tmp_path / "repo" / "name"
    port = free_port()
    argv = [
        "-u", url, "-o", str(out),
        "--home", str(home), "--ip", "127.0.0.1", "--port", str(port),
        "--expiretime", "3m0s", "--alivetime", "5m0s",
        "--dfdaemon", "--verbose", "-s", "20M", "--totallimit", "20M",
        "--node", node.node, "--header", "X-Test:1",
    ]  # fmt: skip
    try:
        result = run_dfget(argv, timeout=120)
        assert result.returncode == 0, result.stderr.decode()
        assert out.read_bytes() == data
    finally:
        pid_file = home / "meta" / "server.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGTERM)


def test_supernode_killed_mid_download_migrates_keeping_pieces(
    origin: Origin, supernode: SupernodeFactory, peers: Peers
) -> None:
    from dfget.config import parse_nodes
    from dfget.protocol.supernode import node_order
    from dfget.protocol.taskid import task_key

    size = 24 * 1024 * 1024
    data = random_bytes(size, seed=18)
    url = origin.add("/m.bin", data)
    first, second = supernode(), supernode()
    nodes = f"{first.node},{second.node}"
    preferred = node_order(list(parse_nodes(nodes)), task_key(url, ()))[0]
    doomed = first if preferred.address == first.node else second
    proc = start_dfget(peers.args("p1", url, "--node", nodes, "--json", "--locallimit", "8M"))
    try:
        time.sleep(1.5)
        doomed.proc.kill()
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == ExitCode.OK, stderr.decode()[-2000:]
    assert peers.output("p1") == data
    result = json.loads(stdout)
    assert by_kind(result)["cdn"] == size  # every byte once, from one CDN or the other
    assert by_kind(result)["source"] == 0
    log = (peers.root / "p1" / "logs" / "dfclient.log").read_text()
    assert f"supernode {doomed.node}" in log and "migrating" in log


def test_compressible_pieces_travel_zstd_between_our_peers(
    origin: Origin, supernode: SupernodeFactory, peers: Peers
) -> None:
    data = (b"dragonfly layer " * (SIZE // 16 + 1))[:SIZE]
    url = origin.add("/z.bin", data)
    node = supernode()
    peers.json("p1", url, "--node", node.node)
    trace = peers.root / "p2.trace"
    second = peers.json("p2", url, "--node", node.node, "--trace", str(trace))
    assert peers.output("p2") == data
    assert by_kind(second)["peer"] == SIZE
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    pieces = [e for e in events if e["event"] == "piece" and e["ok"]]
    assert len(pieces) == 3
    assert all(e["wire_bytes"] < e["bytes"] / 10 for e in pieces)  # zstd on the wire


def test_peers_of_one_blob_meet_at_one_supernode_and_move_together(
    origin: Origin, supernode: SupernodeFactory, peers: Peers
) -> None:
    from dfget.config import parse_nodes
    from dfget.protocol.supernode import node_order
    from dfget.protocol.taskid import task_key

    size = 24 * 1024 * 1024
    data = random_bytes(size, seed=19)
    url = origin.add("/ring.bin", data)
    nodes = [supernode() for _ in range(3)]
    listed = ",".join(n.node for n in nodes)
    ring = [n.address for n in node_order(list(parse_nodes(listed)), task_key(url, ()))]
    by_address = {n.node: n for n in nodes}
    first, second = by_address[ring[0]], by_address[ring[1]]
    # Six dfgets, each given the list in its own order: the task decides, not the list.
    procs = []
    for index in range(6):
        order = ",".join(n.node for n in nodes[index % 3 :] + nodes[: index % 3])
        procs.append(
            start_dfget(
                peers.args(f"p{index}", url, "--node", order, "--json", "--locallimit", "4M")
            )
        )
    logs = [peers.root / f"p{index}" / "logs" / "dfclient.log" for index in range(6)]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(
        log.exists() and "registered at supernode" in log.read_text() for log in logs
    ):
        time.sleep(0.1)
    time.sleep(0.5)  # some pieces land before the supernode dies
    first.proc.kill()
    results = []
    for index, proc in enumerate(procs):
        stdout, stderr = proc.communicate(timeout=180)
        assert proc.returncode == ExitCode.OK, stderr.decode()[-2000:]
        assert peers.output(f"p{index}") == data
        results.append(json.loads(stdout))
    for result in results:
        assert result["supernodes"][0] == first.node  # everyone met at the preferred node
        assert result["supernodes"][-1] == second.node  # and moved to the next on the ring
        assert sum(by_kind(result).values()) == size  # only missing pieces fetched again
        assert by_kind(result)["source"] == 0
    # Each supernode's CDN fetched the blob at most once; the third was never involved.
    assert origin.stats.bytes_by_path["/ring.bin"] <= 2 * size * 1.05
    assert "registered" not in (by_address[ring[2]].log.read_text())


# dfget with a peer server that never comes up after its port was bound and advertised.
NO_SERVER = (
    "import sys; import dfget.uploader.spawn as spawn; "
    "spawn._start = lambda args, listener: None; "
    "from dfget.cli import main; sys.argv[0] = 'dfget'; main()"
)


def test_peer_server_that_never_starts_is_withdrawn(
    origin: Origin, supernode: SupernodeFactory, peers: Peers
) -> None:
    data = random_bytes(SIZE, seed=19)
    url = origin.add("/unserved.bin", data)
    node = supernode()
    result = subprocess.run(
        [sys.executable, "-c", NO_SERVER, *peers.args("p1", url, "--node", node.node, "--json")],
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == ExitCode.OK, result.stderr.decode()[-2000:]
    first = json.loads(result.stdout)
    assert peers.output("p1") == data
    assert not first["serving"]
    assert any("peer server did not start" in note for note in first["notes"])  # type: ignore[union-attr]
    assert not list((peers.root / "p1" / "data").iterdir())  # the work file went to the output

    # The supernode was told: the next peer is not sent to the dead port at all.
    second = peers.json("p2", url, "--node", node.node)
    assert peers.output("p2") == data
    assert by_kind(second)["peer"] == 0 and by_kind(second)["cdn"] == SIZE
    assert all(h["failures"] == 0 for h in second["holders"])  # type: ignore[index, union-attr]
