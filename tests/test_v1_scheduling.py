"""Our client under Dragonfly 1.0.6's scheduling: the rules of the test double, then fan-outs.

Users keep their Go 1.0.6 supernodes (``cdnPattern: source``), whose scheduler sends pieces
nobody holds to the origin first; tests/support/v1_supernode.py reproduces its rules. The
fan-out tests count what the origin served: the v1 client behaviour made the registry serve such
a blob about twice, ours must keep it near one copy.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dfget.supernode.scheduling import UPSTREAM, PieceOutcome, SchedulerConfig
from tests.support.helpers import random_bytes, start_dfget
from tests.support.origin import Origin
from tests.support.peers import Peers
from tests.support.servers import SupernodeFactory
from tests.support.v1_supernode import SUPER_LOAD_RESET, V1Scheduler

MiB = 1024 * 1024


def v1(pieces: int, *clients: str) -> V1Scheduler:
    scheduler = V1Scheduler(pieces, SchedulerConfig(), seed=1)
    scheduler.mark_all_ready()
    for cid in clients:
        scheduler.add_client(cid)
    return scheduler


def assigned(scheduler: V1Scheduler, cid: str, now: float = 0.0) -> list[tuple[int, str]]:
    decision = scheduler.schedule(cid, now)
    return [(a.piece, a.holder) for a in decision.assignments]


def test_four_origin_pieces_per_task_freed_only_by_piece_suc() -> None:
    s = v1(8, "a", "b")
    assert assigned(s, "a") == [(0, UPSTREAM), (1, UPSTREAM), (2, UPSTREAM), (3, UPSTREAM)]
    assert s.schedule("b", 0).outcome is PieceOutcome.NO_HOLDER  # 602: the origin slots are full
    s.report("a", 0, UPSTREAM, True, 0.1)  # the pull's 503 frees nothing ...
    assert s.schedule("b", 0.1).outcome is PieceOutcome.NO_HOLDER
    s.report("a", 0, UPSTREAM, True, 0.2, announce=True)  # ... /peer/piece/suc does
    assert s.upstream_load == 3
    # Fewest holders first: the unheld pieces come before piece 0, which "a" now holds, and
    # one of them (distance to b's centre, 0) goes to the origin although "a" is fetching it.
    assert assigned(s, "b", 0.2) == [(1, UPSTREAM), (0, "a")]


def test_a_failed_origin_piece_leaks_its_slot_until_30s_pass() -> None:
    s = v1(8, "a", "b")
    assigned(s, "a")
    for piece in range(4):
        s.report("a", piece, UPSTREAM, False, 1.0)
    assert s.upstream_load == 4 and s.schedule("b", 2.0).outcome is PieceOutcome.NO_HOLDER
    later = 1.0 + SUPER_LOAD_RESET + 0.1
    assert len(assigned(s, "b", later)) == 4


def test_a_pull_result_makes_no_holder_and_busy_holders_send_to_the_origin() -> None:
    s = v1(2, "a", *"bcdefg")
    assigned(s, "a")
    for piece in (0, 1):
        s.report("a", piece, UPSTREAM, True, 0.1)
    assert s.holders(0) == []
    for piece in (0, 1):
        s.report("a", piece, UPSTREAM, True, 0.2, announce=True)
    assert s.holders(0) == ["a"]
    got = [assigned(s, cid, 0.3) for cid in "bcdefg"]
    # Each takes both pieces from "a" until its five upload slots are gone, then the origin.
    holders = [holder for each in got for _, holder in each]
    assert holders.count("a") == 5 and holders.count(UPSTREAM) == 4


def test_blacklist_after_one_failure_and_mean_of_running_pieces_orders_ties() -> None:
    s = v1(12, "a", "b")
    for piece in range(12):
        s.report("a", piece, UPSTREAM, True, 0.0, announce=True)
    first = assigned(s, "b")
    assert [p for p, _ in first] == [0, 1, 2, 3]  # nothing running: centre 0
    s.report("b", 0, "a", False, 0.1)
    assert all(holder == UPSTREAM for _, holder in assigned(s, "b", 0.2))


def fan_out(
    origin: Origin, supernode: SupernodeFactory, peers: Peers, clients: int
) -> tuple[float, list[dict[str, object]]]:
    """``clients`` dfget processes start together on a 128 MiB blob under v1.0.6 scheduling in
    the source pattern; returns origin copies and their --json results."""
    data = random_bytes(128 * MiB, seed=clients)
    url = origin.add("/v2/app/blobs/layer", data)
    node = supernode(cdn_pattern="source", scheduling="v1")
    names = [f"n{i}" for i in range(clients)]
    procs = [start_dfget(peers.args(name, url, "--node", node.node, "--json")) for name in names]
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, err.decode()[-2000:]
            results.append(json.loads(out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert all(peers.output(name) == data for name in names)
    return origin.stats.body_bytes / len(data), results


@pytest.mark.parametrize("clients", [6, 8])
def test_fan_out_under_v1_scheduling_takes_the_blob_about_once(
    tmp_path: Path, supernode: SupernodeFactory, peers: Peers, clients: int
) -> None:
    origin = Origin(tmp_path / "origin", total_rate=50_000_000).start()
    try:
        copies, results = fan_out(origin, supernode, peers, clients)
    finally:
        origin.stop()
    size = 128 * MiB
    from_source = sum(r["bytes"]["source"] for r in results)  # type: ignore[index]
    from_peers = sum(r["bytes"]["peer"] for r in results)  # type: ignore[index]
    # Measured (tests/bench/fanout.py): ours 1.00-1.22 copies, Go dfget 1.63-2.34 under the
    # same scheduling; the bound leaves room for a loaded machine and catches the old ~2.
    assert copies <= 1.4, f"the origin served {copies:.2f} copies"
    assert from_source + from_peers == clients * size
    assert from_source <= copies * size
    assert from_peers >= (clients - 1.4) * size
