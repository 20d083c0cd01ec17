"""The peer server as a process: expiry, idleness, signals, ports, spawning (spec §4.1, §4.5)."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dfget.net.listener import listen
from dfget.protocol import peer_server
from dfget.uploader import meta
from dfget.uploader.spawn import ServerStart
from tests.support.helpers import eventually, random_bytes, run_dfget, start_dfget, stop_process
from tests.support.servers import FakeSupernode, PeerServer, launch_peer_server, read_first_line

P = 4 * 1024 * 1024
TASK_ID = "24880c54b89402eb273a93e83dafea4c549702070504bec0bc96a1a0bc9cc25c"
CID = "127.0.0.1-20161-1795914754.517"
DOWN = f"/peer/service/down?taskId={TASK_ID}&cid={CID}"

StartServer = Callable[..., PeerServer]


def served(server: PeerServer, name: str) -> int:
    return server.piece(name, 0, P - 1, 0, P, Cdnsource="source").status


def free_port_in_range() -> int:
    """A currently free port inside 15000-65000, where peer server ports must be."""
    for port in range(20000 + os.getpid() % 20000, 65000, 97):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def process_gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie counts as exited, its parent may be gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def servers_of(home: Path) -> list[int]:
    """Pids of live `dfget server` processes whose command line names ``home``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"server" in argv and str(home).encode() in argv and not process_gone(int(entry.name)):
            pids.append(int(entry.name))
    return pids


def test_expired_file_is_deleted_and_reported(
    peer_server: StartServer, fake_supernode: FakeSupernode
) -> None:
    server = peer_server("--expiretime", "2s")
    path = server.add_task("expiring", b"x" * 1000)
    server.finish("expiring", fake_supernode.address, TASK_ID, CID)
    for _ in range(8):  # being read keeps it alive past the expiry time
        assert served(server, "expiring") == 206
        time.sleep(0.3)
    assert fake_supernode.wait_for(1, timeout=10) == [DOWN]
    assert not path.exists()
    assert served(server, "expiring") == 404


def test_idle_server_exits_and_resets_the_meta_file(peer_server: StartServer) -> None:
    server = peer_server("--alivetime", "2s")
    assert server.meta_port() == server.port
    pid_file = server.home / "meta" / "server.pid"
    assert pid_file.read_text().strip() == str(server.proc.pid)
    for _ in range(5):  # activity keeps it alive past the alive time
        assert server.get("/rate/x", {"Ratelimit": "1"}).status == 200
        time.sleep(0.5)
    assert server.proc.poll() is None
    started = time.monotonic()
    assert server.wait_exit(timeout=10) == 0
    assert time.monotonic() - started > 1.0
    assert server.meta_port() == 0
    assert not pid_file.exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_reports_service_down_and_keeps_the_files(
    peer_server: StartServer, fake_supernode: FakeSupernode, signum: int
) -> None:
    server = peer_server()
    finished = server.add_task("done", b"y" * 100)
    server.finish("done", fake_supernode.address, TASK_ID, CID)
    assert eventually((server.data / "done.verified").exists, timeout=5)
    running = server.add_task("running", b"z" * 100)
    server.proc.send_signal(signum)
    assert server.wait_exit(timeout=10) == 0
    assert fake_supernode.wait_for(1, timeout=5) == [DOWN]
    assert server.meta_port() == 0
    assert finished.exists()  # kept, with its record, for a restart
    assert running.exists()  # its download still owns it
    assert not (server.home / "meta" / "server.pid").exists()
    assert not (server.home / "meta" / "cache.json").exists()
    status = run_dfget(["cache", "--home", str(server.home)], timeout=30).stdout.decode()
    assert "no peer server is running" in status and "1 verified file(s) are kept" in status


def test_restarted_server_serves_what_it_can_prove_and_drops_the_rest(
    peer_server: StartServer, fake_supernode: FakeSupernode
) -> None:
    first = peer_server()
    content = random_bytes(9 * 1024 * 1024)  # three xxh3 blocks
    kept = first.add_task("kept", content)
    first.finish("kept", fake_supernode.address, TASK_ID, CID)
    other_cid = "127.0.0.1-20161-1795914754.999"
    tampered = first.add_task("tampered", content)
    first.finish("tampered", fake_supernode.address, TASK_ID, other_cid)
    for name in ("kept", "tampered"):
        assert eventually((first.data / f"{name}.verified").exists, timeout=5)
    first.proc.send_signal(signal.SIGKILL)  # a crash: no service-down report goes out
    first.wait_exit(timeout=10)
    with open(tampered, "r+b") as fh:  # one byte in the last block, size and mtime kept
        stat = os.fstat(fh.fileno())
        fh.seek(len(content) - 1)
        fh.write(b"\0" if content[-1:] != b"\0" else b"\1")
    os.utime(tampered, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    second = peer_server(home=first.home)
    assert eventually(lambda: served(second, "kept") == 206, timeout=5)  # once proved
    assert second.piece("kept", 0, P - 1, 0, P, Cdnsource="source").body == content[:P]
    assert eventually(lambda: served(second, "tampered") == 404, timeout=5)
    assert fake_supernode.wait_for(1, timeout=5) == [
        f"/peer/service/down?taskId={TASK_ID}&cid={other_cid}"
    ]
    assert kept.exists() and not tampered.exists()
    assert not (second.data / "tampered.verified").exists()


def test_changed_file_is_no_longer_served(
    peer_server: StartServer, fake_supernode: FakeSupernode
) -> None:
    server = peer_server()
    path = server.add_task("verified", b"a" * 5000)
    server.finish("verified", fake_supernode.address, TASK_ID, CID)
    assert served(server, "verified") == 206
    with open(path, "r+b") as fh:  # same size and inode, new content
        fh.write(b"b" * 10)
    assert served(server, "verified") == 404
    assert fake_supernode.wait_for(1, timeout=10) == [DOWN]
    assert not path.exists()


def test_replaced_file_is_no_longer_served(
    peer_server: StartServer, fake_supernode: FakeSupernode
) -> None:
    server = peer_server()
    path = server.add_task("replaced", b"a" * 5000)
    server.finish("replaced", fake_supernode.address, TASK_ID, CID)
    stat = path.stat()
    fresh = path.with_name("fresh")
    fresh.write_bytes(b"c" * 5000)
    os.utime(fresh, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(fresh, path)  # same size and mtime, another inode
    assert served(server, "replaced") == 404
    assert fake_supernode.wait_for(1, timeout=10) == [DOWN]


def test_vanished_file_is_forgotten(peer_server: StartServer) -> None:
    server = peer_server()
    path = server.add_task("failed-download", b"q" * 100)
    assert served(server, "failed-download") == 206
    path.unlink()
    assert served(server, "failed-download") == 404
    path.write_bytes(b"q" * 100)
    assert served(server, "failed-download") == 404  # forgotten until checked again


def test_rate_grants_share_the_total_limit(peer_server: StartServer) -> None:
    server = peer_server()
    for name in ("a", "b"):
        assert (
            server.get(f"/check/{name}", {"Datadir": str(server.data), "Totallimit": "1000"}).status
            == 200
        )

    def rate(name: str, value: int) -> bytes:
        reply = server.get(f"/rate/{name}", {"Ratelimit": str(value)})
        assert reply.status == 200
        return reply.body

    assert rate("a", 600) == b"600"
    assert rate("b", 900) == b"600"  # ceil(900 * 1000 / 1500)
    assert rate("a", 700) == b"438"  # ceil(700 * 1000 / 1600)
    (server.data / "a.service").write_bytes(b"")
    server.finish("a", "127.0.0.1:1")
    assert rate("b", 900) == b"900"  # a finished: b alone is within the limit


def test_total_limit_throttles_uploads(peer_server: StartServer) -> None:
    server = peer_server("--totallimit", "1M")
    content = random_bytes(1536 * 1024, seed=5)
    server.add_task("throttled", content)
    started = time.monotonic()
    reply = server.piece("throttled", 0, P - 1, 0, P, Cdnsource="source")
    elapsed = time.monotonic() - started
    assert reply.body == content
    assert elapsed > 1.0  # 1.5 MiB at 1 MiB/s, less the burst


def test_port_held_by_another_program_gives_another_port(peer_server: StartServer) -> None:
    port = free_port_in_range()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        server = peer_server("--port", str(port))
    assert server.port != port
    assert 15000 <= server.port <= 65000
    assert served(server, "nothing") == 404


def test_fixed_port_of_a_live_server_is_adopted(peer_server: StartServer) -> None:
    port = free_port_in_range()
    first = peer_server("--port", str(port))
    proc, line = launch_peer_server(first.home, "--port", str(port))
    try:
        assert line == f"dfget uploader server port is {port}"
        assert proc.wait(timeout=10) == 0
    finally:
        stop_process(proc)
    assert first.proc.poll() is None
    assert first.meta_port() == port


def test_ipv6_literal(tmp_path: Path) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 loopback")
    home = tmp_path / "v6"
    proc, line = launch_peer_server(home, "--ip", "::1")
    try:
        port = int(line.rsplit(" ", 1)[1])
        (home / "data" / "six.service").write_bytes(b"hello")
        assert peer_server.check("::1", port, "six", home / "data", 0)
        conn = http.client.HTTPConnection("::1", port, timeout=10)
        conn.request(
            "GET",
            "/peer/file/six",
            headers={"pieceNum": "0", "pieceSize": str(P), "Range": "bytes=0-99"},
        )
        assert conn.getresponse().read() == bytes.fromhex("04000005") + b"hello\x7f"
        conn.close()
    finally:
        stop_process(proc)


def test_unusable_address_fails_to_start(tmp_path: Path) -> None:
    proc, line = launch_peer_server(tmp_path / "bad", "--ip", "192.0.2.1")  # TEST-NET-1
    try:
        assert line == ""
        assert proc.wait(timeout=10) == 1
    finally:
        stop_process(proc)


def test_serves_on_an_inherited_listening_socket(tmp_path: Path) -> None:
    home = tmp_path / "inherited"
    with listen("127.0.0.1", 0) as listener:
        port = listener.getsockname()[1]
        proc = start_dfget(
            ["server", "--ip", "127.0.0.1", "--home", str(home), "--listen-fd",
             str(listener.fileno())],
            pass_fds=(listener.fileno(),),
        )  # fmt: skip
    try:
        assert read_first_line(proc) == f"dfget uploader server port is {port}"
        assert peer_server.ping("127.0.0.1", port)
        assert meta.read_port(home / "meta" / "host.meta") == port
    finally:
        stop_process(proc)


def test_inherited_descriptor_must_be_a_listening_socket(tmp_path: Path) -> None:
    with socket.socket() as unbound, open(tmp_path / "file", "w") as regular:
        for fd, why in ((unbound.fileno(), "not a listening socket"), (regular.fileno(), "")):
            proc = start_dfget(
                ["server", "--home", str(tmp_path / "home"), "--listen-fd", str(fd)],
                pass_fds=(fd,),
            )
            _, stderr = proc.communicate(timeout=30)
            assert proc.returncode == 1
            assert b"dfget server: cannot listen" in stderr and why.encode() in stderr


def test_log_lines_have_v1_format_and_no_headers(peer_server: StartServer) -> None:
    server = peer_server("--verbose")
    server.add_task("logged", b"l" * 100)
    server.get(
        "/check/logged", {"Authorization": "Bearer SECRET-TOKEN", "Datadir": str(server.data)}
    )
    served(server, "logged")
    stop_process(server.proc)
    lines = (server.home / "logs" / "dfserver.log").read_text().splitlines()
    assert lines
    pattern = re.compile(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (DEBU|INFO|WARN|ERRO) sign:\d+ : .+"
    )
    assert all(pattern.fullmatch(line) for line in lines), lines
    assert any(line.split()[2] == "DEBU" for line in lines)
    assert not any("SECRET-TOKEN" in line for line in lines)


@pytest.fixture
def spawn_home(tmp_path: Path) -> Iterator[Path]:
    """A work home whose spawned peer servers are all stopped afterwards."""
    home = tmp_path / "spawned"
    yield home
    for pid in servers_of(home):
        os.kill(pid, signal.SIGTERM)
    assert eventually(lambda: not servers_of(home), timeout=10)


def spawn(home: Path, name: str, port: int = 0) -> int | None:
    """What the downloader does for a p2p download of task file ``name``."""
    start = ServerStart(
        home,
        ip="127.0.0.1",
        port=port,
        expiretime=60.0,
        alivetime=60.0,
        totallimit=0,
        verbose=False,
        task_file_name=name,
    )
    port = start.port()  # known before the server is up: we bound it
    return port if start.ready() else None


RACER = """
import sys
from pathlib import Path
from dfget.uploader.spawn import ServerStart
start = ServerStart(Path(sys.argv[1]), ip="127.0.0.1", port=0, expiretime=60.0, alivetime=60.0,
                    totallimit=0, verbose=False, task_file_name=sys.argv[2])
print(start.port() if start.ready() else None)
"""


def test_racing_dfgets_start_one_server(spawn_home: Path) -> None:
    (spawn_home / "data").mkdir(parents=True)
    for name in ("racer0", "racer1"):
        (spawn_home / "data" / f"{name}.service").write_bytes(name.encode())
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(spawn_home), f"racer{i}"], stdout=subprocess.PIPE
        )
        for i in range(2)
    ]
    ports = [int(racer.communicate(timeout=30)[0].decode().strip()) for racer in racers]
    assert ports[0] == ports[1]
    assert len(servers_of(spawn_home)) == 1
    pid = int((spawn_home / "meta" / "server.pid").read_text())
    assert servers_of(spawn_home) == [pid]
    peer = PeerServer(subprocess.Popen(["true"]), ports[0], spawn_home)
    for name in ("racer0", "racer1"):  # both downloads were registered with the one server
        assert served(peer, name) == 206


def test_server_start_reuses_and_replaces(spawn_home: Path) -> None:
    first = spawn(spawn_home, "one")
    assert first is not None
    assert spawn(spawn_home, "two") == first
    [pid] = servers_of(spawn_home)
    os.kill(pid, signal.SIGKILL)  # dies without resetting the meta file
    # Our child: it must be reaped, not linger as a zombie of this process.
    assert eventually(lambda: not Path(f"/proc/{pid}").exists(), timeout=5)
    # (Its port is not asked: once free, a server of another home may take it at once, as
    # every server started in the same five minutes tries the same ports first.)
    second = spawn(spawn_home, "three")
    assert second is not None and peer_server.ping("127.0.0.1", second)
    [replacement] = servers_of(spawn_home)
    assert replacement != pid
    assert replacement == int((spawn_home / "meta" / "server.pid").read_text())


def test_server_start_adopts_a_live_server_on_the_fixed_port(
    spawn_home: Path, peer_server: StartServer
) -> None:
    port = free_port_in_range()
    live = peer_server("--port", str(port), home=spawn_home)
    meta.write_port(spawn_home / "meta" / "host.meta", 0)  # its record lost: only the port tells
    assert spawn(spawn_home, "adopted", port=port) == port
    assert servers_of(spawn_home) == [live.proc.pid]  # no second server
    assert meta.read_port(spawn_home / "meta" / "host.meta") == 0


def test_server_start_moves_off_a_fixed_port_held_by_another_program(spawn_home: Path) -> None:
    port = free_port_in_range()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))  # bound, not a peer server
        started = spawn(spawn_home, "elsewhere", port=port)
    assert started is not None and started != port and 15000 <= started <= 65000
    assert peer_server.ping("127.0.0.1", started)
    assert servers_of(spawn_home) == [int((spawn_home / "meta" / "server.pid").read_text())]


def test_deleting_the_output_keeps_the_file_served_but_not_a_rewrite(
    peer_server: StartServer, fake_supernode: FakeSupernode, tmp_path: Path
) -> None:
    """dfdaemon deletes the output once it has handed it over; the output is a hard link of the
    served file, so its change time moves. That alone must not end the serving (every block
    still matches the record); a rewrite that restores size and mtime still does."""
    server = peer_server()
    content = random_bytes(5 * 1024 * 1024, seed=9)
    for name in ("linked", "rewritten"):
        server.add_task(name, content)
        server.finish(name, fake_supernode.address, TASK_ID, CID)
        assert eventually((server.data / f"{name}.verified").exists, timeout=5)
    for name in ("linked", "rewritten"):
        output = tmp_path / f"{name}.out"
        os.link(server.data / f"{name}.service", output)
        output.unlink()  # as dfdaemon does once docker has the layer
    rewritten = server.data / "rewritten.service"
    stat = rewritten.stat()
    with open(rewritten, "r+b") as fh:
        fh.seek(len(content) - 1)
        fh.write(b"\0" if content[-1:] != b"\0" else b"\1")
    os.utime(rewritten, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert server.piece("linked", 0, P - 1, 0, P, Cdnsource="source").body == content[:P]
    assert served(server, "rewritten") == 404
    assert fake_supernode.wait_for(1, timeout=5) == [DOWN]
