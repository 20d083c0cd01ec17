"""Hostile input against the real processes: the peer server, the supernode, the origin client,
and the framing/range arithmetic every role shares (dfget/protocol/pieces.py, ranges.py).

Every hostile request must get an answer (a 4xx, or a v1 JSON envelope from the supernode), never
a dropped connection from an unhandled exception, never a byte from outside the data dir, and the
server must go on serving everyone else. Already covered elsewhere, not repeated here:

* traversal names in the common encodings, a planted symlink, dataDir outside the home:
  tests/test_uploader.py (test_traversal_names_are_refused, test_symlink_planted_in_data_dir_...,
  test_data_dir_outside_home_is_ignored); here they are fuzzed and extended to remote callers;
* the fixed list of bad pieceNum/pieceSize/Range values: test_uploader.py::test_bad_parameters_...;
* malformed JSON, a 2 MiB body, bogus task ids and cids, 1,000 pulls from 8 keep-alive clients:
  tests/test_supernode.py (test_registration_failures, test_pull_and_report_errors,
  test_burst_of_pulls_is_answered); here: fuzzed bodies and queries, and a burst over fresh
  connections with a leak check;
* the wrap round trip and that the piece requests cover a file: tests/test_pieces.py.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dfget.errors import ExitCode
from dfget.protocol.pieces import (
    FRAME_OVERHEAD,
    FramingError,
    check_frame,
    frame_head,
    parse_head,
    piece_count,
    piece_data_len,
    raw_offset,
    raw_request_slice,
    wrap,
    wrapped_request_slice,
)
from dfget.protocol.ranges import PieceRange, RangeError, parse_range_header
from dfget.protocol.taskid import task_id
from tests.support.helpers import (
    DFGET,
    open_fds,
    peak_rss,
    random_bytes,
    raw_http,
    run_dfget,
    settle,
    thread_count,
)
from tests.support.netns import run_in_private_network
from tests.support.origin import Origin
from tests.support.scripted_supernode import ScriptedSupernode
from tests.support.servers import PeerServer, SupernodeFactory, SupernodeProcess

MiB = 1024 * 1024
P = 4 * MiB
MARKER = b"SECRET-OUTSIDE-THE-DATA-DIR"
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Characters whose str.isdigit() is True but int() rejects ('²'), or accepts though they are not
# ASCII ('٣'): a parser must not trust isdigit().
UNICODE_DIGITS = "²³¹٣۴߃"


# ---- the peer server ---------------------------------------------------------------------------


@pytest.fixture
def served(peer_server: Callable[..., PeerServer], tmp_path: Path) -> PeerServer:
    """A peer server with one registered task and secrets planted around its data dir."""
    server = peer_server()
    server.add_task("file", random_bytes(10_000, seed=41))
    (server.home / "secret.service").write_bytes(MARKER)
    (server.home / "elsewhere").mkdir()
    (server.home / "elsewhere" / "secret.service").write_bytes(MARKER)
    (tmp_path / "secret.service").write_bytes(MARKER)
    return server


def request(path: str, *headers: str, close: bool = True) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: peer", *headers]
    if close:
        lines.append("Connection: close")
    text = "\r\n".join(lines) + "\r\n\r\n"
    try:
        return text.encode("latin-1")  # '²' as the single byte a server decodes back to '²'
    except UnicodeEncodeError:
        return text.encode()  # raw UTF-8, as Go sends non-latin-1 text


def piece_request(name: str, *headers: str) -> bytes:
    return request(f"/peer/file/{name}", *headers)


TRAVERSAL_PARTS = [
    "..", ".", "%2e", "%2E", "%2e%2e", "%252e%252e", "%c0%ae", "%2f", "%2F", "%5c", "/", "\\",
    "%00", "secret", "elsewhere", "data", "etc", "passwd", "~", "%7e", "%", ";", "file",
    "%2e%2e%2f", "..%2f", "%uff0e", "\u2025", "\uff0e\uff0e",
]  # fmt: skip


@FUZZ
@given(
    parts=st.lists(st.sampled_from(TRAVERSAL_PARTS), min_size=1, max_size=6),
    # Not <home>/elsewhere: this host may name a directory inside the home (see the remote test).
    data_dir=st.sampled_from(["", "data", "home", "data/..", "/", "tmp", "../.."]),
)
@example(parts=["..", "secret"], data_dir="data")
@example(parts=["%2e%2e", "%2f", "secret"], data_dir="home")
@example(parts=["/", "..", "/", "secret"], data_dir="/")
def test_traversal_in_any_encoding_never_leaves_the_data_dir(
    served: PeerServer, tmp_path: Path, parts: list[str], data_dir: str
) -> None:
    name = "".join(parts)
    directory = {
        "data": str(served.data),
        "home": str(served.home),
        "data/..": f"{served.data}/..",
        "tmp": str(tmp_path),
    }.get(data_dir, data_dir)
    target = quote(name, safe="%/\\.~;")  # the parts' own escapes travel as they are
    check = raw_http(served.port, request(f"/check/{target}", f"Datadir: {directory}"))
    assert check[0] in (200, 400, 403, 404), check
    for mode in ([], ["Cdnsource: source"]):
        status, _, body = raw_http(
            served.port,
            piece_request(target, "Piecenum: 0", f"Piecesize: {P}", "Range: bytes=0-99", *mode),
        )
        assert status in (206, 400, 404, 416), (name, status)
        assert MARKER not in body, (name, directory)


def test_data_dir_swapped_for_a_symlink_after_registration(served: PeerServer) -> None:
    """The directory a task was registered with is pinned: swapping it for a symlink to another
    directory holding a file of the same name does not make that file servable."""
    inside = served.home / "data2"
    served.add_task("swapped", b"the real bytes", data_dir=inside)
    assert served.piece("swapped", 0, P - 1, 0, P, Cdnsource="source").body == b"the real bytes"
    (served.home / "elsewhere" / "swapped.service").write_bytes(MARKER)
    (inside / "swapped.service").unlink()
    inside.rmdir()
    inside.symlink_to(served.home / "elsewhere")
    reply = served.piece("swapped", 0, P - 1, 0, P, Cdnsource="source")
    assert reply.status == 404 and MARKER not in reply.body


NUMBERS = st.one_of(
    st.integers(min_value=-5, max_value=10**25).map(str),
    st.text(alphabet="0123456789-+ x" + UNICODE_DIGITS, max_size=22),
)
RANGES = st.one_of(
    st.builds(lambda a, b: f"bytes={a}-{b}", NUMBERS, NUMBERS),
    st.text(alphabet="bytes=0123456789-, " + UNICODE_DIGITS, max_size=40),
)


@FUZZ
@given(piece_num=NUMBERS, piece_size=NUMBERS, rng=RANGES, raw=st.booleans())
@example(piece_num="0", piece_size=str(P), rng="bytes=0-²", raw=True)
@example(piece_num="0", piece_size=str(P), rng="bytes=²-9", raw=False)
@example(piece_num="0", piece_size="1" * 19, rng="bytes=0-99", raw=False)
@example(piece_num="0", piece_size=str(P), rng=f"bytes=0-{2**64}", raw=False)
@example(piece_num="0", piece_size=str(P), rng=f"bytes={2**63}-{2**64}", raw=True)
@example(piece_num=str(10**17), piece_size=str(P), rng=f"bytes={10**20}-{10**21}", raw=False)
def test_any_piece_headers_get_a_well_formed_answer(
    served: PeerServer, piece_num: str, piece_size: str, rng: str, raw: bool
) -> None:
    headers = [f"Piecenum: {piece_num}", f"Piecesize: {piece_size}", f"Range: {rng}"]
    if raw:
        headers.append("Cdnsource: source")
    status, head, body = raw_http(served.port, piece_request("file", *headers))
    assert status in (206, 400, 416), (headers, status, body[:200])
    assert int(head["content-length"]) == len(body)
    if status == 206 and not raw:
        assert parse_head(body[:4])[0] == len(body) - FRAME_OVERHEAD and body[-1] == 0x7F


def test_two_range_headers_are_refused(served: PeerServer) -> None:
    """A second Range header would be silently ignored: refuse the ambiguity instead."""
    status, _, _ = raw_http(
        served.port,
        piece_request(
            "file", "Piecenum: 0", f"Piecesize: {P}", "Range: bytes=0-99", "Range: bytes=100-199"
        ),
    )
    assert status == 400


def test_huge_header_sections_are_refused_and_the_server_carries_on(served: PeerServer) -> None:
    long_value = "x" * 70_000
    assert raw_http(served.port, request("/server/ping", f"X-Long: {long_value}"))[0] in (400, 431)
    many = [f"X-H{i}: {i}" for i in range(150)]
    assert raw_http(served.port, request("/server/ping", *many))[0] == 431
    assert raw_http(served.port, request("/peer/file/" + "a" * 70_000))[0] == 414
    # 90 headers of 60 kB each: within the per-line and per-count limits; still answered.
    bulky = [f"X-B{i}: {'y' * 60_000}" for i in range(90)]
    status, _, body = raw_http(
        served.port, piece_request("file", "Piecenum: 0", f"Piecesize: {P}", *bulky)
    )
    assert status == 400  # no Range
    assert served.get("/server/ping").body == b"success"


def test_slowloris_cannot_starve_other_peers(served: PeerServer) -> None:
    """200 connections that never finish their request: everyone else is still served, promptly,
    and the server's threads and descriptors come back once they go."""
    pid = served.proc.pid
    fds, threads = open_fds(pid), thread_count(pid)
    idle = []
    try:
        for _ in range(200):
            sock = socket.create_connection(("127.0.0.1", served.port), timeout=10)
            sock.sendall(b"GET /peer/file/file HTTP/1.1\r\nHost: peer\r\nPiecenum: 0\r\n")
            idle.append(sock)
        for _ in range(20):
            reply = served.piece("file", 0, P - 1, 0, P, Cdnsource="source")
            assert reply.status == 206
        assert thread_count(pid) >= threads + 150  # they really were being held
    finally:
        for sock in idle:
            sock.close()
    assert settle(lambda: thread_count(pid), threads + 2) <= threads + 2
    assert settle(lambda: open_fds(pid), fds + 2) <= fds + 2


# ---- the supernode -----------------------------------------------------------------------------


@pytest.fixture
def node(supernode: SupernodeFactory) -> SupernodeProcess:
    return supernode("--task-gc-interval", "1h")


@pytest.fixture
def registered(origin: Origin, node: SupernodeProcess) -> tuple[str, str]:
    """A task with one client; returns (url, task id)."""
    url = origin.add("/hostile.bin", random_bytes(5 * MiB, seed=42))
    body = {
        "rawUrl": url, "taskUrl": url, "cid": "127.0.0.1-1-1.000", "ip": "127.0.0.1",
        "port": 16001, "path": "/peer/file/x", "version": "1.0.6",
    }  # fmt: skip
    response = httpx.post(f"{node.url}/peer/registry", json=body, timeout=10)
    assert response.json()["code"] == 200
    return url, task_id(url)


def envelope_of(response: httpx.Response) -> dict[str, object]:
    """The supernode's answer must be a v1 envelope (or the empty piece-error answer)."""
    assert response.status_code in (200, 413, 500), response.text
    if response.status_code == 413:
        return {}
    if response.status_code == 200 and not response.content:
        return {}
    body = response.json()
    assert isinstance(body, dict) and "internal error" not in str(body.get("msg", "")), body
    return body


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
FIELDS = ["rawUrl", "taskUrl", "cid", "ip", "port", "path", "md5", "identifier", "headers",
          "rootCAs", "dfdaemon", "insecure", "callSystem", "hostName", "superNodeIp"]  # fmt: skip


@FUZZ
@given(
    changes=st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=4),
    garbage=st.one_of(st.none(), st.binary(max_size=64)),
    form=st.booleans(),
)
@example(changes={}, garbage=b"[" * 100_000, form=False)
@example(changes={}, garbage=b'{"a":' * 50_000, form=False)
@example(changes={}, garbage=b"\xff\xfe\x00{", form=False)
@example(changes={}, garbage=b"port=%C2%B2&cid=c&path=/p&ip=127.0.0.1&rawUrl=http://x/", form=True)
@example(changes={"port": 1e309}, garbage=None, form=False)
@example(changes={"port": "16001"}, garbage=None, form=False)
@example(changes={"rootCAs": ["!!"], "headers": [1]}, garbage=None, form=False)
@example(changes={"rawUrl": "http://[x/?token=1"}, garbage=None, form=False)
def test_any_registration_body_gets_an_envelope(
    origin: Origin,
    node: SupernodeProcess,
    changes: dict[str, object],
    garbage: bytes | None,
    form: bool,
) -> None:
    url = origin.add("/fuzz.bin", b"f" * 1000)
    body = {"rawUrl": url, "cid": "127.0.0.1-7-7.000", "ip": "127.0.0.1", "port": 16001,
            "path": "/peer/file/f"}  # fmt: skip
    body.update(changes)
    if garbage is not None:
        content = garbage
    else:
        try:
            content = json.dumps(body).encode()
        except ValueError:
            return
    content_type = "application/x-www-form-urlencoded" if form else "application/json"
    response = httpx.post(
        f"{node.url}/peer/registry",
        content=content,
        headers={"Content-Type": content_type},
        timeout=10,
    )
    answer = envelope_of(response)
    assert answer.get("code") in (200, 500)


QUERY_VALUES = st.one_of(
    st.text(alphabet="0123456789abcdef-:~%&=" + UNICODE_DIGITS, max_size=30),
    st.sampled_from(["", "0-4194303", "4194304-8388607", "²-³", "0-" + "9" * 40, "-1--1"]),
)


@FUZZ
@given(
    route=st.sampled_from(
        ["/peer/task", "/peer/piece/suc", "/peer/piece/error", "/peer/service/down"]
    ),
    values=st.dictionaries(
        st.sampled_from(
            [
                "srcCid",
                "dstCid",
                "cid",
                "range",
                "pieceRange",
                "result",
                "status",
                "taskId",
                "errorType",
            ]
        ),
        QUERY_VALUES,
        max_size=6,
    ),
    real_task=st.booleans(),
)
@example(
    route="/peer/task", values={"range": "²-³", "result": "503", "status": "701"}, real_task=True
)
@example(route="/peer/piece/suc", values={"pieceRange": "0-²"}, real_task=True)
@example(
    route="/peer/piece/error",
    values={"range": "٣-٤", "dstCid": "cdnnode:x", "errorType": "FILE_MD5_NOT_MATCH"},
    real_task=True,
)
def test_any_query_gets_an_envelope(
    node: SupernodeProcess,
    registered: tuple[str, str],
    route: str,
    values: dict[str, str],
    real_task: bool,
) -> None:
    _, tid = registered
    params = {"srcCid": "127.0.0.1-1-1.000", "cid": "127.0.0.1-1-1.000"}
    if real_task:
        params["taskId"] = tid
    params.update(values)
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
    envelope_of(httpx.get(f"{node.url}{route}?{query}", timeout=10))


def test_burst_over_fresh_connections_is_answered_without_leaks(
    node: SupernodeProcess, registered: tuple[str, str]
) -> None:
    """1,000 requests, each on its own connection, half of them bogus, from 32 threads."""
    _, tid = registered
    pid = node.proc.pid
    fds, threads = open_fds(pid), thread_count(pid)
    cid = "127.0.0.1-1-1.000"
    queries = [
        f"/peer/task?srcCid={cid}&dstCid=&range=&result=502&status=700&taskId={tid}",
        f"/peer/task?srcCid=bogus&taskId={'f' * 64}&status=700",
        f"/peer/piece/suc?taskId={tid}&cid={cid}&dstCid=x&pieceRange=0-4194303",
        "/peer/service/down?taskId=nope&cid=nope",
    ]

    def hit(n: int) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=20)  # a fresh one
        try:
            conn.request("GET", queries[n % len(queries)])
            response = conn.getresponse()
            body = json.loads(response.read())
        finally:
            conn.close()
        assert response.status in (200, 500) and body["code"], body
        return response.status

    with ThreadPoolExecutor(32) as pool:
        statuses = list(pool.map(hit, range(1000)))
    assert len(statuses) == 1000
    assert settle(lambda: thread_count(pid), threads + 2) <= threads + 2
    assert settle(lambda: open_fds(pid), fds + 2) <= fds + 2
    assert httpx.get(f"{node.url}/_ping", timeout=5).text == "OK"


def test_download_port_rejects_unicode_digit_ranges(
    node: SupernodeProcess, registered: tuple[str, str]
) -> None:
    _, tid = registered
    path = f"/download/{tid[:3]}/{tid}"
    deadline = time.monotonic() + 10
    while not (node.home / "repo" / "download" / tid[:3] / tid).exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for value in ("bytes=0-²", "bytes=²-", "bytes=-²", "bytes=٣-٤"):
        status, _, _ = raw_http(node.download_port, request(path, f"Range: {value}"))
        assert status in (200, 206, 416), value


# ---- the origin, as seen by dfget --------------------------------------------------------------


class HostileOrigin:
    """A raw-socket origin: the first ``bad`` responses are the given bytes, the rest are correct
    single-range answers for ``data``. For heads no HTTP library would produce."""

    def __init__(self, data: bytes, reply: bytes, bad: int) -> None:
        self.data = data
        self.reply = reply
        self.bad = bad
        self.requests = 0
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/file.bin"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            with self.lock:
                self.requests += 1
                hostile = self.requests <= self.bad
            if hostile:
                conn.sendall(self.reply)
                return
            text = head.decode("latin-1")
            spec = next(
                line.split("=", 1)[1]
                for line in text.split("\r\n")
                if line.lower().startswith("range:")
            )
            first, _, last = spec.partition("-")
            start = int(first)
            end = min(int(last or len(self.data) - 1), len(self.data) - 1)
            body = self.data[start : end + 1]
            conn.sendall(
                b"HTTP/1.1 206 Partial Content\r\nConnection: close\r\n"
                + f"Content-Range: bytes {start}-{end}/{len(self.data)}\r\n".encode()
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def hostile_origin() -> Iterator[Callable[[bytes, int], HostileOrigin]]:
    made: list[HostileOrigin] = []

    def make(reply: bytes, bad: int = 1) -> HostileOrigin:
        made.append(HostileOrigin(random_bytes(100_000, seed=43), reply, bad))
        return made[-1]

    yield make
    for server in made:
        server.close()


HOSTILE_HEADS = {
    "unicode-status": b"HTTP/1.1 \xb200 OK\r\nContent-Length: 0\r\n\r\n",
    "no-status": b"HTTP/1.1\r\n\r\n",
    "not-http": b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    "negative-length": b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nabc",
    "unicode-length": b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nabc",
    "underscore-length": b"HTTP/1.1 200 OK\r\nContent-Length: 1_0\r\n\r\n0123456789",
    "bad-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
    "unicode-416-total": b"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */\xb2\r\n"
    b"Content-Length: 0\r\n\r\n",
    "unicode-content-range": b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-9/\xd9\xa3"
    b"\r\nContent-Length: 10\r\n\r\n0123456789",
    "endless-head": b"HTTP/1.1 200 OK\r\n" + b"X: " + b"y" * 200_000,
}


@pytest.mark.parametrize("reply", HOSTILE_HEADS.values(), ids=HOSTILE_HEADS.keys())
def test_hostile_origin_heads_end_in_the_right_bytes_or_a_clear_error(
    hostile_origin: Callable[[bytes, int], HostileOrigin], tmp_path: Path, reply: bytes
) -> None:
    """The first answer is garbage, later ones are fine: dfget retries or fails clearly, never
    with a traceback, and never leaves a wrong byte at the destination."""
    origin = hostile_origin(reply, 1)
    out = tmp_path / "out" / "file.bin"
    result = run_dfget(
        ["--pattern", "source", "--home", str(tmp_path / "home"), "-u", origin.url, "-o", str(out)],
        timeout=60,
    )
    stderr = result.stderr.decode(errors="replace")
    assert "Traceback" not in stderr, stderr
    if result.returncode == ExitCode.OK:
        assert out.read_bytes() == origin.data
    else:
        assert result.returncode in (ExitCode.NETWORK, ExitCode.SOURCE_HTTP), stderr
        assert stderr.strip() and not out.exists()
    assert origin.requests <= 6


def test_persistently_hostile_origin_fails_clearly_with_few_requests(
    hostile_origin: Callable[[bytes, int], HostileOrigin], tmp_path: Path
) -> None:
    origin = hostile_origin(HOSTILE_HEADS["unicode-status"], 10**9)
    out = tmp_path / "file.bin"
    result = run_dfget(
        ["--pattern", "source", "--home", str(tmp_path / "home"), "-u", origin.url, "-o", str(out)],
        timeout=60,
    )
    assert result.returncode == ExitCode.NETWORK, result.stderr.decode()
    assert b"bad status line" in result.stderr and b"Traceback" not in result.stderr
    assert 2 <= origin.requests <= 5 and not out.exists()


# ---- framing and range arithmetic (dfget/protocol/pieces.py, ranges.py) ----------------------


PIECE_SIZES = st.integers(min_value=1, max_value=15).map(lambda mib: mib * MiB)


@settings(max_examples=200, deadline=None)
@given(data_len=st.integers(min_value=0, max_value=(1 << 24) - 1), piece_size=PIECE_SIZES)
def test_head_round_trips_for_every_length(data_len: int, piece_size: int) -> None:
    assert parse_head(frame_head(data_len, piece_size)) == (data_len, piece_size)


@settings(max_examples=150, deadline=None)
@given(
    data=st.binary(max_size=2048),
    piece_size=PIECE_SIZES,
    damage=st.sampled_from(["head", "tail", "cut", "extend", "length"]),
    where=st.integers(min_value=0, max_value=3),
    delta=st.integers(min_value=1, max_value=255),
)
def test_check_frame_rejects_any_damage(
    data: bytes, piece_size: int, damage: str, where: int, delta: int
) -> None:
    frame = bytearray(wrap(data, piece_size))
    expected = len(data)
    if damage == "head":
        frame[where] = (frame[where] + delta) % 256
    elif damage == "tail":
        frame[-1] = (frame[-1] + delta) % 256
    elif damage == "cut":
        del frame[-min(delta, len(frame)) :]
    elif damage == "extend":
        frame += bytes(delta)
    else:
        expected = len(data) + delta
    with pytest.raises(FramingError):
        check_frame(frame, piece_size, expected)


DIGITS = st.integers(min_value=0, max_value=10**17)  # ranges are int64 (18 digits) at most


@settings(max_examples=150, deadline=None)
@given(start=DIGITS, extra=st.integers(min_value=1, max_value=10**12))
def test_range_header_round_trip(start: int, extra: int) -> None:
    parsed = parse_range_header(f"bytes={start}-{start + extra}")
    assert (parsed.start, parsed.end, parsed.length) == (start, start + extra, extra + 1)
    assert PieceRange.parse(str(parsed)) == parsed


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet="bytes=0123456789-, +_\t" + UNICODE_DIGITS, max_size=30))
@example(text="bytes=0-²")
@example(text="bytes=٣-٤")
@example(text="bytes=1_0-2_0")
@example(text="bytes=+1-+2")
@example(text="bytes= 1 - 2 ")
def test_range_parsers_accept_only_plain_ascii_ranges(text: str) -> None:
    """Either a canonical ``bytes=S-E`` (S < E, ASCII digits) or RangeError: nothing else."""
    try:
        parsed = parse_range_header(text)
    except RangeError:
        pass
    else:
        assert parsed.end > parsed.start >= 0
        assert text.strip().removeprefix("bytes=").strip().isascii()
    spec = text.removeprefix("bytes=")
    try:
        rng = PieceRange.parse(spec)
    except RangeError:
        pass
    else:
        assert spec == str(rng)


@settings(max_examples=300, deadline=None)
@given(
    start=st.integers(min_value=0, max_value=1 << 40),
    length=st.integers(min_value=1, max_value=1 << 25),
    piece_num=st.integers(min_value=0, max_value=1 << 20),
    file_size=st.integers(min_value=0, max_value=1 << 40),
)
def test_served_slices_stay_inside_the_file(
    start: int, length: int, piece_num: int, file_size: int
) -> None:
    rng = PieceRange(start, start + length - 1)
    for slicer in (
        lambda: wrapped_request_slice(rng, piece_num, file_size),
        lambda: raw_request_slice(rng, file_size),
    ):
        try:
            served = slicer()
        except RangeError:
            continue
        assert 0 <= served.raw_start <= file_size
        assert 0 <= served.data_len <= length
        assert served.raw_start + served.data_len <= file_size


@settings(max_examples=200, deadline=None)
@given(
    length=st.integers(min_value=0, max_value=1 << 34),
    piece_size=st.integers(min_value=6, max_value=16 * MiB),
    wrapped=st.booleans(),
)
def test_pieces_tile_the_file_exactly(length: int, piece_size: int, wrapped: bool) -> None:
    count = piece_count(length, piece_size, wrapped)
    capacity = piece_size - FRAME_OVERHEAD if wrapped else piece_size
    assert count == max(1, -(-length // capacity))
    last = count - 1
    assert raw_offset(last, piece_size, wrapped) + piece_data_len(
        last, length, piece_size, wrapped
    ) == max(length, 0)
    assert piece_data_len(count, length, piece_size, wrapped) == 0
    if length:
        assert piece_data_len(last, length, piece_size, wrapped) > 0


def _zstd_claiming(size: int) -> bytes:
    """A zstd frame whose header declares ``size`` bytes, with one empty last block."""
    descriptor = 0xE0  # 8-byte content size, single segment
    block = (1).to_bytes(3, "little")  # last block, raw, 0 bytes
    return b"\x28\xb5\x2f\xfd" + bytes([descriptor]) + size.to_bytes(8, "little") + block


def test_lying_zstd_pieces_fail_that_holder_not_the_download(
    origin: Origin, tmp_path: Path
) -> None:
    """A holder's zstd answer that declares 2^45 bytes, or inflates to 64 MiB (declared or
    not), is a failed piece from that holder: no allocation, no traceback; the piece comes
    again and the download ends with the right bytes, memory bounded."""
    import zstandard

    data = random_bytes(3 * 4 * 1024 * 1024 - 100, seed=41)
    url = origin.add("/zstd.bin", data)
    sixty_four = b"\0" * (64 << 20)
    sn = ScriptedSupernode(url, data)
    sn.lying_zstd = {
        0: _zstd_claiming(1 << 45),
        1: zstandard.ZstdCompressor().compress(sixty_four),
        2: zstandard.ZstdCompressor(write_content_size=False).compress(sixty_four),
    }
    try:
        result = subprocess.run(
            [
                "/usr/bin/time",
                "-f",
                "%M",
                *DFGET,
                "-u",
                url,
                "-o",
                str(tmp_path / "out"),
                "--node",
                sn.address,
                "--home",
                str(tmp_path / "h"),
                "--ip",
                "127.0.0.1",
                "--pattern",
                "cdn",
                "--json",
            ],  # fmt: skip
            capture_output=True,
            timeout=120,
        )
    finally:
        sn.stop()
    stderr = result.stderr.decode()
    assert result.returncode == ExitCode.OK, stderr
    assert "Traceback" not in stderr
    assert (tmp_path / "out").read_bytes() == data
    document = json.loads(result.stdout)
    (holder,) = document["holders"]
    assert holder["failures"] == 3 and holder["pieces"] == 3
    peak_mib = int(stderr.strip().splitlines()[-1]) / 1024
    assert peak_mib < 150, f"peak RSS {peak_mib:.0f} MiB"
    assert not sn.lying_zstd  # every lie was served


def test_a_registration_cannot_attach_its_bytes_to_another_url(
    origin: Origin, supernode: SupernodeFactory, tmp_path: Path
) -> None:
    """rawUrl = the attacker's file with taskUrl = a victim's URL used to create a task that the
    victim's later clients joined, getting the attacker's bytes with matching md5s. taskUrl may
    only drop query parameters of rawUrl; otherwise the task is keyed on rawUrl."""
    victim = random_bytes(3 * 1024 * 1024, seed=42)
    evil = random_bytes(len(victim), seed=43)
    victim_url = origin.add("/victim.bin", victim)
    evil_url = origin.add("/evil.bin", evil)
    node = supernode()
    body = {
        "superNodeIp": "127.0.0.1", "rawUrl": evil_url, "taskUrl": victim_url,
        "cid": "10.9.9.9-1-1.000", "ip": "127.0.0.1", "hostName": "evil", "port": 15999,
        "path": "/peer/file/evil", "version": "1.0.6",
    }  # fmt: skip
    answer = httpx.post(f"{node.url}/peer/registry", json=body, timeout=10).json()
    assert answer["data"]["taskId"] == task_id(evil_url)  # keyed on what is fetched

    out = tmp_path / "victim.bin"
    argv = ["-u", victim_url, "-o", str(out), "--node", node.node, "--home", str(tmp_path / "h")]
    result = run_dfget([*argv, "--ip", "127.0.0.1", "--pattern", "cdn", "--json"], timeout=60)
    assert result.returncode == ExitCode.OK, result.stderr.decode()
    assert out.read_bytes() == victim
    assert json.loads(result.stdout)["bytes"]["cdn"] == len(victim)  # through the supernode

    filtered = {**body, "rawUrl": f"{victim_url}?Signature=abc&n=1", "taskUrl": f"{victim_url}?n=1"}
    answer = httpx.post(f"{node.url}/peer/registry", json=filtered, timeout=10).json()
    assert answer["data"]["taskId"] == task_id(f"{victim_url}?n=1")  # --filter still works


@pytest.mark.parametrize(
    ("registration", "piece"),
    [
        ({"pieceSize": 1 << 50}, {}),
        ({"fileLength": "12"}, {}),
        ({"taskId": "../../etc"}, {}),
        ({"cdnSource": "elsewhere"}, {}),
        ({}, {"pieceNum": "x"}),
        ({}, {"pieceNum": 1 << 40}),
        ({}, {"pieceSize": 1 << 50}),
        ({}, {"range": "0-99"}),
        ({}, {"peerPort": -1}),
        ({}, {"cid": ["list"]}),
    ],
    ids=lambda value: ",".join(f"{k}={str(v)[:12]}" for k, v in value.items()) or "-",
)
def test_a_lying_supernode_answer_is_a_supernode_error(
    origin: Origin, tmp_path: Path, registration: dict[str, object], piece: dict[str, object]
) -> None:
    """Every field of a supernode answer is checked where it enters: a bad one is the
    supernode's error (here, with one supernode: the source), never a traceback or an
    allocation of what it claims."""
    data = random_bytes(5 * 1024 * 1024, seed=44)
    url = origin.add("/lies.bin", data)
    sn = ScriptedSupernode(url, data, registration_lies=registration, piece_lies=piece)
    argv = ["-u", url, "-o", str(tmp_path / "out"), "--node", sn.address]
    try:
        result = run_dfget(
            [*argv, "--home", str(tmp_path / "h"), "--ip", "127.0.0.1", "--pattern", "cdn"],
            timeout=60,
        )
    finally:
        sn.stop()
    stderr = result.stderr.decode()
    assert result.returncode == ExitCode.OK, stderr
    assert "Traceback" not in stderr and "supernode" in stderr
    assert (tmp_path / "out").read_bytes() == data
    assert origin.stats.body_bytes == len(data)  # all of it from the source


def test_a_supernode_naming_another_host_as_source_gets_no_user_headers(
    origin: Origin, tmp_path: Path
) -> None:
    """In the source pattern the supernode gives the URL each piece is fetched from: one that
    names another host (here 127.0.0.2) gets the piece request, never the user's headers."""
    data = random_bytes(5 * 1024 * 1024, seed=45)
    url = origin.add("/layer.bin", data)
    other = Origin(tmp_path / "other", host="127.0.0.2").start()
    try:
        other_url = other.add("/layer.bin", data)
        sn = ScriptedSupernode(url, data, cdn_source="source", piece_lies={"path": other_url})
        argv = ["-u", url, "-o", str(tmp_path / "out"), "--node", sn.address, "--ip", "127.0.0.1"]
        secrets = ["--header", "X-Auth-Token: t1", "--header", "Authorization: Bearer b"]
        try:
            result = run_dfget(
                [*argv, "--home", str(tmp_path / "h"), "--pattern", "cdn", *secrets], timeout=60
            )
        finally:
            sn.stop()
        assert result.returncode == ExitCode.OK, result.stderr.decode()
        assert (tmp_path / "out").read_bytes() == data
        assert other.stats.requests, "the pieces did not come from the other host"
        names = {name.lower() for r in other.stats.requests for name in r.headers}
        assert not names & {"x-auth-token", "authorization"}
    finally:
        other.stop()


def test_a_path_that_would_inject_into_request_lines_is_refused(
    origin: Origin, supernode: SupernodeFactory, tmp_path: Path
) -> None:
    """The registered path goes verbatim into other peers' request lines: our supernode refuses
    one with CR/LF (or a query, or a second segment), and our client refuses to write such a
    request target whoever sent it, fetching the piece elsewhere instead."""
    node = supernode()
    url = origin.add("/p.bin", b"x" * 1000)
    good = {
        "superNodeIp": "127.0.0.1", "rawUrl": url, "taskUrl": url, "cid": "127.0.0.1-7-7.000",
        "ip": "127.0.0.1", "hostName": "h", "port": 15999, "path": "/peer/file/ok-7-7.000",
    }  # fmt: skip
    assert httpx.post(f"{node.url}/peer/registry", json=good, timeout=10).status_code == 200
    for path in ("/peer/file/x HTTP/1.1\r\nX-Evil: 1\r\n\r\nGET /y", "/peer/file/a/../../b", "/x"):
        reply = httpx.post(f"{node.url}/peer/registry", json={**good, "path": path}, timeout=10)
        assert reply.status_code == 500 and "path" in reply.text

    data = random_bytes(5 * 1024 * 1024, seed=46)
    url = origin.add("/inject.bin", data)
    lie = {"cid": "127.0.0.1-9-9.000", "path": "/peer/file/a HTTP/1.1\r\nX-Evil: 1\r\n\r\nGET /b"}
    sn = ScriptedSupernode(url, data, piece_lies=lie)
    argv = ["-u", url, "-o", str(tmp_path / "out"), "--node", sn.address, "--ip", "127.0.0.1"]
    try:
        result = run_dfget([*argv, "--home", str(tmp_path / "h"), "--pattern", "cdn"], timeout=90)
    finally:
        sn.stop()
    assert result.returncode == ExitCode.OK, result.stderr.decode()
    assert (tmp_path / "out").read_bytes() == data
    assert not any("evil" in r.path.lower() for r in sn.requests)
    assert all(not path.startswith("/b") for path in (r.path for r in sn.requests))


REMOTE_CALLER = r"""
import http.client, json, subprocess, sys
from tests.support.servers import read_first_line
from tests.support.netns import REMOTE_IP, SERVER_IP

home = sys.argv[1]
proc = subprocess.Popen([sys.executable, "-m", "dfget", "server", "--ip", SERVER_IP, "--home",
                         home], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
port = int(read_first_line(proc).rsplit(" ", 1)[1])

def status(source, target, headers={}):
    conn = http.client.HTTPConnection(SERVER_IP, port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", target, headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()

calls = {
    "check": ("/check/file-1-2.3", {"Datadir": home + "/data", "Totallimit": "1"}),
    "rate": ("/rate/file-1-2.3", {"Ratelimit": "1"}),
    "finish": ("/client/finish?taskFileName=file-1-2.3&taskID=" + "a" * 64
               + "&cid=c&superNode=10.77.0.1:8002", {}),
    "ping": ("/server/ping", {}),
}
result = {f"{who} {name}": status(ip, *call)
          for who, ip in (("remote", REMOTE_IP), ("local", SERVER_IP))
          for name, call in calls.items()}
proc.terminate()
proc.wait(10)
print(json.dumps(result))
"""


def test_only_this_host_registers_throttles_or_finishes_downloads(tmp_path: Path) -> None:
    """v1 lets any host call /check/ (10,000 bogus tasks fill the table), /rate/ (a download
    throttled to 1 B/s) and /client/finish (service-down reports aimed anywhere)."""
    statuses = run_in_private_network(REMOTE_CALLER, str(tmp_path / "home"))
    assert statuses == {
        "remote check": 403,
        "remote rate": 403,
        "remote finish": 403,
        "remote ping": 200,
        "local check": 200,
        "local rate": 200,
        "local finish": 200,
        "local ping": 200,
    }


def test_a_piece_request_never_makes_the_server_hold_more_than_a_piece(
    peer_server: Callable[..., PeerServer],
) -> None:
    """Raw or zstd, a range longer than its piece is refused; 16 concurrent zstd answers of
    15 MiB pieces keep the server's memory near two frames (it compresses a chunk at a time,
    at most two pieces at once)."""
    server = peer_server()
    size = 15 * MiB
    server.add_task("big", bytes(8 * size))  # zeros: every piece compresses
    zstd = {"Accept-Encoding": "zstd"}
    for raw in ({}, {"Cdnsource": "source"}):
        too_long = server.piece("big", 0, 8 * size - 1, 0, size, **zstd, **raw)
        assert too_long.status == 400, raw
    assert server.piece("big", 0, P - 1, 0, P + 1, **zstd).status == 400  # not whole MiB
    assert server.piece("big", 0, 16 * MiB - 1, 0, 16 * MiB, **zstd).status == 400  # > 15 MiB
    before = peak_rss(server.proc.pid)

    def fetch(k: int) -> int:
        start = (k % 8) * size
        reply = server.piece("big", start, start + size - 1, k % 8, size, **zstd)
        assert reply.status == 206 and reply.header("Content-Encoding") == "zstd"
        return len(reply.body)

    with ThreadPoolExecutor(16) as pool:
        assert all(length < size // 100 for length in pool.map(fetch, range(16)))
    grown = peak_rss(server.proc.pid) - before
    print(f"peer server peak RSS grew {grown / MiB:.1f} MiB for 16 concurrent 15 MiB zstd pieces")
    assert grown < 32 * MiB  # was 139 MiB when each answer read its whole piece


def answers(port: int, data: bytes) -> list[int]:
    """Every status line the server sends back for ``data`` before it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return [int(line.split()[1]) for line in received.split(b"\r\n") if line.startswith(b"HTTP/1")]


SMUGGLED = b"GET /server/ping HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize(
    "framing",
    [
        [b"Content-Length: 1_0"],
        [b"Content-Length: +38"],
        [b"Content-Length: 38", b"Content-Length: 38"],
        [b"Transfer-Encoding: chunked"],
        [b"Content-Length: 38", b"Transfer-Encoding: chunked"],
        [b"Content-Length: 38"],  # a GET has no body: the smuggled request would be next
    ],
    ids=lambda lines: b" + ".join(lines).decode(),
)
def test_ambiguous_framing_is_refused_not_smuggled(
    served: PeerServer, node: SupernodeProcess, framing: list[bytes]
) -> None:
    """v1's server read `1_0` as 10 and ignored Transfer-Encoding, so the body's request got
    its own answer. Both servers answer such a request once, with 400, and close."""
    for port in (served.port, node.port):
        head = b"GET /server/ping HTTP/1.1\r\nHost: x\r\n" + b"\r\n".join(framing) + b"\r\n\r\n"
        assert answers(port, head + SMUGGLED) == [400], (port, framing)
        assert served.get("/server/ping").status == 200


def test_a_post_with_a_malformed_length_is_refused(node: SupernodeProcess) -> None:
    body = b'{"rawUrl":"http://x/"}'
    head = b"POST /peer/registry HTTP/1.1\r\nHost: x\r\nContent-Length: 2_2\r\n\r\n"
    assert answers(node.port, head + body) == [400]


def test_a_five_thousand_digit_range_gets_an_answer(served: PeerServer) -> None:
    huge = "9" * 5000
    for value in (f"bytes=0-{huge}", f"bytes={huge}-{huge}9"):
        status, _, _ = raw_http(
            served.port, piece_request("file", "Piecenum: 0", f"Piecesize: {P}", f"Range: {value}")
        )
        assert status == 400
    assert served.get("/server/ping").status == 200
