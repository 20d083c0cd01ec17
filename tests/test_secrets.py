"""Credentials (Authorization, Cookie, signed-URL tokens) through the P2P path: they reach the
origin and, as v1 requires, the supernode, and nothing else: not peers, not logs, not --json,
traces or error messages. --no-supernode-credentials keeps them from the supernode too.

The source-pattern equivalents (header files, DFGET_HEADER_*, redirects to another host, log
and trace redaction) are in tests/test_cli.py::test_secret_headers_reach_the_origin_but_...,
test_cli.py::test_trace_of_a_p2p_run_zst_without_secrets and tests/test_source_download.py.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dfget.errors import ExitCode
from dfget.net.server import Handler, make_server
from dfget.redact import Scrubber
from tests.support.fake_peer import FakePeer
from tests.support.helpers import random_bytes, run_dfget
from tests.support.origin import Origin
from tests.support.peers import Peers, stop_peer_server
from tests.support.servers import SupernodeFactory

MiB = 1024 * 1024

SIZE = 5 * 1024 * 1024 + 77  # two pieces
TOKEN = "tok-7f3a9c1e55d2"
COOKIE = "session=ck-91b2e4d0aa"
BASIC = "Basic " + base64.b64encode(b"alice:pw-6e1d").decode()
SECRETS = (TOKEN, "ck-91b2e4d0aa", BASIC.split()[1])


@pytest.fixture
def honest_peer() -> Iterator[Callable[[bytes], FakePeer]]:
    made: list[FakePeer] = []

    def make(data: bytes) -> FakePeer:
        made.append(FakePeer(data, corrupt=False))
        return made[-1]

    yield make
    for peer in made:
        peer.stop()


def texts(peers: Peers, home: str, *extra: str) -> dict[str, str]:
    found = {name: text for name, text in zip(("stdout", "stderr"), extra, strict=False)}
    for path in (peers.root / home).rglob("*"):
        if path.is_file() and path.suffix in (".log", ".meta", ".json", ".jsonl"):
            found[str(path.relative_to(peers.root))] = path.read_text(errors="replace")
    return found


def assert_no_secret(texts: dict[str, str]) -> None:
    for where, text in texts.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret} in {where}"


def test_credentials_reach_origin_and_supernode_but_never_peers_or_logs(
    origin: Origin,
    supernode: SupernodeFactory,
    honest_peer: Callable[[bytes], FakePeer],
    peers: Peers,
) -> None:
    data = random_bytes(SIZE, seed=71)
    url = origin.add("/private.bin", data)
    origin.behave("/private.bin", auth=("alice", "pw-6e1d"))
    node = supernode("--verbose")
    peer = honest_peer(data)
    headers = [f"Authorization: {BASIC}", f"Cookie: {COOKIE}", f"X-Registry-Token: {TOKEN}"]
    peer.join(node, url, headers)
    header_file = peers.root / "headers"
    header_file.write_text("\n".join(headers) + "\n")
    trace = peers.root / "h" / "trace.jsonl"
    result = peers.run("h", url, "--node", node.node, "--header-file", str(header_file),
                       "--verbose", "--console", "--json", "--trace", str(trace),
                       out="f.bin")  # fmt: skip
    assert result.returncode == ExitCode.OK, result.stderr.decode()
    assert (peers.out / "f.bin").read_bytes() == data
    assert json.loads(result.stdout)["bytes"]["peer"] == SIZE
    assert peer.requests, "no piece came from the recording peer: the test proves nothing"
    for request in peer.requests:
        assert not {"authorization", "cookie", "x-registry-token"} & set(request), request
    # v1: the supernode's CDN fetches the file with the user's headers.
    cdn_fetches = [r for r in origin.stats.requests if not r.range]
    assert cdn_fetches and all(r.headers.get("Authorization") == BASIC for r in cdn_fetches)
    found = texts(peers, "h", result.stdout.decode(), result.stderr.decode())
    found["supernode.log"] = node.log.read_text()
    assert_no_secret(found)


def test_no_supernode_credentials_keeps_them_on_this_host(
    origin: Origin, supernode: SupernodeFactory, peers: Peers
) -> None:
    """Source pattern: the supernode only probes the origin (a one-byte range), peers fetch
    their pieces from the origin themselves, with the user's headers."""
    data = random_bytes(SIZE, seed=72)
    node = supernode(cdn_pattern="source")
    args = ["--node", node.node, "--pattern", "cdn", "--header", f"Authorization: {BASIC}",
            "--header", f"Cookie: {COOKIE}", "--header", "X-Trace: t1"]  # fmt: skip
    for path, flag in (("/kept.bin", ["--no-supernode-credentials"]), ("/sent.bin", [])):
        url = origin.add(path, data)
        result = peers.run("h", url, *args, *flag, out=path.strip("/"))
        assert result.returncode == ExitCode.OK, result.stderr.decode()
        assert (peers.out / path.strip("/")).read_bytes() == data
    requests = {path: [r for r in origin.stats.requests if r.path == path] for path in
                ("/kept.bin", "/sent.bin")}  # fmt: skip
    for path, seen in requests.items():
        probes = [r for r in seen if r.range == "bytes=0-0"]
        pieces = [r for r in seen if {k.lower(): v for k, v in r.headers.items()}.get("cdnsource")]
        assert len(probes) == 1 and pieces, path
        assert all(r.headers.get("Authorization") == BASIC for r in pieces)
        assert all(r.headers.get("Cookie") == COOKIE for r in pieces)
        assert probes[0].headers.get("X-Trace") == "t1"  # other headers still go
        sent = path == "/sent.bin"
        assert (probes[0].headers.get("Authorization") == BASIC) is sent, path
        assert (probes[0].headers.get("Cookie") == COOKIE) is sent, path


def test_a_protected_origin_without_supernode_credentials_falls_back_clearly(
    origin: Origin, supernode: SupernodeFactory, peers: Peers
) -> None:
    data = random_bytes(SIZE, seed=73)
    url = origin.add("/locked.bin", data)
    origin.behave("/locked.bin", auth=("alice", "pw-6e1d"))
    node = supernode(cdn_pattern="source")
    result = peers.run("h", url, "--node", node.node, "--no-supernode-credentials",
                       "--header", f"Authorization: {BASIC}", "--json", out="f.bin")  # fmt: skip
    assert result.returncode == ExitCode.OK, result.stderr.decode()
    assert (peers.out / "f.bin").read_bytes() == data
    summary = json.loads(result.stdout)
    assert summary["bytes"]["source"] == SIZE and summary["source_reasons"]
    assert_no_secret({"stdout": result.stdout.decode(), "stderr": result.stderr.decode()})


def test_signed_url_tokens_stay_out_of_messages_on_failure(
    origin: Origin, supernode: SupernodeFactory, peers: Peers
) -> None:
    """A 404 through the supernode, twice (the second time the supernode answers from its
    memory of unreachable URLs, quoting the URL): no token in any message or log."""
    node = supernode()
    url = origin.url(f"/gone.bin?X-Amz-Signature={TOKEN}&X-Amz-Credential={TOKEN}")
    for attempt in range(2):
        extra = ["--json"] if attempt else []
        result = peers.run("h", url, "--node", node.node, "--verbose", "--console",
                           "--header", f"Cookie: {COOKIE}", *extra, out="gone.bin")  # fmt: skip
        assert result.returncode == ExitCode.NOT_FOUND, result.stderr.decode()
        found = texts(peers, "h", result.stdout.decode(), result.stderr.decode())
        found["supernode.log"] = node.log.read_text()
        assert_no_secret(found)


def test_a_supernode_quoting_the_registration_back_leaks_nothing(
    origin: Origin, peers: Peers
) -> None:
    """A supernode (not ours: any v1 one) may put what it was sent into its error message; dfget
    shows that message, so it masks the URL's tokens and the credential headers in it."""
    data = random_bytes(1000, seed=74)
    url = origin.add("/echo.bin", data) + f"?sig={TOKEN}"

    class Echo(Handler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            answer = json.dumps({"code": 500, "msg": body.decode()}).encode()
            self.reply(500, answer, "application/json")

    server = make_server("127.0.0.1", 0, Echo)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        node = f"127.0.0.1:{server.server_address[1]}"
        result = peers.run("h", url, "--node", node, "--pattern", "cdn", "--verbose",
                           "--console", "--json", "--header", f"Authorization: {BASIC}",
                           "--header", f"Cookie: {COOKIE}", out="f.bin")  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == ExitCode.OK, result.stderr.decode()
    assert (peers.out / "f.bin").read_bytes() == data
    assert "registration failed" in result.stderr.decode()  # the message was shown...
    assert_no_secret(texts(peers, "h", result.stdout.decode(), result.stderr.decode()))  # ...masked


def test_scrubber_masks_url_tokens_and_credential_values() -> None:
    url = f"http://u:{TOKEN}@host/p?a=1&sig={TOKEN}&e=%2Fenc%2Fval"
    scrub = Scrubber(url, [("Authorization", BASIC), ("Cookie", COOKIE), ("X-Plain", "visible")])
    text = scrub(f"{url} said {BASIC} / {COOKIE} / {TOKEN} / /enc/val / visible / a=1")
    assert not any(secret in text for secret in SECRETS) and "/enc/val" not in text
    assert text.startswith("http://host/p?a=…&sig=…&e=…") and text.endswith("visible / a=1")


def test_header_variables_stay_out_of_the_peer_servers_environment(
    origin: Origin, supernode: SupernodeFactory, peers: Peers
) -> None:
    """DFGET_HEADER_<NAME> reaches the origin, but the long-lived peer server that the download
    starts never has it in its environment (readable in /proc/<pid>/environ)."""
    data = random_bytes(SIZE, seed=72)
    url = origin.add("/env.bin", data)
    node = supernode(cdn_pattern="source")
    result = run_dfget(
        peers.args("h", url, "--node", node.node, out="f.bin"),
        timeout=90,
        env={"DFGET_HEADER_X_REGISTRY_TOKEN": TOKEN},
    )
    assert result.returncode == ExitCode.OK, result.stderr.decode()
    assert (peers.out / "f.bin").read_bytes() == data
    assert all(r.headers.get("X-Registry-Token") == TOKEN for r in origin.stats.requests)
    environ = Path(f"/proc/{peers.server_pid('h')}/environ").read_bytes()
    assert b"PYTHONPATH=" in environ  # the server's own environment was read
    assert TOKEN.encode() not in environ and b"DFGET_HEADER_" not in environ


def test_a_symlink_at_the_work_path_is_not_followed(tmp_path: Path) -> None:
    """The work file is opened with O_NOFOLLOW: a symlink planted where it will be created
    cannot redirect the download's writes (or its truncation) to another file."""
    from dfget.download.target import Target
    from dfget.errors import LocalIOError

    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    work = tmp_path / "work"
    work.symlink_to(victim)
    with pytest.raises(LocalIOError):
        Target(work, tmp_path / "out", [], length=100)
    assert victim.read_bytes() == b"precious"


def test_the_work_home_is_private(
    origin: Origin, supernode: SupernodeFactory, tmp_path: Path
) -> None:
    """Logs, meta, served and partial files hold task names, URLs and unverified bytes: other
    local users read none of them (directories 0700, files 0600)."""
    url = origin.add("/private.bin", random_bytes(MiB, seed=71))
    node = supernode()
    home = tmp_path / "fresh" / "home"
    result = run_dfget(
        ["-u", url, "-o", str(tmp_path / "out.bin"), "--node", node.node, "--home", str(home),
         "--ip", "127.0.0.1", "--alivetime", "30s"], timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    try:
        for directory in ("", "data", "meta", "logs"):
            assert stat.S_IMODE((home / directory).stat().st_mode) == 0o700, directory
        deadline = time.monotonic() + 5
        while not list((home / "data").glob("*.verified")) and time.monotonic() < deadline:
            time.sleep(0.05)
        files = [
            *(home / "logs").iterdir(),
            home / "meta" / "host.meta",
            home / "meta" / "server.pid",
            *(home / "data").glob("*.verified"),
        ]
        for path in files:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert len(files) >= 5
        output_mode = stat.S_IMODE((tmp_path / "out.bin").stat().st_mode)
        assert output_mode == 0o644 & ~current_umask(), oct(output_mode)  # the user's file
    finally:
        stop_peer_server(home)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
