"""The drop-in CLI, end to end: the real `dfget` process against real servers on 127.0.0.1.

dfdaemon 1.0.6 execs dfget for every blob and only looks at the exit code (0 ok, 100 auth
required, anything else failure), so these tests run the command exactly as it does and check
what can be observed from outside: files, exit codes, which supernode was asked, the request
headers the origin saw, the log files and the trace. Parser and precedence details are unit
tested in test_configfile.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import certifi
import pytest
import zstandard

from dfget import logs
from dfget.errors import ExitCode
from tests.support.helpers import (
    REPO,
    free_port,
    random_bytes,
    run_dfget,
    start_dfget,
    stop_process,
)
from tests.support.origin import Origin
from tests.support.peers import stop_peer_server
from tests.support.servers import SupernodeFactory, read_first_line

LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (DEBU|INFO|WARN|ERRO|CRIT) sign:\S+ : \S.*$"
)
SIZE = 200_000
CA_BUNDLE = certifi.where()  # a real PEM bundle for --cacerts


def dfget(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Run:
    """Run the real command; the configuration file is an empty temporary one unless ``env``
    names another (tests never read /etc/dragonfly)."""
    empty = tmp_path / "empty-dfget.yml"
    if not empty.exists():
        empty.write_text("")
    result = run_dfget(list(args), env={"DFGET_CONFIG": str(empty), **(env or {})}, timeout=60)
    return Run(result.returncode, result.stdout.decode(), result.stderr.decode())


@dataclass
class Run:
    code: int
    out: str
    err: str


def log_lines(home: Path, name: str = "dfclient.log") -> list[str]:
    return (home / "logs" / name).read_text().splitlines()


# --- a recording "supernode" ---------------------------------------------------------------------


@dataclass
class Recorder:
    """Answers every call like a supernode refusing the registration (HTTP 500, as the Go
    supernode does), so dfget falls back to the source; records what it was sent."""

    server: ThreadingHTTPServer
    calls: list[tuple[str, str, object]] = field(default_factory=list)

    @property
    def node(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    @property
    def registrations(self) -> list[dict[str, object]]:
        return [body for method, path, body in self.calls if path == "/peer/registry"]  # type: ignore[misc]


@pytest.fixture
def recorders() -> Iterator[Callable[[], Recorder]]:
    started: list[Recorder] = []

    def start() -> Recorder:
        holder: list[Recorder] = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, body: object) -> None:
                holder[0].calls.append((self.command, self.path.split("?")[0], body))
                reply = b'{"code":500,"message":"recorder: not a supernode"}\n'
                self.send_response_only(500)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def do_GET(self) -> None:
                self._answer(None)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    self._answer(json.loads(raw))
                except ValueError:
                    self._answer(raw)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        holder.append(Recorder(server))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(holder[0])
        return holder[0]

    yield start
    for recorder in started:
        recorder.server.shutdown()
        recorder.server.server_close()


# --- version, usage, help ------------------------------------------------------------------------


def test_version_forms() -> None:
    lines = set()
    for args in (["version"], ["--version"], ["-v"]):
        result = run_dfget(args)
        assert result.returncode == 0, result.stderr
        lines.add(result.stdout.decode().strip())
    assert len(lines) == 1 and "1.0.6" in lines.pop()


def test_no_arguments_is_a_usage_error() -> None:
    result = run_dfget([])
    assert result.returncode == ExitCode.USAGE
    assert b"Usage: dfget" in result.stderr and b"--url" in result.stderr
    assert result.stdout == b""


V1_LONG_FLAGS = [
    "--url", "--output", "--locallimit", "--minrate", "--totallimit", "--timeout", "--md5",
    "--identifier", "--callsystem", "--cacerts", "--pattern", "--filter", "--header", "--node",
    "--notbs", "--dfdaemon", "--insecure", "--clientqueue", "--showbar", "--console",
    "--verbose", "--home", "--ip", "--port", "--expiretime", "--alivetime", "--help",
]  # fmt: skip
V1_SHORT_FLAGS = {
    "-u": "--url", "-o": "--output", "-s": "--locallimit", "-e": "--timeout", "-m": "--md5",
    "-i": "--identifier", "-p": "--pattern", "-f": "--filter", "-n": "--node", "-b": "--showbar",
    "-h": "--help",
}  # fmt: skip


def test_help_lists_every_v1_flag_with_units_and_defaults() -> None:
    short = run_dfget(["-h"])
    result = run_dfget(["--help"])
    assert result.returncode == short.returncode == 0 and result.stdout == short.stdout
    text = result.stdout.decode()
    flat = " ".join(text.split())
    for flag in V1_LONG_FLAGS:
        assert re.search(rf"(^|[\s,]){flag}[\s,]", text), flag
    for short_flag, long_flag in V1_SHORT_FLAGS.items():
        assert f"{short_flag}, {long_flag}" in text
    for expected in (
        "[default: 0]",  # -s: the sane default, documented
        "v1 silently capped at 20MB",
        "[default: 64KB]",
        "[default: (unset: the cache budget decides)]",
        "[default: (unset: up while serving)]",
        "[default: (10%, at most 8GB)]",
        "[default: p2p]",
        "[default: 6;",
        "Units: RATE is bytes per second",
        "DURATION is Go syntax",
        "Examples:",
        "Exit codes:",
        "DFGET_HEADER_AUTHORIZATION",
    ):
        assert expected in flat, expected
    server = run_dfget(["server", "--help"]).stdout.decode()
    for flag in ("--data", "--home", "--ip", "--port", "--meta", "--expiretime", "--alivetime"):
        assert flag in server
    assert "--verbose" in server and "--cache-budget" in server and "--cache-min-free" in server


# --- every flag, both spellings ------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["short", "long"])
def test_every_v1_flag_is_accepted(
    spelling: str, origin: Origin, recorders: Callable[[], Recorder], tmp_path: Path
) -> None:
    data = random_bytes(SIZE, seed=1)
    url = origin.add("/f.bin", data) + "?sig=abc"
    md5 = hashlib.md5(data).hexdigest()
    out, home, node = tmp_path / "out" / "f.bin", tmp_path / "home", recorders().node
    short = spelling == "short"
    args = [
        "-u" if short else "--url", url,
        "-o" if short else "--output", str(out),
        "-s" if short else "--locallimit", "100MB",
        "--minrate", "64KB",
        "--totallimit", "20M",
        "-e" if short else "--timeout", "30s",
        "-m" if short else "--md5", md5,
        "-i" if short else "--identifier", "id-1",
        "--callsystem", "tests",
        "--cacerts", f"{CA_BUNDLE},{CA_BUNDLE}",
        "-p" if short else "--pattern", "source",
        "-f" if short else "--filter", "sig&exp",
        "--header", "X-Test:1",
        "-n" if short else "--node", node,
        "--notbs", "--dfdaemon", "--insecure",
        "--clientqueue", "6",
        "-b" if short else "--showbar",
        "--console", "--verbose",
        "--home", str(home),
        "--ip", "127.0.0.1",
        "--port", str(free_port()),
        "--expiretime", "3m0s",
        "--alivetime", "300ms",
    ]  # fmt: skip
    run = dfget(tmp_path, *args)
    assert run.code == 0, run.err
    assert out.read_bytes() == data
    assert [r.headers.get("X-Test") for r in origin.stats.requests] == ["1"]
    assert any(LOG_LINE.match(line) for line in run.err.splitlines())  # --console


def test_p2p_flags_reach_the_supernode(
    origin: Origin, recorders: Callable[[], Recorder], tmp_path: Path
) -> None:
    data = random_bytes(SIZE, seed=2)
    url = origin.add("/f.bin", data) + "?sig=abc&keep=1"
    recorder = recorders()
    common = ["-o", str(tmp_path / "f.bin"), "--home", str(tmp_path / "home"), "-p", "cdn"]
    run = dfget(
        tmp_path, "-u", url, *common,
        "-n", recorder.node, "-m", hashlib.md5(data).hexdigest(), "-f", "sig",
        "--callsystem", "tests", "--dfdaemon", "--insecure", "--cacerts", CA_BUNDLE,
        "--header", "X-Test:1", "--ip", "127.0.0.1",
    )  # fmt: skip
    assert run.code == 0, run.err  # the recorder refuses: the source delivers
    assert (tmp_path / "f.bin").read_bytes() == data
    [body] = recorder.registrations
    assert body["rawUrl"] == url and "sig=" not in str(body["taskUrl"])
    assert "keep=1" in str(body["taskUrl"])
    assert body["md5"] == hashlib.md5(data).hexdigest() and "identifier" not in body
    assert (body["callSystem"], body["dfdaemon"], body["insecure"]) == ("tests", True, True)
    assert body["headers"] == ["X-Test: 1"] and body["ip"] == "127.0.0.1"
    assert base64.b64decode(body["rootCAs"][0]) == Path(CA_BUNDLE).read_bytes()  # type: ignore[index]

    run = dfget(tmp_path, "-u", url, *common, "--node", recorder.node, "-i", "id-1")
    assert run.code == 0, run.err
    assert recorder.registrations[-1]["identifier"] == "id-1"


# --- invalid values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["-s", "abc"], {}, "--locallimit"),
        (["--minrate", "1.5M"], {}, "--minrate"),
        (["--totallimit", "-1"], {}, "--totallimit"),
        (["-e", "3x"], {}, "--timeout"),
        (["--expiretime", "-1s"], {}, "--expiretime"),
        (["--alivetime", "5 minutes"], {}, "--alivetime"),
        (["--cache-budget", "150%"], {}, "--cache-budget"),
        (["--cache-min-free", "lots"], {}, "--cache-min-free"),
        (["--port", "70000"], {}, "--port"),
        (["-p", "torrent"], {}, "--pattern"),
        (["--clientqueue", "x"], {}, "--clientqueue"),
        (["--node", "host:notaport"], {}, "--node"),
        (["--header", "Authorization Basic c2VjcmV0"], {}, "--header"),
        (["--header-file", "/nonexistent/headers"], {}, "--header-file"),
        (["--cacerts", "a,b"], {}, "--cacerts"),
        (["--config", "/nonexistent/dfget.yml"], {}, "/nonexistent/dfget.yml"),
        ([], {"DFGET_LOCALLIMIT": "fast"}, "--locallimit"),
        ([], {"DFGET_NODE": "a:b:c:d=x"}, "--node"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_invalid_values_exit_1_naming_the_flag(
    tmp_path: Path, args: list[str], env: dict[str, str], named: str
) -> None:
    out = tmp_path / "out.bin"
    url = "http://127.0.0.1:9/out.bin"
    run = dfget(tmp_path, "-u", url, "-o", str(out), "--home", str(tmp_path), *args, env=env)
    assert run.code == ExitCode.USAGE, run.err
    assert named in run.err and "Traceback" not in run.err
    assert "c2VjcmV0" not in run.err  # a malformed header is not echoed whole
    assert not out.exists()


def test_url_must_be_http(tmp_path: Path) -> None:
    run = dfget(tmp_path, "-u", "ftp://127.0.0.1/f", "-o", str(tmp_path / "f"))
    assert run.code == ExitCode.USAGE and "--url" in run.err


def test_dfget_environment_cannot_hijack_a_download(origin: Origin, tmp_path: Path) -> None:
    """DFGET_VERSION / DFGET_HELP are plausible in a container's environment; they must not
    turn a download into 'print and exit 0' (dfdaemon would then serve a missing file)."""
    data = random_bytes(1000, seed=3)
    url = origin.add("/f.bin", data)
    env = {"DFGET_VERSION": "1.0.6", "DFGET_HELP": "1"}
    run = dfget(tmp_path, "-u", url, "-o", str(tmp_path / "f"), "-p", "source", env=env)
    assert run.code == 0, run.err
    assert (tmp_path / "f").read_bytes() == data


# --- as dfdaemon runs it -------------------------------------------------------------------------


def dfdaemon_argv(url: str, out: Path, home: Path, node: str, *extra: str) -> list[str]:
    """dfdaemon 1.0.6: -u -o <dfget_flags> --dfdaemon [--verbose] -s --totallimit [--node] ..."""
    return [
        "-u", url, "-o", str(out),
        "--home", str(home), "--ip", "127.0.0.1", "--port", str(free_port()),
        "--expiretime", "3m0s", "--alivetime", "5m0s",
        "--dfdaemon", "--verbose", "-s", "20M", "--totallimit", "20M",
        "--node", node, *extra,
    ]  # fmt: skip


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_dfdaemon_with_basic_auth(
    origin: Origin, supernode: SupernodeFactory, tmp_path: Path
) -> None:
    data = random_bytes(SIZE, seed=4)
    path = "/v2/lib/app/blobs/sha256:" + hashlib.sha256(data).hexdigest()
    url = origin.add(path, data)
    origin.behave(path, auth=("user", "pw"))
    node = supernode()
    home, repo = tmp_path / "dfdaemon", tmp_path / "repo"
    wrong, right = basic("user", "wrong"), basic("user", "pw")
    try:
        argv = dfdaemon_argv(
            url, repo / "bad", home, node.node, "--header", f"Authorization:{wrong}"
        )
        run = dfget(tmp_path, *argv)
        assert run.code == ExitCode.AUTH_REQUIRED, run.err
        assert not repo.exists() or not any(repo.iterdir())  # nothing, not even a temp file

        argv = dfdaemon_argv(
            url, repo / "good", home, node.node, "--header", f"Authorization:{right}"
        )
        run = dfget(tmp_path, *argv)
        assert run.code == 0, run.err
        assert (repo / "good").read_bytes() == data
        assert sorted(p.name for p in repo.iterdir()) == ["good"]
        seen = {r.headers.get("Authorization") for r in origin.stats.requests}
        assert {wrong, right} <= seen
        log = (home / "logs" / "dfclient.log").read_text()
        for secret in (wrong, right, wrong.split()[1], right.split()[1]):
            assert secret not in log and secret not in run.out + run.err
        assert any(" DEBU " in line for line in log.splitlines())  # --verbose
        assert all(LOG_LINE.match(line) for line in log.splitlines())
        # -s/--totallimit rates reach the peer server dfget started
        server_log = (home / "logs" / "dfserver.log").read_text()
        assert "host-wide upload limit set to 20971520 B/s" in server_log
    finally:
        stop_peer_server(home)


def test_dfdaemon_with_missing_cacerts_is_a_clean_usage_error(
    recorders: Callable[[], Recorder], tmp_path: Path
) -> None:
    recorder = recorders()
    home, out = tmp_path / "dfdaemon", tmp_path / "repo" / "name"
    url = "https://127.0.0.1:9/v2/lib/app/blobs/sha256:" + "0" * 64
    argv = dfdaemon_argv(url, out, home, recorder.node, "--insecure", "--cacerts", "a,b")
    run = dfget(tmp_path, *argv)
    assert run.code == ExitCode.USAGE
    assert "--cacerts 'a': no such file" in run.err and "Traceback" not in run.err
    assert not recorder.calls and not out.parent.exists()


# --- configuration file and environment ----------------------------------------------------------


def test_config_file_nodes_and_work_home(
    origin: Origin, recorders: Callable[[], Recorder], tmp_path: Path
) -> None:
    data = random_bytes(SIZE, seed=5)
    url = origin.add("/f.bin", data)
    in_file = recorders()
    work = tmp_path / "work"
    config = tmp_path / "dfget.yml"
    config.write_text(
        f"nodes:\n- {in_file.node}\nlocalLimit: 20M\nminRate: 64K\nworkHome: {work}\n"
    )
    run = dfget(
        tmp_path, "-u", url, "-o", str(tmp_path / "f"), "-p", "cdn", "--config", str(config)
    )
    assert run.code == 0, run.err
    assert len(in_file.registrations) == 1
    assert (tmp_path / "f").read_bytes() == data
    lines = log_lines(work)  # workHome is the home: the log lands there
    assert lines and all(LOG_LINE.match(line) for line in lines)
    assert any(str(tmp_path / "f") in line for line in lines)

    home = tmp_path / "flag-home"
    args = ["-u", url, "-o", str(tmp_path / "g"), "-p", "cdn", "--config", str(config)]
    run = dfget(tmp_path, *args, "--home", str(home))
    assert run.code == 0, run.err
    assert (home / "logs" / "dfclient.log").exists()
    assert not any(str(tmp_path / "g") in line for line in log_lines(work))


def test_node_precedence_flag_env_file(
    origin: Origin, recorders: Callable[[], Recorder], tmp_path: Path
) -> None:
    url = origin.add("/f.bin", random_bytes(SIZE, seed=6))
    in_file, in_env, on_flag = recorders(), recorders(), recorders()
    ini = tmp_path / "dragonfly.conf"  # legacy INI, named by DFGET_CONFIG
    ini.write_text(f"[node]\naddress = {in_file.node}\n")
    base = ["-u", url, "-o", str(tmp_path / "f"), "-p", "cdn", "--home", str(tmp_path / "h")]

    def counts() -> list[int]:
        return [len(r.registrations) for r in (in_file, in_env, on_flag)]

    assert dfget(tmp_path, *base, env={"DFGET_CONFIG": str(ini)}).code == 0
    assert counts() == [1, 0, 0]
    env = {"DFGET_CONFIG": str(ini), "DFGET_NODE": in_env.node}
    assert dfget(tmp_path, *base, env=env).code == 0
    assert counts() == [1, 1, 0]
    assert dfget(tmp_path, *base, "--node", on_flag.node, env=env).code == 0
    assert counts() == [1, 1, 1]


# --- secrets -------------------------------------------------------------------------------------


def test_secret_headers_reach_the_origin_but_nothing_else(origin: Origin, tmp_path: Path) -> None:
    data = random_bytes(SIZE, seed=7)
    url = origin.add("/private.bin", data)
    origin.behave("/private.bin", auth=("user", "pw"))
    header_file = tmp_path / "headers"
    header_file.write_text("X-Registry-Token: tok-0123456789\n")
    trace = tmp_path / "trace.jsonl"
    home = tmp_path / "home"
    run = dfget(
        tmp_path, "-u", url, "-o", str(tmp_path / "f"), "-p", "source", "--home", str(home),
        "--header-file", str(header_file), "--verbose", "--console", "--json",
        "--trace", str(trace),
        env={"DFGET_HEADER_AUTHORIZATION": basic("user", "pw")},
    )  # fmt: skip
    assert run.code == 0, run.err
    assert (tmp_path / "f").read_bytes() == data
    assert json.loads(run.out)["success"] is True
    request = origin.stats.requests[-1]
    assert request.headers.get("Authorization") == basic("user", "pw")
    assert request.headers.get("X-Registry-Token") == "tok-0123456789"
    texts = {
        "stdout (--json)": run.out,
        "stderr (--console)": run.err,
        "dfclient.log": (home / "logs" / "dfclient.log").read_text(),
        "trace": trace.read_text(),
    }
    for where, text in texts.items():
        for secret in (basic("user", "pw").split()[1], "tok-0123456789"):
            assert secret not in text, f"{secret} in {where}"

    # DFGET_HEADER_FILE is the --header-file option, not a header named "File".
    header_file.write_text(f"Authorization: {basic('user', 'pw')}\n")
    origin.reset_stats()
    run = dfget(
        tmp_path, "-u", url, "-o", str(tmp_path / "g"), "-p", "source", "--home", str(home),
        env={"DFGET_HEADER_FILE": str(header_file)},
    )  # fmt: skip
    assert run.code == 0, run.err
    [request] = origin.stats.requests
    assert request.headers.get("Authorization") == basic("user", "pw")
    assert "File" not in request.headers


# --- logs ----------------------------------------------------------------------------------------


def test_log_format_verbose_and_console(origin: Origin, tmp_path: Path) -> None:
    url = origin.add("/f.bin", random_bytes(SIZE, seed=8))
    origin.behave("/moved", redirect=url)  # the redirect is logged at debug level
    moved = origin.url("/moved")

    def fetch(home: Path, *extra: str) -> Run:
        run = dfget(
            tmp_path,
            "-u",
            moved,
            "-o",
            str(home / "f"),
            "-p",
            "source",
            "--home",
            str(home),
            *extra,
        )
        assert run.code == 0, run.err
        return run

    quiet = fetch(tmp_path / "a")
    lines = log_lines(tmp_path / "a")
    assert len(lines) >= 2 and all(LOG_LINE.match(line) for line in lines), lines
    assert not any(" DEBU " in line for line in lines)
    assert not any(LOG_LINE.match(line) for line in quiet.err.splitlines())

    fetch(tmp_path / "b", "--verbose")
    lines = log_lines(tmp_path / "b")
    assert all(LOG_LINE.match(line) for line in lines)
    assert any(" DEBU " in line and "redirected to" in line for line in lines)

    console = fetch(tmp_path / "c", "--console")
    mirrored = [line for line in console.err.splitlines() if LOG_LINE.match(line)]
    assert [line.split(" : ", 1)[1] for line in mirrored] == [
        line.split(" : ", 1)[1] for line in log_lines(tmp_path / "c")
    ]
    assert not any(LOG_LINE.match(line) for line in console.out.splitlines())


@pytest.fixture
def dfget_logger() -> Iterator[logging.Logger]:
    """The 'dfget' logger, restored after an in-process logs.setup()."""
    logger = logging.getLogger("dfget")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield logger
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    for handler in saved[0]:
        logger.addHandler(handler)
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def test_log_rotates_with_one_backup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dfget_logger: logging.Logger
) -> None:
    assert logs.MAX_BYTES == 40 * 1024 * 1024
    monkeypatch.setattr(logs, "MAX_BYTES", 4096)
    logs.setup(tmp_path, verbose=False, file_name="dfclient.log", sign="42-1.5")
    log = logging.getLogger("dfget.test")
    for number in range(300):
        log.info("line %04d %s", number, "x" * 60)
    log.debug("hidden without --verbose")
    files = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert files == ["dfclient.log", "dfclient.log.1"]
    current = (tmp_path / "logs" / "dfclient.log").read_text().splitlines()
    backup = (tmp_path / "logs" / "dfclient.log.1").read_text().splitlines()
    for path in (tmp_path / "logs").iterdir():
        assert path.stat().st_size <= 4096
    assert current[-1].endswith("line 0299 " + "x" * 60)
    assert all(LOG_LINE.match(line) and " sign:42-1.5 : " in line for line in backup + current)
    assert not any("hidden" in line for line in backup + current)


def test_rotation_by_another_process_keeps_the_backup(tmp_path: Path) -> None:
    """Concurrent dfget runs share dfclient.log: when one rotates, the others follow it to the
    new file instead of rotating again over the fresh backup."""
    path = tmp_path / "dfclient.log"
    first = logs.SharedRotatingFileHandler(path, maxBytes=1000, backupCount=1, encoding="utf-8")
    second = logs.SharedRotatingFileHandler(path, maxBytes=1000, backupCount=1, encoding="utf-8")
    try:
        second.handle(logging.makeLogRecord({"msg": "second-0"}))
        for number in range(25):  # one rotation: ~20 lines fit in 1000 bytes
            first.handle(logging.makeLogRecord({"msg": f"first-{number:02d} " + "y" * 40}))
        assert Path(f"{path}.1").exists()
        second.handle(logging.makeLogRecord({"msg": "second-1"}))
        assert "second-1" in path.read_text()
        assert "second-0" in Path(f"{path}.1").read_text()  # the backup survived
    finally:
        first.close()
        second.close()


# --- dfget server --------------------------------------------------------------------------------


def test_server_accepts_every_v1_flag(tmp_path: Path) -> None:
    home, data, meta = tmp_path / "home", tmp_path / "data", tmp_path / "meta" / "port.meta"
    args = [
        "server", "--data", str(data), "--home", str(home), "--ip", "127.0.0.1", "--port", "0",
        "--meta", str(meta), "--expiretime", "3m0s", "--alivetime", "5m0s", "--verbose",
    ]  # fmt: skip
    proc = start_dfget(args)
    try:
        line = read_first_line(proc)
        assert re.fullmatch(r"dfget uploader server port is \d+", line), line
        port = int(line.rsplit(" ", 1)[1])
        assert 15000 <= port <= 65000
        assert json.loads(meta.read_text())["servicePort"] == port
    finally:
        stop_process(proc)
    assert proc.returncode == 0
    lines = log_lines(home, "dfserver.log")
    assert lines and all(LOG_LINE.match(line) for line in lines)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--expiretime", "soon"], "--expiretime"),
        (["--alivetime", "-5m"], "--alivetime"),
        (["--cache-budget", "-3GB"], "--cache-budget"),
        (["--port", "70000"], "--port"),
    ],
)
def test_server_invalid_values(tmp_path: Path, args: list[str], named: str) -> None:
    result = run_dfget(["server", "--home", str(tmp_path), *args], timeout=30)
    assert result.returncode == ExitCode.USAGE
    assert named.encode() in result.stderr and result.stdout == b""


# --- --trace and `dfget trace` -------------------------------------------------------------------


def trace_summary(path: Path, *extra: str) -> list[str]:
    result = run_dfget(["trace", str(path), *extra])
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().splitlines()


def test_trace_of_a_source_run(origin: Origin, tmp_path: Path) -> None:
    size = 5_000_000  # two ranges, with two connections
    url = origin.add("/f.bin", random_bytes(size, seed=9))
    trace = tmp_path / "pull.jsonl"
    args = ["-u", url, "-o", str(tmp_path / "f"), "-p", "source", "--home", str(tmp_path)]
    args += ["--connections", "2"]
    assert dfget(tmp_path, *args, "--trace", str(trace)).code == 0
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    pieces = [e for e in events if e["event"] == "piece"]
    assert {"event": "source", "reason": "--pattern source"}.items() <= events[0].items()
    assert all(e["kind"] == "source" and e["ok"] and e["ms"] >= 0 for e in pieces)
    assert sum(e["bytes"] for e in pieces) == size and len(pieces) >= 2

    lines = trace_summary(trace)
    holder = f"source 127.0.0.1:{origin.port}"
    assert lines[0] == f"{len(pieces)} piece events"
    assert re.fullmatch(
        rf"  {holder}: {len(pieces)} pieces, 4\.8 MiB, 0 failures, \d+ ms/piece", lines[1]
    )
    assert "source used because: --pattern source" in lines
    slowest = lines[lines.index("slowest pieces:") + 1 :]
    assert len(slowest) == len(pieces) and all(f"from {holder}: " in s for s in slowest)
    assert len(trace_summary(trace, "--slowest", "1")) == len(lines) - len(pieces) + 1


def test_trace_of_a_p2p_run_zst_without_secrets(
    origin: Origin, supernode: SupernodeFactory, tmp_path: Path
) -> None:
    size = 5 * 1024 * 1024  # two pieces from the supernode's CDN
    data = random_bytes(size, seed=10)
    url = origin.add("/private.bin", data)
    origin.behave("/private.bin", auth=("user", "pw"))
    header_file = tmp_path / "headers"
    header_file.write_text(f"Authorization: {basic('user', 'pw')}\n")
    node = supernode()
    trace, home = tmp_path / "pull.jsonl.zst", tmp_path / "home"
    run = dfget(
        tmp_path, "-u", url, "-o", str(tmp_path / "f"), "-p", "cdn", "--node", node.node,
        "--home", str(home), "--header-file", str(header_file), "--verbose", "--trace", str(trace),
    )  # fmt: skip
    assert run.code == 0, run.err
    assert (tmp_path / "f").read_bytes() == data
    raw = trace.read_bytes()
    assert raw[:4] == b"\x28\xb5\x2f\xfd"  # a zstd frame
    text = zstandard.ZstdDecompressor().stream_reader(raw).read().decode()
    pieces = [e for e in map(json.loads, text.splitlines()) if e["event"] == "piece"]
    cdn = f"127.0.0.1:{node.download_port}"
    assert sorted(e["piece"] for e in pieces) == [0, 1]
    assert all(e["kind"] == "cdn" and e["holder"] == cdn and e["ok"] for e in pieces)

    lines = trace_summary(trace)
    assert lines[0] == "2 piece events"
    assert re.fullmatch(rf"  cdn {cdn}: 2 pieces, 5\.0 MiB, 0 failures, \d+ ms/piece", lines[1])
    slowest = lines[lines.index("slowest pieces:") + 1 :]
    assert sorted(s.split(" range")[0] for s in slowest) == ["  piece 0", "  piece 1"]
    assert all(f"from cdn {cdn}: " in s and s.endswith(" ms") for s in slowest)

    secret = basic("user", "pw").split()[1]
    log = (home / "logs" / "dfclient.log").read_text()
    assert secret not in text and secret not in log and secret not in run.out + run.err


def test_trace_command_rejects_what_is_not_a_trace(tmp_path: Path) -> None:
    junk = tmp_path / "junk.jsonl"
    junk.write_text("hello\n")
    fake = tmp_path / "junk.zst"
    fake.write_bytes(b"not zstd")
    for path in (junk, fake):
        result = run_dfget(["trace", str(path)])
        assert result.returncode == ExitCode.USAGE
        assert str(path).encode() in result.stderr and b"Traceback" not in result.stderr
    cut = tmp_path / "cut.jsonl"  # dfget killed in the middle of a line
    cut.write_text('{"event":"piece","kind":"peer","holder":"h","bytes":1,"ms":2,"ok":true}\n{"ev')
    assert trace_summary(cut)[0] == "1 piece events"
    assert run_dfget(["trace", str(tmp_path / "missing")]).returncode == ExitCode.USAGE


def test_trace_file_that_cannot_be_written(origin: Origin, tmp_path: Path) -> None:
    url = origin.add("/f.bin", random_bytes(1000, seed=11))
    trace = tmp_path / "no" / "such" / "dir" / "t.jsonl"
    args = ["-u", url, "-o", str(tmp_path / "f"), "-p", "source", "--home", str(tmp_path)]
    run = dfget(tmp_path, *args, "--trace", str(trace))
    assert run.code == ExitCode.LOCAL_IO and "cannot write trace" in run.err
    assert not (tmp_path / "f").exists()


def test_a_bug_is_one_line_and_exit_code_70_never_a_traceback(tmp_path: Path) -> None:
    """Whatever escapes (here a download that raises MemoryError, as a lying peer once made it
    do): one clear line on stderr, the documented exit code, the traceback in the log only."""
    home = tmp_path / "home"
    crash = (
        "import sys, dfget.download\n"
        "def run(settings):\n"
        "    from dfget import logs\n"
        "    logs.setup(settings.home, False, 'dfclient.log')\n"
        "    raise MemoryError('a frame that declares 2^45 bytes')\n"
        "dfget.download.run = run\n"
        "from dfget.cli import main\n"
        "sys.argv[0] = 'dfget'\n"
        "main()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", crash, "-u", "http://127.0.0.1:9/x", "-o", str(tmp_path / "x"),
         "--home", str(home)],
        capture_output=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == ExitCode.INTERNAL == 70
    err = result.stderr.decode()
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "internal error (MemoryError: a frame that declares 2^45 bytes)" in err
    assert "Traceback" in (home / "logs" / "dfclient.log").read_text()
    assert not (tmp_path / "x").exists()
