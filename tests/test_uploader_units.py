"""The peer server's decisions without a process: store, grants, limits, ports, client bytes."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dfget.net.server import is_local_caller
from dfget.net.tokenbucket import TokenBucket
from dfget.protocol import peer_server
from dfget.protocol.supernode import service_down
from dfget.uploader import meta, ports
from dfget.uploader import store as store_module
from dfget.uploader.lifecycle import gc_period
from dfget.uploader.options import ServerOptions
from dfget.uploader.sender import wants_zstd
from dfget.uploader.served_task import ServedTask, Unservable, task_name
from dfget.uploader.service import Uploader
from dfget.uploader.shares import grant
from dfget.uploader.store import TaskStore
from tests.support.helpers import FakeClock, RawServer


@pytest.fixture
def dropped() -> list[ServedTask]:
    return []


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path, dropped: list[ServedTask], clock: FakeClock) -> TaskStore:
    data = tmp_path / "data"
    data.mkdir()
    return TaskStore(
        data, expiretime=10.0, stale_after=100.0, on_drop=dropped.append, clock=clock.wall
    )


def collect_at(store: TaskStore, clock: FakeClock, when: float) -> None:
    clock.offset = when - time.time()
    store.collect()


def test_task_names() -> None:
    assert task_name("a.bin-20161-1795914754.517") == "a.bin-20161-1795914754.517"
    assert task_name("my%20file-1-2.3") == "my file-1-2.3"
    for bad in (
        "",
        ".",
        "..",
        "%2e%2e",
        "a/b",
        "a%2fb",
        "a\\b",
        "a%5cb",
        "a%00b",
        "%ff",
        "x" * 241,
    ):
        assert task_name(bad) is None, bad


def test_finished_task_expires_after_last_access(
    store: TaskStore, dropped: list[ServedTask], clock: FakeClock
) -> None:
    path = store.data_dir / "t.service"
    path.write_bytes(b"data")
    os.utime(path, (0, 0))  # expiry counts from the later of mtime and last access
    store.register("t")
    assert store.finish("t", "id", "cid", "127.0.0.1:8002")
    collect_at(store, clock, time.time() + 5)
    assert path.exists() and not dropped
    collect_at(store, clock, time.time() + 11)
    assert not path.exists()
    assert [task.task_id for task in dropped] == ["id"]
    assert store.get("t") is None


def test_finish_without_file_drops_the_task(store: TaskStore, dropped: list[ServedTask]) -> None:
    assert not store.finish("ghost", "id", "cid", "127.0.0.1:8002")
    store.collect()
    assert store.get("ghost") is None
    assert [task.name for task in dropped] == ["ghost"]  # the supernode must hear it


def test_abandoned_unfinished_download_is_dropped(
    store: TaskStore, dropped: list[ServedTask], clock: FakeClock
) -> None:
    path = store.data_dir / "dead.service"
    path.write_bytes(b"partial")
    store.register("dead")
    now = time.time()
    collect_at(store, clock, now)  # first sight of the file
    collect_at(store, clock, now + 50)
    assert path.exists()
    with open(path, "ab") as fh:  # still being written: the clock restarts
        fh.write(b"more")
    collect_at(store, clock, now + 90)
    collect_at(store, clock, now + 150)
    assert path.exists()
    collect_at(store, clock, now + 191)
    assert not path.exists() and store.get("dead") is None
    assert not dropped  # never finished: no supernode to tell


def test_registration_without_file_is_forgotten_when_stale(
    store: TaskStore, clock: FakeClock
) -> None:
    store.register("never-written")
    collect_at(store, clock, time.time() + 50)
    assert store.get("never-written") is not None
    collect_at(store, clock, time.time() + 101)
    assert store.get("never-written") is None


def test_stale_orphans_are_swept_but_nothing_else(store: TaskStore) -> None:
    orphan = store.data_dir / "orphan.service"
    fresh = store.data_dir / "fresh.service"
    other = store.data_dir / "user-output"
    subdir = store.data_dir / "dir.service"
    for path in (orphan, fresh, other):
        path.write_bytes(b"x")
    subdir.mkdir()
    old = time.time() - 1000
    for path in (orphan, other, subdir):
        os.utime(path, (old, old))
    store.collect()
    assert not orphan.exists()
    assert fresh.exists() and other.exists() and subdir.exists()


def test_open_refuses_symlinks_and_non_files(store: TaskStore, tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"secret")
    (store.data_dir / "link.service").symlink_to(target)
    (store.data_dir / "dir.service").mkdir()
    for name in ("link", "dir", "unknown"):
        if name != "unknown":
            store.register(name)
        with pytest.raises(Unservable) as info:
            store.open(name)
        assert info.value.status == 404


def test_second_check_does_not_unfinish(store: TaskStore) -> None:
    (store.data_dir / "t.service").write_bytes(b"x")
    store.register("t")
    store.finish("t", "id", "cid", "sn:8002")
    store.register("t")
    task = store.get("t")
    assert task is not None and task.finished and task.fingerprint is not None


def test_grants() -> None:
    assert grant(2147483648, 0, 999) == 2147483648
    assert grant(600, 1000, 600) == 600
    assert grant(900, 1000, 1500) == 600
    assert grant(700, 1000, 1600) == 438


def test_token_bucket_paces_to_its_rate() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(1_000_000, clock=lambda: now[0], sleep=sleep)
    for _ in range(10):
        bucket.consume(50_000)
    # 500 kB at 1 MB/s, less the 0.1 s burst: 0.4 s of sleep in all, none for the first 100 kB.
    assert sum(slept) == pytest.approx(0.4)
    assert len(slept) == 8


def test_token_bucket_zero_is_unlimited_and_rate_can_change() -> None:
    slept: list[float] = []
    bucket = TokenBucket(0, clock=lambda: 0.0, sleep=slept.append)
    bucket.consume(10**9)
    assert not slept
    bucket.set_rate(1000)
    bucket.consume(1100)
    assert slept == [pytest.approx(1.099)]  # the 1-byte burst of rate 0, then 1 kB/s


def test_local_callers() -> None:
    assert is_local_caller("127.0.0.1", "127.0.0.1")
    assert is_local_caller("127.0.0.2", "10.0.0.5")
    assert is_local_caller("::1", "::1")
    assert is_local_caller("::ffff:127.0.0.1", "::ffff:10.0.0.5")
    assert is_local_caller("10.0.0.5", "10.0.0.5")  # a Go dfget reaching its own advertised IP
    assert not is_local_caller("10.0.0.6", "10.0.0.5")
    assert not is_local_caller("garbage", "10.0.0.5")


def test_data_dir_choice(tmp_path: Path) -> None:
    home = tmp_path / "home"
    uploader = Uploader(ServerOptions(home=home), on_drop=lambda task: None)
    data = (home / "data").resolve()
    inside = (home / "data2").resolve()
    assert uploader.data_dir_for("") is None
    assert uploader.data_dir_for(str(data)) is None
    assert uploader.data_dir_for(str(inside)) == inside
    assert uploader.data_dir_for(str(home)) is None
    assert uploader.data_dir_for(str(home / ".." / "x")) is None
    assert uploader.data_dir_for("/etc") is None
    assert uploader.data_dir_for("relative/data") is None


def test_port_candidates_stay_in_the_supernodes_range() -> None:
    found = list(ports.candidates(now=299 * 50_000 + 1234567))
    assert len(found) == ports.SEQUENTIAL_TRIES + ports.RANDOM_TRIES
    assert all(15000 <= port < 65000 for port in found)
    assert found[0] == 15000 + (int(299 * 50_000 + 1234567) // 300) % 50000


def test_gc_period() -> None:
    assert gc_period(180) == 15
    assert gc_period(1) == 0.25
    assert gc_period(0.1) == 0.2
    assert gc_period(0) == 15


def test_wants_zstd() -> None:
    assert wants_zstd("zstd")
    assert wants_zstd("gzip, ZSTD;q=0.9")
    assert not wants_zstd("zstd;q=0")
    assert not wants_zstd("gzip, br")
    assert not wants_zstd("")


def test_meta_file_round_trip(tmp_path: Path) -> None:
    meta_file = tmp_path / "meta" / "host.meta"
    assert meta.read_port(meta_file) == 0
    meta.write_port(meta_file, 15001)
    assert meta_file.read_text() == '{"servicePort":15001}'
    meta.clear_port(meta_file, 15002)  # not ours: untouched
    assert meta.read_port(meta_file) == 15001
    meta.clear_port(meta_file, 15001)
    assert meta_file.read_text() == '{"servicePort":0}'
    meta_file.write_text("garbage")
    assert meta.read_port(meta_file) == 0


def test_meta_lock_times_out_while_held(tmp_path: Path) -> None:
    with (
        meta.lock(tmp_path, timeout=1),
        pytest.raises(TimeoutError),
        meta.lock(tmp_path, timeout=0.1),
    ):
        pass
    with meta.lock(tmp_path, timeout=0.1) as held:
        assert held


class Recorder(RawServer):
    """A one-shot HTTP endpoint that records the raw request head and answers ``body``."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.heads: list[bytes] = []
        super().__init__(self._record)

    def _record(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(4096)
        self.heads.append(data.split(b"\r\n\r\n")[0])
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(self.body), self.body)
        )


@pytest.fixture
def recorder() -> Iterator[Callable[[bytes], Recorder]]:
    made: list[Recorder] = []

    def make(body: bytes) -> Recorder:
        made.append(Recorder(body))
        return made[-1]

    yield make
    for rec in made:
        rec.close()


def test_client_requests_look_like_v1(recorder: Callable[[bytes], Recorder]) -> None:
    tfn = "a.bin-20161-1795914754.517"
    rec = recorder(f"{tfn}@1.0.6".encode())
    assert peer_server.check("127.0.0.1", rec.port, tfn, "/h/data", 0)
    lines = rec.heads[0].decode().split("\r\n")
    assert lines[0] == f"GET /check/{tfn} HTTP/1.1"
    assert "dataDir: /h/data" in lines and "totalLimit: 0" in lines

    rec = recorder(b"20971520")
    assert peer_server.rate("127.0.0.1", rec.port, tfn, 20971520) == 20971520
    assert "rateLimit: 20971520" in rec.heads[0].decode().split("\r\n")

    rec = recorder(b"success")
    assert peer_server.finish(
        "127.0.0.1", rec.port, tfn, "abc", "127.0.0.1-1-2.3", "127.0.0.1:8002"
    )
    assert (
        rec.heads[0].split(b"\r\n")[0]
        == (
            f"GET /client/finish?taskFileName={tfn}&taskID=abc&cid=127.0.0.1-1-2.3"
            "&superNode=127.0.0.1:8002 HTTP/1.1"
        ).encode()
    )

    rec = recorder(b'{"code":612}\n')
    assert service_down(f"127.0.0.1:{rec.port}", "f" * 64, "127.0.0.1-1-2.3")
    assert (
        rec.heads[0].split(b"\r\n")[0]
        == (f"GET /peer/service/down?taskId={'f' * 64}&cid=127.0.0.1-1-2.3 HTTP/1.1").encode()
    )

    rec = recorder(b"success")
    assert peer_server.ping("127.0.0.1", rec.port)


def test_client_failures_are_quiet() -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    assert not peer_server.check("127.0.0.1", port, "t", "/d", 0)
    assert peer_server.rate("127.0.0.1", port, "t", 1234) == 1234
    assert not peer_server.finish("127.0.0.1", port, "t", "i", "c", "s:1")
    assert not peer_server.ping("127.0.0.1", port)


def test_a_collection_pass_during_finish_never_drops_the_task(
    store: TaskStore, dropped: list[ServedTask], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The housekeeping pass runs beside the request handlers and reads tasks without the
    store's lock. Here it inspects the task exactly while /client/finish is updating it (the
    moment is lined up with two events): a half-done finish must not look like a file that
    changed after it was verified (the task was dropped and reported down)."""
    name = "t-1-2.3"
    (store.data_dir / f"{name}.service").write_bytes(b"x" * 100)
    assert store.register(name)
    in_finish, inspected = threading.Event(), threading.Event()
    inspect, unlink = TaskStore._inspect, store_module.unlink_task_files

    def inspect_during_finish(self: TaskStore, task: ServedTask, now: float) -> object:
        in_finish.wait(timeout=5)
        try:
            return inspect(self, task, now)
        finally:
            inspected.set()

    def unlink_and_let_the_pass_look(task: ServedTask, *suffixes: str) -> None:
        in_finish.set()
        # A consistent task makes the pass wait for the store's lock, which finish holds: the
        # pass then completes after finish, once this wait has run out.
        inspected.wait(timeout=1)
        unlink(task, *suffixes)

    monkeypatch.setattr(TaskStore, "_inspect", inspect_during_finish)
    monkeypatch.setattr(store_module, "unlink_task_files", unlink_and_let_the_pass_look)
    collector = threading.Thread(target=store.collect)
    collector.start()
    assert store.finish(name, "t" * 64, "c", "127.0.0.1:8002")
    collector.join(timeout=10)
    assert not collector.is_alive() and inspected.is_set() and dropped == []
