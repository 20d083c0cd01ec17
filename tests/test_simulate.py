"""Invariants of the fleet simulation (tests/bench/simulate.py) on tiny fleets; no timing bars."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dfget.supernode.scheduler import Scheduler
from dfget.supernode.scheduling import UPSTREAM
from tests.bench.simulate import GBIT, MiB, SimConfig, SimResult, scale, simulate

TINY = SimConfig(
    nodes=12,
    size=40 * MiB,  # 10 pieces of 4 MiB (wrapped) / 10 raw
    node_down=1 * GBIT,
    node_up=1 * GBIT,
    origin=0.2 * GBIT,
    seed=3,
    max_wall=30.0,
)


def run(**changes: object) -> SimResult:
    return simulate(replace(TINY, **changes))  # type: ignore[arg-type]


@pytest.mark.parametrize("pattern", ["local", "source"])
@pytest.mark.parametrize("policy", ["ours", "v1"])
def test_every_node_completes_and_the_origin_sends_at_least_one_copy(
    pattern: str, policy: str
) -> None:
    res = run(pattern=pattern, policy=policy)
    assert not res.truncated
    assert res.unfinished == 0
    assert len(res.completion) == TINY.nodes
    assert res.origin_bytes >= TINY.size
    assert res.makespan >= TINY.size / TINY.origin  # nobody beats the origin's one copy
    # every stored piece was reported once, every node registered and reported its metrics
    assert res.requests["piece_suc"] == TINY.nodes * res.pieces
    assert res.requests["register"] == res.requests["metrics"] == TINY.nodes
    assert res.requests["pull"] >= TINY.nodes * res.pieces // 4


def test_local_pattern_fetches_the_origin_exactly_once() -> None:
    res = run(pattern="local")
    assert res.origin_bytes == TINY.size
    assert res.upstream_copies >= 1.0  # the CDN served the first node at least


def test_our_policy_sends_no_more_to_the_origin_than_the_v1_like_one() -> None:
    for seed in (1, 2):
        ours = run(pattern="source", policy="ours", nodes=30, seed=seed)
        v1 = run(pattern="source", policy="v1", nodes=30, seed=seed)
        assert ours.origin_copies == pytest.approx(1.0)
        assert ours.origin_bytes <= v1.origin_bytes


def test_same_seed_same_run_other_seed_other_run() -> None:
    def fingerprint(res: SimResult) -> tuple[object, ...]:
        return (res.makespan, tuple(res.completion), res.origin_bytes, tuple(res.requests.items()))

    assert fingerprint(run(pattern="source")) == fingerprint(run(pattern="source"))
    assert fingerprint(run(pattern="source")) != fingerprint(run(pattern="source", seed=4))


@pytest.mark.parametrize("pattern", ["local", "source"])
def test_crashed_nodes_do_not_block_the_others(pattern: str) -> None:
    res = run(pattern=pattern, nodes=20, fail=0.3)
    assert res.crashed == 6
    assert res.unfinished == 0
    assert len(res.completion) == 20 - 6
    assert not res.truncated


def test_rolling_waves_complete_and_later_waves_find_peers() -> None:
    res = run(pattern="source", nodes=16, waves=4, wave_gap=5.0)
    assert res.unfinished == 0
    assert res.makespan >= 3 * 5.0
    # later waves pull from the finished nodes: the origin still sends about one copy
    assert res.origin_copies == pytest.approx(1.0)


def test_a_slow_supernode_answers_at_its_rate_and_everyone_still_finishes() -> None:
    free = run(pattern="source", nodes=20)
    slow = run(pattern="source", nodes=20, supernode_rps=150.0)
    assert slow.unfinished == 0
    assert slow.peak_rps <= 150
    assert slow.makespan > free.makespan


def test_holder_lists_stay_consistent_when_holders_leave_in_any_order() -> None:
    """The per-client position arrays behind the holder lists (swap-remove) at fleet churn."""
    scheduler = Scheduler(4, seed=5)
    scheduler.mark_all_ready()
    cids = [f"h{index}" for index in range(30)]
    for cid in cids:
        scheduler.add_client(cid)
        for piece in range(4):
            scheduler.report(cid, piece, UPSTREAM, True, 0.0)
    gone = cids[3::4] + cids[:2]
    for cid in gone:
        scheduler.service_down(cid)
    scheduler.remove_client(cids[5])
    left = [cid for cid in cids if cid not in gone and cid != cids[5]]
    for piece in range(4):
        assert sorted(scheduler.holders(piece)) == sorted(left)
    for cid in gone[:3]:  # back up: listed again, once
        scheduler.add_client(cid, serves=False)
        scheduler.add_client(cid, serves=True)
    assert sorted(scheduler.holders(2)) == sorted(left + gone[:3])


def test_scale_stress_reports_memory_and_decision_times() -> None:
    row = scale(300, 12)
    assert row.holders == 300 and row.pieces == 12
    assert row.memory > 300 * 12  # at least a byte per (holder, piece)
    assert row.free_us > 0 and row.busy_us > 0
