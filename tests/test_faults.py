"""Faults with real processes: every one ends in the right bytes at the destination, or in a
clear error with nothing there. Numbers follow the fault matrix of the robustness issue.

Covered elsewhere and only referenced here:

1. a holder SIGKILLed mid-piece: tests/test_p2p.py::test_holder_killed_mid_download;
3. the supernode killed with another one to go to:
   tests/test_p2p.py::test_supernode_killed_mid_download_migrates_keeping_pieces;
4. origin 404/410, 401, 403, 500 (bounded retries), 503 twice then fine, one reset mid-body,
   short bodies, a wrong Content-Range, Range ignored: tests/test_source_download.py
   (test_not_found ... test_range_ignored_on_later_requests); lying heads (negative,
   non-ASCII or underscored Content-Length, broken chunks...): tests/test_hostile.py;
6. SIGINT/SIGTERM in a source download: test_source_download.py::test_signal_mid_download_...
   and test_resume.py::test_sigterm_keeps_partial_state_and_no_litter;
7. replaced on success, kept on failure (source pattern):
   test_source_download.py::test_existing_destination_is_replaced, test_wrong_sha256_keeps_...;
8. a SIGKILLed server's stale meta file, a fixed port taken by another program:
   test_uploader_lifecycle.py::test_server_start_reuses_and_replaces,
   test_port_held_by_another_program_gives_another_port;
9. two racing spawns start one server: test_uploader_lifecycle.py::test_racing_dfgets_...;
12. a finished file changed (mtime) or replaced (inode) is not served:
   test_uploader_lifecycle.py::test_changed_file_is_no_longer_served, test_replaced_file_....
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from dfget.errors import ExitCode
from dfget.protocol.pieces import TAIL, frame_head
from dfget.protocol.ranges import parse_range_header
from tests.support.fake_peer import FakePeer
from tests.support.helpers import (
    eventually,
    open_fds,
    peer_port,
    random_bytes,
    run_dfget,
    settle,
    start_dfget,
    stop_process,
    thread_count,
)
from tests.support.origin import Origin
from tests.support.peers import Peers, stop_peer_server
from tests.support.scripted_supernode import ScriptedSupernode
from tests.support.servers import PeerServer, SupernodeFactory, SupernodeProcess

MiB = 1024 * 1024
P = 4 * MiB
SIZE = 9 * MiB + 4321  # three pieces, the last one partial


# ---- helpers -----------------------------------------------------------------------------------


def journaled(home: Path) -> dict[str, object] | None:
    """The resume record of the (one) running download in ``home`` once it holds data."""
    for record in (home / "partial").glob("*.json") if (home / "partial").is_dir() else []:
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        if data.get("extents"):
            return dict(data)
    return None


def holders(result: dict[str, object]) -> dict[tuple[str, str], dict[str, object]]:
    return {(h["kind"], h["address"]): h for h in result["holders"]}  # type: ignore[index, union-attr]


def metric(node: SupernodeProcess, line_prefix: str) -> float:
    for line in httpx.get(f"{node.url}/metrics", timeout=5).text.splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def piece_status(port: int, name: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(
            "GET",
            f"/peer/file/{name}",
            headers={"pieceNum": "0", "pieceSize": str(P), "Range": f"bytes=0-{P - 1}"},
        )
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@pytest.fixture
def fake_peer() -> Iterator[Callable[..., FakePeer]]:
    made: list[FakePeer] = []

    def make(data: bytes, corrupt: bool = True) -> FakePeer:
        made.append(FakePeer(data, corrupt))
        return made[-1]

    yield make
    for peer in made:
        peer.stop()


# ---- 2. a peer that serves corrupted bytes ---------------------------------------------------


def test_corrupt_peer_is_caught_by_the_piece_md5_blacklisted_and_reported(
    origin: Origin, supernode: SupernodeFactory, fake_peer: Callable[..., FakePeer], peers: Peers
) -> None:
    data = random_bytes(SIZE, seed=51)
    url = origin.add("/corrupt.bin", data)
    node = supernode()
    liar = fake_peer(data)
    liar.join(node, url)  # it now holds every piece, as far as the supernode knows
    result = peers.json("h", url, "--node", node.node, "--pattern", "cdn", out="f.bin")
    assert (peers.out / "f.bin").read_bytes() == data
    assert liar.requests, "the corrupting peer was never asked: the test proves nothing"
    blamed = holders(result)[("peer", liar.address)]
    assert blamed["bytes"] == 0 and blamed["failures"] >= 1  # type: ignore[operator]
    assert result["bytes"] == {"peer": 0, "cdn": SIZE, "source": 0, "resumed": 0}
    assert metric(node, 'dragonfly_supernode_piece_errors_total{holder="peer"}') >= 1


def test_corrupt_peer_in_the_source_pattern_is_caught_by_sha256_and_refetched(
    origin: Origin, supernode: SupernodeFactory, fake_peer: Callable[..., FakePeer], peers: Peers
) -> None:
    """No piece md5 in the source pattern: only the file digest can tell. The bytes peers
    delivered are fetched again from the origin, and the peer that lied is named and reported."""
    data = random_bytes(SIZE, seed=52)
    url = origin.add("/layer.bin", data)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    node = supernode(cdn_pattern="source")
    liar = fake_peer(data)
    liar.join(node, url)
    result = peers.run("h", url, "--node", node.node, "--pattern", "cdn", "--json",
                       "--digest", digest, out="f.bin")  # fmt: skip
    stderr = result.stderr.decode()
    assert result.returncode == ExitCode.OK, stderr
    assert (peers.out / "f.bin").read_bytes() == data
    summary = json.loads(result.stdout)
    assert summary["bytes"]["source"] == SIZE + 1  # type: ignore[index]  # +1: the range probe
    assert holders(summary)[("peer", liar.address)]["failures"] == 3
    assert f"peer {liar.address} delivered corrupted piece" in stderr
    assert metric(node, 'dragonfly_supernode_piece_errors_total{holder="peer"}') == 3


def test_corrupt_peer_without_the_source_fails_naming_it(
    origin: Origin, supernode: SupernodeFactory, fake_peer: Callable[..., FakePeer], peers: Peers
) -> None:
    data = random_bytes(SIZE, seed=53)
    url = origin.add("/layer.bin", data)
    node = supernode(cdn_pattern="source")
    liar = fake_peer(data)
    liar.join(node, url)
    origin.reset_stats()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    result = peers.run("h", url, "--node", node.node, "--pattern", "cdn", "--notbs",
                       "--digest", digest, out="f.bin")  # fmt: skip
    stderr = result.stderr.decode()
    assert result.returncode == ExitCode.DIGEST_MISMATCH, stderr
    assert f"suspect: peer {liar.address} (3 pieces)" in stderr
    assert not peers.out.exists() or not any(peers.out.iterdir())
    assert not origin.stats.requests


# ---- 3. the only supernode killed mid-download -------------------------------------------------


def test_supernode_killed_without_another_the_source_fills_only_the_gaps(
    origin: Origin, supernode: SupernodeFactory, peers: Peers
) -> None:
    data = random_bytes(SIZE, seed=54)
    url = origin.add("/gaps.bin", data)
    node = supernode("--down-limit", "1")  # one piece at a time: some are not even started
    args = peers.args("h", url, "--node", node.node, "--pattern", "cdn", "--json",
                      "--locallimit", "6M", out="f.bin")  # fmt: skip
    proc = start_dfget(args)
    try:
        assert eventually(lambda: journaled(peers.root / "h"), timeout=20), "a first piece"
        node.proc.kill()
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        stop_process(proc)
    assert proc.returncode == ExitCode.OK, stderr.decode()
    assert (peers.out / "f.bin").read_bytes() == data
    result = json.loads(stdout)
    by_kind = result["bytes"]
    assert by_kind["cdn"] > 0 and by_kind["source"] > 0, result
    assert by_kind["cdn"] + by_kind["source"] == SIZE, result  # nothing fetched twice
    asked = sum(parse_range_header(r.range).length for r in origin.stats.requests if r.range)
    assert asked == by_kind["source"]  # the origin was asked for exactly the gaps


# ---- 4. origin errors through the P2P path; a reset on every response -----------------------


def test_origin_errors_through_the_supernode_end_clearly_without_a_retry_storm(
    origin: Origin, supernode: SupernodeFactory, peers: Peers
) -> None:
    """The supernode's CDN meets the error first; dfget then falls back to the source, meets
    it too and exits with the code of the status. The origin sees a handful of requests."""
    node = supernode()
    cases = [
        ("/missing", None, ExitCode.NOT_FOUND, 2),
        ("/auth", {"auth": ("u", "p")}, ExitCode.AUTH_REQUIRED, 2),
        ("/forbidden", {"status": 403, "fail_times": -1}, ExitCode.AUTH_REQUIRED, 2),
        ("/unavailable", {"status": 503, "fail_times": -1}, ExitCode.SOURCE_HTTP, 6),
    ]
    for path, behaviour, code, most in cases:
        if behaviour is not None:
            origin.add(path, b"x" * 1000)
            origin.behave(path, **behaviour)
        result = peers.run("h", origin.url(path), "--node", node.node, out=path.strip("/"))
        stderr = result.stderr.decode()
        assert result.returncode == code, (path, stderr)
        assert path in stderr and "Traceback" not in stderr
        assert not (peers.out / path.strip("/")).exists()
        assert 1 <= origin.stats.count(path) <= most, (path, origin.stats.count(path))


def test_reset_on_every_response_gives_up_after_a_few_attempts(
    origin: Origin, peers: Peers
) -> None:
    url = origin.add("/cut.bin", random_bytes(2 * MiB, seed=55))
    origin.behave("/cut.bin", reset_after=64 * 1024)  # every response
    result = peers.run("h", url, "--pattern", "source", out="cut.bin")
    assert result.returncode == ExitCode.NETWORK, result.stderr.decode()
    assert 2 <= origin.stats.count("/cut.bin") <= 5
    assert not (peers.out / "cut.bin").exists()


# ---- 5. disk full ----------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs; skipped where mounting is not allowed, but never on CI."""
    mountpoint = tmp_path / "small-disk"
    mountpoint.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mountpoint)],
        capture_output=True,
        timeout=10,
    )
    if mount.returncode != 0:
        reason = f"cannot mount a tmpfs: {mount.stderr.decode().strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (CI must run this test)")
        pytest.skip(reason)
    try:
        yield mountpoint
    finally:
        if subprocess.run(["umount", str(mountpoint)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


@pytest.mark.parametrize("pattern", ["source", "p2p"])
def test_disk_full_fails_clearly_and_leaves_nothing_at_the_destination(
    origin: Origin, supernode: SupernodeFactory, small_disk: Path, pattern: str
) -> None:
    url = origin.add("/big.bin", random_bytes(12 * MiB, seed=56))
    home, out = small_disk / "home", small_disk / "out"
    args = ["-u", url, "-o", str(out / "big.bin"), "--home", str(home), "--pattern", pattern,
            "--ip", "127.0.0.1", "--alivetime", "30s"]  # fmt: skip
    if pattern == "p2p":
        args += ["--node", supernode().node]
    try:
        result = run_dfget(args, timeout=60)
    finally:
        # Its log is on the small disk: it must go before the unmount.
        assert stop_peer_server(home, timeout=20), "the peer server to exit"
    stderr = result.stderr.decode()
    assert result.returncode == ExitCode.LOCAL_IO, stderr
    assert "disk full" in stderr and "Traceback" not in stderr
    assert not out.exists() or not any(out.iterdir())
    left = [p.relative_to(small_disk) for p in small_disk.rglob("*") if p.is_file()]
    assert all(p.parts[0] == "home" for p in left), left
    assert not any(p.parts[1] == "data" for p in left), left  # the peer server serves nothing


# ---- 6. SIGINT / SIGTERM in a P2P download --------------------------------------------------


@pytest.mark.parametrize(
    ("signum", "code"),
    [(signal.SIGTERM, ExitCode.TERMINATED), (signal.SIGINT, ExitCode.INTERRUPTED)],
)
def test_interrupted_p2p_download_keeps_a_resumable_partial_and_stops_being_offered(
    origin: Origin, supernode: SupernodeFactory, peers: Peers, signum: int, code: ExitCode
) -> None:
    """The half file leaves the peer server's data dir for <home>/partial (resumable), the own
    server answers 404 for it, and the supernode is told, so no peer is sent there any more."""
    data = random_bytes(SIZE, seed=57)
    url = origin.add("/half.bin", data)
    node = supernode()
    proc = start_dfget(
        peers.args("p1", url, "--node", node.node, "--locallimit", "4M", out="f.bin")
    )
    try:
        assert eventually(lambda: journaled(peers.root / "p1"), timeout=20), "a first piece"
        record = journaled(peers.root / "p1")
        assert record is not None
        task_file = Path(str(record["data"])).name.removesuffix(".service")
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=30)
    finally:
        stop_process(proc)
    assert proc.returncode == code, stderr.decode()
    assert not peers.out.exists() or not any(peers.out.iterdir())
    kept = journaled(peers.root / "p1")
    assert kept is not None and Path(str(kept["data"])).parent == peers.root / "p1" / "partial"
    assert Path(str(kept["data"])).is_file()
    assert not list((peers.root / "p1" / "data").glob("*.service"))
    assert piece_status(peers.server_port("p1"), task_file) == 404
    second = peers.json("p2", url, "--node", node.node, "--pattern", "cdn", out="g.bin")
    assert (peers.out / "g.bin").read_bytes() == data
    assert not [h for h in holders(second) if h[0] == "peer"], second["holders"]
    # Nor does it wait for the pieces the interrupted one was fetching (its failure report
    # released them; otherwise only its 10 s of silence would).


def test_a_signal_after_the_output_is_in_place_does_not_fail_the_download(
    origin: Origin, tmp_path: Path
) -> None:
    """Once the file is verified and published, a Ctrl-C while the run reports to the supernode
    (here its /task/metrics takes seconds) does not turn the success into exit 130: a script
    would fetch again what is already there."""
    data = random_bytes(5 * 1024 * 1024 + 7, seed=58)
    url = origin.add("/done.bin", data)
    sn = ScriptedSupernode(url, data, metrics_delay=4.0)
    home, out = tmp_path / "h", tmp_path / "out.bin"
    proc = start_dfget(
        ["-u", url, "-o", str(out), "--node", sn.address, "--home", str(home),
         "--ip", "127.0.0.1", "--pattern", "cdn"]
    )  # fmt: skip
    try:
        assert sn.metrics_arrived.wait(60), "the download reached its metrics report"
        assert out.read_bytes() == data  # published before the report
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        stop_process(proc)
        sn.stop()
    assert proc.returncode == ExitCode.OK, stderr.decode()
    assert out.read_bytes() == data
    log = (home / "logs" / "dfclient.log").read_text()
    assert "SIGINT arrived after the download completed; the output is in place" in log


# ---- 7. the destination is replaced only on success, atomically ----------------------------


def test_existing_destination_is_replaced_atomically_on_p2p_success_only(
    origin: Origin, supernode: SupernodeFactory, peers: Peers
) -> None:
    """A reader never sees a half-written file; the old inode is never written to (another
    name of it keeps the old bytes); a failed download leaves the destination alone."""
    data = random_bytes(SIZE, seed=58)
    url = origin.add("/new.bin", data)
    node = supernode()
    peers.out.mkdir(parents=True)
    dest = peers.out / "f.bin"
    old = b"the previous version\n" * 1000
    dest.write_bytes(old)
    os.link(dest, peers.root / "old-name")
    seen: set[bytes] = set()
    proc = start_dfget(peers.args("h", url, "--node", node.node, "--locallimit", "8M", out="f.bin"))
    try:
        while proc.poll() is None:
            seen.add(hashlib.sha256(dest.read_bytes()).digest())
            time.sleep(0.01)
        _, stderr = proc.communicate(timeout=60)
    finally:
        stop_process(proc)
    assert proc.returncode == ExitCode.OK, stderr.decode()
    assert seen <= {hashlib.sha256(old).digest(), hashlib.sha256(data).digest()}
    assert dest.read_bytes() == data and (peers.root / "old-name").read_bytes() == old
    assert sorted(p.name for p in peers.out.iterdir()) == ["f.bin"]
    failed = peers.run("h", origin.url("/missing.bin"), "--node", node.node, out="f.bin")
    assert failed.returncode == ExitCode.NOT_FOUND
    assert dest.read_bytes() == data
    assert sorted(p.name for p in peers.out.iterdir()) == ["f.bin"]


# ---- 8. stale meta file, dead port, port taken by another program ---------------------------


class Imposter:
    """Something else on the port the meta file names: it never answers, or answers HTTP
    200 "success" to everything (so /server/ping passes and only /check/ can tell)."""

    def __init__(self, kind: str) -> None:
        self.listener = socket.create_server(("127.0.0.1", peer_port()), backlog=64)
        self.port = self.listener.getsockname()[1]
        self.kind = kind
        self.connections: list[socket.socket] = []  # the silent kind keeps them open
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(conn)
            if self.kind == "http":
                conn.recv(65536)
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nsuccess"
                )
                conn.close()

    def close(self) -> None:
        self.listener.close()
        for conn in self.connections:
            conn.close()


@pytest.mark.parametrize("stale", ["garbage", "dead-port", "silent", "http", "other-home"])
def test_stale_meta_file_gets_a_new_server_without_hanging(
    origin: Origin,
    supernode: SupernodeFactory,
    peer_server: Callable[..., PeerServer],
    peers: Peers,
    stale: str,
) -> None:
    data = random_bytes(100_000, seed=59)
    url = origin.add("/small.bin", data)
    node = supernode()
    meta = peers.root / "h" / "meta" / "host.meta"
    meta.parent.mkdir(parents=True)
    imposter = None
    if stale == "garbage":
        stale_port = 0
        meta.write_text('{"servicePort": 15001')
    elif stale == "dead-port":
        stale_port = peer_port()
    elif stale in ("silent", "http"):
        imposter = Imposter(stale)
        stale_port = imposter.port
    else:  # the port now belongs to the peer server of another work home
        stale_port = peer_server().port
    if stale_port:
        meta.write_text(json.dumps({"servicePort": stale_port}))
    try:
        result = peers.json("h", url, "--node", node.node, out="f.bin")
    finally:
        if imposter is not None:
            imposter.close()
    assert (peers.out / "f.bin").read_bytes() == data
    assert result["serving"]
    if imposter is not None:  # asked once, not again under the spawn lock (each ask can wait 2 s)
        assert len(imposter.connections) == 1
    port = peers.server_port("h")
    if stale == "dead-port":  # free again: the supernode may still send peers there
        assert port == stale_port
    else:
        assert port != stale_port
    (task_file,) = (peers.root / "h" / "data").glob("*.service")
    assert piece_status(port, task_file.name.removesuffix(".service")) == 206


# ---- 9. two dfgets, same URL, same home, at the same time ----------------------------------


@pytest.mark.parametrize("outputs", [("f.bin", "f.bin"), ("f.bin", "g.bin")], ids=["same", "two"])
def test_two_downloads_of_one_url_in_one_home(
    origin: Origin, supernode: SupernodeFactory, peers: Peers, outputs: tuple[str, str]
) -> None:
    data = random_bytes(SIZE, seed=60)
    url = origin.add("/shared.bin", data)
    node = supernode()
    first = start_dfget(
        peers.args("h", url, "--node", node.node, "--locallimit", "6M", out=outputs[0])
    )
    try:
        assert eventually(lambda: journaled(peers.root / "h"), timeout=20), (
            "the first download's first piece"
        )
        second = start_dfget(peers.args("h", url, "--node", node.node, out=outputs[1]))
        try:
            results = [(p.communicate(timeout=60), p.returncode) for p in (first, second)]
        finally:
            stop_process(second)
    finally:
        stop_process(first)
    for (_, stderr), code in results:
        assert code == ExitCode.OK, stderr.decode()
    for name in set(outputs):
        assert (peers.out / name).read_bytes() == data
    assert sorted(p.name for p in peers.out.iterdir()) == sorted(set(outputs))
    pid = peers.server_pid("h")
    servers = [
        entry.name
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit()
        and str(peers.root / "h").encode() in _cmdline(entry)
        and b"server" in _cmdline(entry).split(b"\0")
    ]
    assert servers == [str(pid)]


def _cmdline(entry: Path) -> bytes:
    try:
        return (entry / "cmdline").read_bytes()
    except OSError:
        return b""


# ---- 10. 64 concurrent downloaders against one peer server ---------------------------------


def test_64_concurrent_downloaders_are_all_served_without_leaks(
    peer_server: Callable[..., PeerServer],
) -> None:
    """Each downloader fetches every piece of a file over one keep-alive connection and checks
    it byte for byte; every eighth hangs up in the middle of a piece. Afterwards the server
    holds as many descriptors and threads as before."""
    piece_size = MiB  # the smallest wrapped piece size whose frame head is unambiguous
    data = random_bytes(4 * MiB + 1234, seed=61)
    server = peer_server()
    server.add_task("many", data)
    pid = server.proc.pid
    assert server.get("/server/ping").status == 200
    fds, threads = open_fds(pid), thread_count(pid)
    capacity = piece_size - 5
    pieces = -(-len(data) // capacity)
    failures: list[str] = []

    def download(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            for k in range(pieces):
                start = k * piece_size
                conn.request("GET", "/peer/file/many", headers={
                    "pieceNum": str(k), "pieceSize": str(piece_size),
                    "Range": f"bytes={start}-{start + piece_size - 1}",
                })  # fmt: skip
                response = conn.getresponse()
                if n % 8 == 7 and k == 1:
                    response.read(1000)
                    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                    return
                body = response.read()
                chunk = data[k * capacity : (k + 1) * capacity]
                if body != frame_head(len(chunk), piece_size) + chunk + TAIL:
                    failures.append(f"downloader {n} piece {k}: {response.status}")
        except (OSError, http.client.HTTPException) as exc:
            failures.append(f"downloader {n}: {exc!r}")
        finally:
            conn.close()

    workers = [threading.Thread(target=download, args=(n,)) for n in range(64)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not failures, failures[:5]
    assert settle(lambda: thread_count(pid), threads) <= threads
    assert settle(lambda: open_fds(pid), fds) <= fds
    assert server.get("/server/ping").status == 200


# ---- 11. expiry while a peer is mid-transfer ----------------------------------------------


def test_expiry_while_a_peer_is_mid_transfer(
    origin: Origin, supernode: SupernodeFactory, peers: Peers
) -> None:
    """The holder's file expires while its big piece is on the way: the open file still
    delivers that piece whole, the supernode hears the service is down, and the downloader
    takes the rest elsewhere."""
    data = random_bytes(P - 5 + 1000, seed=62)  # a full piece and a small one
    url = origin.add("/expiring.bin", data)
    node = supernode("--down-limit", "1")
    peers.json("p1", url, "--node", node.node, "--expiretime", "3s")
    # The big piece takes 4 s at 1 MiB/s: it is on the way when its file expires.
    result = peers.json("p2", url, "--node", node.node, "--pattern", "cdn",
                        "--locallimit", "1M")  # fmt: skip
    assert (peers.out / "p2.bin").read_bytes() == data
    assert result["bytes"]["peer"] > 0  # type: ignore[index]
    assert sum(result["bytes"].values()) == len(data)  # type: ignore[union-attr, attr-defined]
    log = (peers.root / "p1" / "logs" / "dfserver.log").read_text()
    assert "expired" in log
    assert not list((peers.root / "p1" / "data").glob("*.service"))


# ---- 12. the served file modified after the download ---------------------------------------


def test_output_modified_in_place_is_never_served(
    origin: Origin, supernode: SupernodeFactory, peers: Peers
) -> None:
    """The output is a hard link of the served file. Changed in place with its size and mtime
    restored, only the inode's change time tells; the peer server must notice."""
    data = random_bytes(SIZE, seed=63)
    url = origin.add("/mine.bin", data)
    node = supernode()
    peers.json("p1", url, "--node", node.node)
    (service,) = (peers.root / "p1" / "data").glob("*.service")
    output = peers.out / "p1.bin"
    assert os.stat(service).st_ino == os.stat(output).st_ino
    before = os.stat(output)
    with open(output, "r+b") as file:
        file.seek(1000)
        file.write(b"edited by the user")
    os.utime(output, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(output).st_size == before.st_size
    assert piece_status(peers.server_port("p1"), service.name.removesuffix(".service")) == 404
    second = peers.json("p2", url, "--node", node.node, "--pattern", "cdn")
    assert (peers.out / "p2.bin").read_bytes() == data
    assert second["bytes"]["peer"] == 0  # type: ignore[index]
