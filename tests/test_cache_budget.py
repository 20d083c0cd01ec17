"""The cache budget that replaces v1's timers, decided in-process with a clock the test moves."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from dfget.uploader import records
from dfget.uploader.cache import (
    DEFAULT_BUDGET_CAP,
    Amount,
    CachedFile,
    CachePolicy,
    Limits,
    evictions,
)
from dfget.uploader.lifecycle import (
    IDLE_EXIT,
    MIN_GC_PERIOD,
    SIGNALS,
    exit_reason,
    idle_exit_in,
    wait_for_end,
)
from dfget.uploader.options import ServerOptions
from dfget.uploader.served_task import ServedTask
from dfget.uploader.service import Clock, Uploader
from dfget.uploader.store import TaskStore
from tests.support.helpers import FakeClock, random_bytes

MiB = 1024 * 1024
V1_EXPIRETIME = 180.0


def test_amounts() -> None:
    assert Amount.parse("10%") == Amount(10.0, percent=True)
    assert Amount.parse("2.5%").bytes_of(1000) == 25
    assert Amount.parse("20GB").bytes_of(1) == 20 * 1024**3
    assert Amount.parse("1048576") == Amount(MiB)
    assert str(Amount.parse("25%")) == "25%" and str(Amount.parse("3G")) == "3GB"
    for bad in ("101%", "-1%", "%", "1e3%", "lots", "-5", "nan%"):
        with pytest.raises(ValueError):
            Amount.parse(bad)


def test_default_budget_is_ten_percent_capped(tmp_path: Path) -> None:
    st = os.statvfs(tmp_path)
    size = st.f_blocks * st.f_frsize
    limits = CachePolicy(min_free=Amount(0)).limits(tmp_path)
    assert limits.budget == min(size // 10, DEFAULT_BUDGET_CAP)
    assert CachePolicy(Amount(50.0, percent=True)).limits(tmp_path).budget == size // 2
    assert limits.free == st.f_bavail * st.f_frsize


def test_evictions_go_least_recently_used_first() -> None:
    files = [CachedFile("b", 10, 2.0), CachedFile("a", 10, 1.0), CachedFile("c", 10, 3.0)]
    chosen = evictions(files, Limits(budget=25, min_free=0, free=100))
    assert [(f.name, why.split(" (")[0]) for f, why in chosen] == [("a", "over the cache budget")]
    assert evictions(files, Limits(budget=30, min_free=0, free=100)) == []
    # Low on disk: only files whose deletion frees space help (b is the user's hard link).
    files[0] = CachedFile("b", 10, 0.5, frees_space=False)
    chosen = evictions(files, Limits(budget=100, min_free=115, free=100))
    assert [f.name for f, _ in chosen] == ["a", "c"]


def finished_file(store: TaskStore, name: str, size: int, clock: FakeClock) -> Path:
    path = store.data_dir / f"{name}.service"
    path.write_bytes(random_bytes(size, seed=len(name)))
    store.register(name)
    assert store.finish(name, "t" * 64, f"cid-{name}", "127.0.0.1:8002")
    assert store.record(name)
    store.enforce_budget()
    clock.advance(1.0)
    return path


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def budget_store(
    tmp_path: Path, clock: FakeClock, budget: int, dropped: list[ServedTask]
) -> TaskStore:
    data = tmp_path / "data"
    data.mkdir()
    return TaskStore(
        data,
        expiretime=None,
        stale_after=600.0,
        on_drop=dropped.append,
        policy=CachePolicy(Amount(budget), min_free=Amount(0)),
        clock=clock.wall,
    )


def test_budget_of_two_and_a_half_files_keeps_the_two_most_recently_used(
    tmp_path: Path, clock: FakeClock
) -> None:
    dropped: list[ServedTask] = []
    store = budget_store(tmp_path, clock, 5 * MiB // 2, dropped)
    first = finished_file(store, "first", MiB, clock)
    second = finished_file(store, "second", MiB, clock)
    fd, _ = store.open("first")  # serving it makes "second" the least recently used
    os.close(fd)
    clock.advance(1.0)
    third = finished_file(store, "third", MiB, clock)
    assert [task.name for task in dropped] == ["second"]
    assert dropped[0].cid == "cid-second"  # what the service-down report names
    assert first.exists() and third.exists() and not second.exists()
    assert not records.record_path(store.data_dir, "second").exists()
    assert [task.name for task in store.finished_tasks()] == ["first", "third"]


def test_no_timer_drops_a_file_without_expiretime(tmp_path: Path, clock: FakeClock) -> None:
    dropped: list[ServedTask] = []
    store = budget_store(tmp_path, clock, 100 * MiB, dropped)
    path = finished_file(store, "kept", MiB, clock)
    clock.advance(30 * 24 * 3600.0)  # a month after its last use
    store.collect()
    assert path.exists() and not dropped
    # With v1's --expiretime set, it is an upper bound again.
    store.expiretime = V1_EXPIRETIME
    store.collect()
    assert not path.exists() and [task.name for task in dropped] == ["kept"]


def test_last_use_survives_in_the_record(tmp_path: Path, clock: FakeClock) -> None:
    store = budget_store(tmp_path, clock, 100 * MiB, [])
    finished_file(store, "a", 1000, clock)
    clock.advance(500.0)
    fd, _ = store.open("a")
    os.close(fd)
    store.collect()
    found = records.read(store.data_dir, "a")
    assert found is not None
    assert found[1] == pytest.approx(clock.wall(), abs=0.01)


def uploader(tmp_path: Path, clock: FakeClock, **options: object) -> Uploader:
    return Uploader(
        ServerOptions(home=tmp_path / "home", **options),  # type: ignore[arg-type]
        on_drop=lambda task: None,
        clock=Clock(clock.wall, clock.monotonic),
    )


def test_server_stays_up_while_it_serves(tmp_path: Path, clock: FakeClock) -> None:
    server = uploader(tmp_path, clock)
    options = ServerOptions()
    server.store.data_dir.mkdir(parents=True)
    clock.advance(IDLE_EXIT + 1)
    assert exit_reason(server, options) == "nothing to serve for 5m0s"
    server.store.register("served")
    clock.advance(24 * 3600.0)
    assert exit_reason(server, options) is None


def test_alivetime_is_an_upper_bound_when_set(tmp_path: Path, clock: FakeClock) -> None:
    server = uploader(tmp_path, clock)
    server.store.register("served")
    clock.advance(299.0)
    assert exit_reason(server, ServerOptions(alivetime=300.0)) is None
    clock.advance(2.0)
    assert exit_reason(server, ServerOptions(alivetime=300.0)) == "no upload activity for 5m0s"
    assert exit_reason(server, ServerOptions(alivetime=0.0)) is None  # 0: never


def test_restore_proves_every_block(tmp_path: Path, clock: FakeClock) -> None:
    dropped: list[ServedTask] = []
    store = budget_store(tmp_path, clock, 100 * MiB, dropped)
    good = finished_file(store, "good", 9 * MiB, clock)
    bad = finished_file(store, "bad", 9 * MiB, clock)
    unrecorded = store.data_dir / "unrecorded.service"
    unrecorded.write_bytes(b"x")
    with open(bad, "r+b") as fh:
        fh.seek(5 * MiB)
        fh.write(b"\0" * 8)
    again: list[ServedTask] = []
    restarted = TaskStore(store.data_dir, expiretime=None, stale_after=600.0, on_drop=again.append)
    assert restarted.restore() == (1, 1)
    assert [task.name for task in restarted.finished_tasks()] == ["good"]
    assert [(task.name, task.cid) for task in again] == [("bad", "cid-bad")]
    assert good.exists() and not bad.exists()
    assert unrecorded.exists()  # not ours to prove; swept only once stale
    fd, size = restarted.open("good")
    os.close(fd)
    assert size == 9 * MiB


@pytest.mark.parametrize(
    ("answers", "proved"), [(4, 1), (2, 0)], ids=["between files", "inside a file"]
)
def test_a_stop_during_the_restart_proof_leaves_the_rest_for_the_next_start(
    tmp_path: Path, clock: FakeClock, answers: int, proved: int
) -> None:
    """Proving kept files reads them all; a server asked to stop meanwhile stops before the
    next file or the next block, and what it did not prove keeps its file and record for the
    next start. ``stop`` says "go on" ``answers`` times: files of 9 MiB are 3 blocks, and it is
    asked before each file and each block."""
    store = budget_store(tmp_path, clock, 100 * MiB, [])
    names = ["a", "b", "c"]
    for name in names:
        finished_file(store, name, 9 * MiB, clock)
    asked: list[int] = []

    def stop_later() -> bool:
        asked.append(1)
        return len(asked) > answers

    first = TaskStore(store.data_dir, expiretime=None, stale_after=600.0, on_drop=[].append)
    assert first.restore(stop=stop_later) == (proved, 0)
    assert [task.name for task in first.tasks()] == names[:proved]
    second = TaskStore(store.data_dir, expiretime=None, stale_after=600.0, on_drop=[].append)
    assert second.restore() == (3, 0)
    assert sorted(task.name for task in second.finished_tasks()) == names


def test_a_stop_during_start_up_ends_the_server_before_any_housekeeping(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A stop that cut the restart proof short must not be followed by a collection pass: its
    orphan sweep would delete, as stale strays, the old kept files the proof did not reach."""
    server = uploader(tmp_path, clock)
    server.store.data_dir.mkdir(parents=True)
    unproved = [
        server.store.data_dir / f"kept-1-2.3{suffix}" for suffix in (".service", ".verified")
    ]
    for path in unproved:
        path.write_bytes(b"x")
        os.utime(path, (clock.wall() - 86400, clock.wall() - 86400))
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)  # pending on this thread only
        reason = wait_for_end(server, ServerOptions())
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    assert reason == "received SIGTERM"
    assert all(path.exists() for path in unproved)


def test_a_long_idle_server_that_serves_does_not_spin(tmp_path: Path, clock: FakeClock) -> None:
    """Idle past IDLE_EXIT while serving: the main loop must still sleep a whole period (it
    once computed a negative wait and woke every 10 ms)."""
    server = uploader(tmp_path, clock)
    server.store.register("served")
    clock.advance(IDLE_EXIT * 3)
    assert idle_exit_in(server, ServerOptions()) >= MIN_GC_PERIOD
    assert idle_exit_in(server, ServerOptions(alivetime=300.0)) >= MIN_GC_PERIOD
    server.store.drop(server.store.tasks()[0], "test")
    assert idle_exit_in(server, ServerOptions()) == MIN_GC_PERIOD  # exits at the next look
