"""Scheduling decisions of the supernode (pure: no sockets, time passed in)."""

from __future__ import annotations

from collections import Counter

from dfget.supernode.scheduler import Scheduler
from dfget.supernode.scheduling import UPSTREAM, Assignment, Decision, PieceOutcome, SchedulerConfig

SOURCE = SchedulerConfig(upstream_when_busy=False, fetch_wait=10.0)


def ready(count: int, config: SchedulerConfig | None = None, seed: int = 7) -> Scheduler:
    scheduler = Scheduler(count, config, seed=seed)
    for piece in range(count):
        scheduler.mark_ready(piece)
    return scheduler


def complete(scheduler: Scheduler, cid: str, now: float = 0.0) -> None:
    """Let ``cid`` download every piece, reporting each success."""
    for _ in range(100):
        decision = scheduler.schedule(cid, now)
        if decision.outcome is PieceOutcome.FINISHED:
            return
        for item in decision.assignments:
            assert scheduler.report(cid, item.piece, item.holder, True, now)
    raise AssertionError(f"{cid} did not finish")


def holders(decision: Decision) -> set[str]:
    return {item.holder for item in decision.assignments}


def test_first_client_gets_pieces_from_upstream_up_to_its_down_limit() -> None:
    scheduler = ready(6)
    scheduler.add_client("a")
    decision = scheduler.schedule("a", 0)
    assert decision.outcome is PieceOutcome.ASSIGNED
    assert len(decision.assignments) == 4
    assert holders(decision) == {UPSTREAM}
    assert scheduler.schedule("a", 0).outcome is PieceOutcome.LIMITED


def test_nothing_available_until_the_cdn_lands_a_piece() -> None:
    scheduler = Scheduler(3, seed=1)
    scheduler.add_client("a")
    assert scheduler.schedule("a", 0).outcome is PieceOutcome.NOTHING_AVAILABLE
    scheduler.mark_ready(1)
    assert scheduler.schedule("a", 0).assignments == (Assignment(1, UPSTREAM),)
    assert scheduler.schedule("a", 0).outcome is PieceOutcome.ALL_RUNNING


def test_peer_is_preferred_over_the_cdn() -> None:
    scheduler = ready(3)
    scheduler.add_client("a")
    complete(scheduler, "a")
    scheduler.add_client("b")
    decision = scheduler.schedule("b", 1)
    assert holders(decision) == {"a"}
    assert len(decision.assignments) == 3


def test_finished_client_stays_a_holder_until_service_down() -> None:
    scheduler = ready(2)
    scheduler.add_client("a")
    complete(scheduler, "a")
    assert scheduler.schedule("a", 0).outcome is PieceOutcome.FINISHED
    scheduler.add_client("b")
    assert holders(scheduler.schedule("b", 0)) == {"a"}
    scheduler.add_client("c")
    scheduler.service_down("a")
    assert holders(scheduler.schedule("c", 0)) == {UPSTREAM}
    assert scheduler.holders(0) == []


def test_rarest_piece_first() -> None:
    config = SchedulerConfig(down_limit=1)
    scheduler = ready(4, config)
    # piece 0 held by 3 peers, piece 1 by 1, piece 2 by 2, piece 3 only upstream
    for cid, pieces in {"p1": [0, 1, 2], "p2": [0, 2], "p3": [0]}.items():
        scheduler.add_client(cid)
        for piece in pieces:
            scheduler.report(cid, piece, UPSTREAM, True, 0)
    scheduler.add_client("x")
    order = []
    for _ in range(4):
        (item,) = scheduler.schedule("x", 0).assignments
        order.append(item.piece)
        scheduler.report("x", item.piece, item.holder, True, 0)
    assert order == [3, 1, 2, 0]


def test_equally_rare_pieces_go_front_to_back_window_by_window() -> None:
    """So that the client's in-order sha256 (and -o - streaming) keeps pace with it."""
    window = SchedulerConfig().order_window
    scheduler = ready(40)
    scheduler.add_client("a")
    order: list[int] = []
    for _ in range(40):
        decision = scheduler.schedule("a", 0)
        if decision.outcome is PieceOutcome.FINISHED:
            break
        for item in decision.assignments:
            order.append(item.piece)
            assert scheduler.report("a", item.piece, item.holder, True, 0)
    assert sorted(order) == list(range(40))
    for done, piece in enumerate(order):
        assert piece // window <= done // window + 1  # never more than one window ahead
    assert order != sorted(order)  # random within a window: clients that start together spread


def test_load_spreads_over_holders_least_loaded_first() -> None:
    scheduler = ready(4)
    for cid in ("a", "b"):
        scheduler.add_client(cid)
        complete(scheduler, cid)
    scheduler.add_client("x")
    decision = scheduler.schedule("x", 0)
    assert Counter(item.holder for item in decision.assignments) == {"a": 2, "b": 2}


def test_up_limit_then_cdn_in_local_pattern() -> None:
    scheduler = ready(4, SchedulerConfig(up_limit=2, upstream_limit=8))
    scheduler.add_client("a")
    complete(scheduler, "a")
    scheduler.add_client("b")
    decision = scheduler.schedule("b", 0)
    assert Counter(item.holder for item in decision.assignments) == {"a": 2, UPSTREAM: 2}
    assert scheduler.load("a") == 2


def test_up_limit_then_wait_in_source_pattern() -> None:
    config = SchedulerConfig(up_limit=2, upstream_when_busy=False)
    scheduler = ready(4, config)
    scheduler.add_client("a")
    complete(scheduler, "a")
    scheduler.add_client("b")
    assert holders(scheduler.schedule("b", 0)) == {"a"}
    scheduler.add_client("c")
    assert scheduler.schedule("c", 0).outcome is PieceOutcome.NO_HOLDER


def test_failed_holder_is_blacklisted_for_that_client_only() -> None:
    scheduler = ready(1)
    for cid in ("a", "b"):
        scheduler.add_client(cid)
        complete(scheduler, cid)
    scheduler.add_client("x")
    (first,) = scheduler.schedule("x", 0).assignments
    scheduler.report("x", 0, first.holder, False, 0)
    other = "b" if first.holder == "a" else "a"
    assert scheduler.schedule("x", 0).assignments == (Assignment(0, other),)
    scheduler.report("x", 0, other, False, 0)
    assert scheduler.schedule("x", 0).assignments == (Assignment(0, UPSTREAM),)
    scheduler.add_client("y")
    assert holders(scheduler.schedule("y", 0)) <= {"a", "b"}


def test_piece_error_report_blacklists_the_holder() -> None:
    scheduler = ready(1)
    scheduler.add_client("a")
    complete(scheduler, "a")
    scheduler.add_client("x")
    scheduler.piece_error("x", "a")
    assert scheduler.schedule("x", 0).assignments == (Assignment(0, UPSTREAM),)


def test_holder_with_repeated_service_errors_is_eliminated() -> None:
    scheduler = ready(1, SchedulerConfig(elimination_limit=3))
    scheduler.add_client("bad")
    complete(scheduler, "bad")
    for index in range(3):
        cid = f"c{index}"
        scheduler.add_client(cid)
        assert scheduler.schedule(cid, 0).assignments == (Assignment(0, "bad"),)
        scheduler.report(cid, 0, "bad", False, 0)
    scheduler.add_client("fresh")
    assert holders(scheduler.schedule("fresh", 0)) == {UPSTREAM}


def test_cdn_slot_is_released_on_failure_as_well_as_success() -> None:
    scheduler = ready(2, SchedulerConfig(upstream_limit=1, fetch_wait=0))
    for cid in ("a", "b"):
        scheduler.add_client(cid)
    (item,) = scheduler.schedule("a", 0).assignments
    assert scheduler.upstream_load == 1
    assert scheduler.schedule("b", 0).outcome is PieceOutcome.NO_HOLDER
    scheduler.report("a", item.piece, UPSTREAM, False, 0)
    assert scheduler.upstream_load == 0
    (item,) = scheduler.schedule("b", 0).assignments
    scheduler.report("b", item.piece, UPSTREAM, True, 0)
    assert scheduler.upstream_load == 0


def test_unreported_runs_expire() -> None:
    config = SchedulerConfig(upstream_limit=1, running_timeout=30, silence_timeout=1000)
    scheduler = ready(1, config)
    scheduler.add_client("a")
    scheduler.add_client("b")
    scheduler.schedule("a", 0)
    assert scheduler.schedule("b", 29).outcome is PieceOutcome.NO_HOLDER
    assert scheduler.schedule("b", 30).assignments == (Assignment(0, UPSTREAM),)
    assert scheduler.running("a") == {}


def test_a_silent_client_loses_its_runs_but_a_pulling_one_keeps_them() -> None:
    config = SchedulerConfig(upstream_limit=1, running_timeout=1000, silence_timeout=10)
    scheduler = ready(1, config)
    scheduler.add_client("a")
    scheduler.add_client("b")
    assert scheduler.schedule("a", 0).assignments == (Assignment(0, UPSTREAM),)
    for now in (5, 12, 19):  # "a" keeps pulling: its slot stays taken
        scheduler.schedule("a", now)
        assert scheduler.schedule("b", now).outcome is PieceOutcome.NO_HOLDER
    # "a" died after its pull at 19: ten seconds later the slot moves on.
    assert scheduler.schedule("b", 28).outcome is PieceOutcome.NO_HOLDER
    assert scheduler.schedule("b", 29).assignments[0].holder == UPSTREAM
    assert scheduler.running("a") == {}


def test_success_reported_twice_in_either_order_counts_once() -> None:
    scheduler = ready(2)
    scheduler.add_client("a")
    complete(scheduler, "a")
    scheduler.add_client("b")
    decision = scheduler.schedule("b", 0)
    assert scheduler.load("a") == 2
    first, second = decision.assignments
    # piece/suc first, then the /peer/task result; and the other way round
    assert scheduler.report("b", first.piece, "a", True, 0)
    assert not scheduler.report("b", first.piece, "a", True, 0)
    assert scheduler.report("b", second.piece, "a", True, 0)
    assert not scheduler.report("b", second.piece, "a", True, 0)
    assert scheduler.load("a") == 0
    assert scheduler.done_count("b") == 2
    assert scheduler.holders(first.piece) == ["a", "b"]


def test_stale_failure_does_not_release_a_newer_run() -> None:
    scheduler = ready(1)
    for cid in ("a", "b"):
        scheduler.add_client(cid)
        complete(scheduler, cid)
    scheduler.add_client("x")
    (first,) = scheduler.schedule("x", 0).assignments
    scheduler.report("x", 0, first.holder, False, 0)
    (second,) = scheduler.schedule("x", 0).assignments
    scheduler.report("x", 0, first.holder, False, 0)  # repeated old result
    assert scheduler.running("x") == {0: second.holder}


def test_client_without_peer_server_is_never_a_holder() -> None:
    scheduler = ready(1)
    scheduler.add_client("cdn-pattern", serves=False)
    complete(scheduler, "cdn-pattern")
    assert scheduler.holders(0) == []


def test_source_pattern_single_fetcher_then_peer() -> None:
    scheduler = ready(1, SOURCE)
    for cid in ("a", "b"):
        scheduler.add_client(cid)
    assert scheduler.schedule("a", 0).assignments == (Assignment(0, UPSTREAM),)
    assert scheduler.schedule("b", 1).outcome is PieceOutcome.NO_HOLDER
    scheduler.report("a", 0, UPSTREAM, True, 2)
    assert scheduler.schedule("b", 3).assignments == (Assignment(0, "a"),)


def test_source_pattern_wait_is_bounded() -> None:
    scheduler = ready(1, SOURCE)
    for cid in ("a", "b"):
        scheduler.add_client(cid)
    scheduler.schedule("a", 0)
    assert scheduler.schedule("b", 9.9).outcome is PieceOutcome.NO_HOLDER
    assert scheduler.schedule("b", 10).assignments == (Assignment(0, UPSTREAM),)


def test_source_pattern_fetcher_failure_frees_the_piece_at_once() -> None:
    scheduler = ready(1, SOURCE)
    for cid in ("a", "b"):
        scheduler.add_client(cid)
    scheduler.schedule("a", 0)
    scheduler.report("a", 0, UPSTREAM, False, 1)
    assert scheduler.schedule("b", 1).assignments == (Assignment(0, UPSTREAM),)


def test_concurrent_clients_split_the_origin_fetches() -> None:
    scheduler = ready(8, SchedulerConfig(upstream_when_busy=False, upstream_limit=8))
    for cid in ("a", "b"):
        scheduler.add_client(cid)
    first = scheduler.schedule("a", 0)
    second = scheduler.schedule("b", 0)
    assert holders(first) == holders(second) == {UPSTREAM}
    pieces_a = {item.piece for item in first.assignments}
    pieces_b = {item.piece for item in second.assignments}
    assert not pieces_a & pieces_b


def test_unknown_length_finishes_only_once_the_count_is_known() -> None:
    scheduler = Scheduler(None, seed=1)
    scheduler.add_client("a")
    scheduler.mark_ready(0)
    (item,) = scheduler.schedule("a", 0).assignments
    scheduler.report("a", 0, item.holder, True, 0)
    assert scheduler.schedule("a", 0).outcome is PieceOutcome.NOTHING_AVAILABLE
    scheduler.set_piece_count(1)
    assert scheduler.schedule("a", 0).outcome is PieceOutcome.FINISHED


def swarm(seed: int, clients: int = 200, pieces: int = 20) -> tuple[list[Decision], int]:
    """Clients arrive one per tick and fetch everything; returns decisions and upstream pieces."""
    scheduler = ready(pieces, SOURCE, seed=seed)
    decisions: list[Decision] = []
    upstream = 0
    active: list[str] = []
    for tick in range(clients * 4):
        if tick < clients:
            active.append(f"c{tick}")
            scheduler.add_client(f"c{tick}")
        for cid in list(active):
            decision = scheduler.schedule(cid, float(tick))
            decisions.append(decision)
            if decision.outcome is PieceOutcome.FINISHED:
                active.remove(cid)
            for item in decision.assignments:
                upstream += item.holder == UPSTREAM
                scheduler.report(cid, item.piece, item.holder, True, float(tick))
        if tick >= clients and not active:
            break
    assert not active
    return decisions, upstream


def test_each_piece_leaves_the_origin_once_in_a_swarm() -> None:
    _, upstream = swarm(seed=3)
    assert upstream == 20


def test_same_seed_same_decisions() -> None:
    assert swarm(seed=11)[0] == swarm(seed=11)[0]
    assert len({tuple(swarm(seed)[0]) for seed in (1, 2, 3)}) > 1


def test_decisions_stay_cheap_with_many_holders() -> None:
    scheduler = ready(100, SchedulerConfig(upstream_limit=1000))
    for index in range(2000):
        scheduler.add_client(f"h{index}")
        for piece in range(100):
            scheduler.report(f"h{index}", piece, UPSTREAM, True, 0)
    scheduler.add_client("x")
    decisions = 0
    for tick in range(200):  # speed is measured in tests/bench/simulate.py, not here
        for item in scheduler.schedule("x", tick).assignments:
            scheduler.report("x", item.piece, item.holder, False, tick)
            decisions += 1
    assert decisions > 0
