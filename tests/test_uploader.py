"""The peer server's wire protocol against a real `dfget server` process (spec §4.2-§4.4).

Expected piece bytes are computed here from the spec's formula, not with dfget.protocol.pieces, so a
framing bug cannot hide behind itself.
"""

from __future__ import annotations

import http.client
import os
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from dfget.protocol import peer_server
from dfget.uploader.pending import FETCHING, LOST, STORED, PendingPieces, pending_path
from tests.support.helpers import random_bytes, stop_process
from tests.support.servers import PeerServer, launch_peer_server

MiB = 1024 * 1024
P = 4 * MiB
C = P - 5
FILE_10M = random_bytes(10 * MiB, seed=10)


def framed(data: bytes, piece_num: int, piece_size: int = P) -> bytes:
    """Piece ``piece_num`` of ``data`` as the v1 CDN stores it."""
    chunk = data[piece_num * (piece_size - 5) : (piece_num + 1) * (piece_size - 5)]
    return struct.pack(">I", len(chunk) | (piece_size << 4)) + chunk + b"\x7f"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeerServer]:
    home = tmp_path_factory.mktemp("uploader") / "home"
    proc, line = launch_peer_server(home)
    try:
        assert line.startswith("dfget uploader server port is "), line
        peer = PeerServer(proc, int(line.rsplit(" ", 1)[1]), home)
        peer.add_task("file10m", FILE_10M)
        yield peer
    finally:
        stop_process(proc)


@pytest.mark.parametrize("piece_num", [0, 1, 2])
def test_wrapped_pieces_are_byte_exact(server: PeerServer, piece_num: int) -> None:
    reply = server.piece("file10m", piece_num * P, piece_num * P + P - 1, piece_num, P)
    expected = framed(FILE_10M, piece_num)
    assert reply.status == 206
    assert [name for name, _ in reply.headers] == ["Content-Length", "Content-Type", "Date"]
    assert reply.header("Content-Length") == str(len(expected))
    assert reply.header("Content-Type") == "application/octet-stream"
    assert reply.body == expected


def test_last_piece_past_eof_matches_the_transcript(server: PeerServer) -> None:
    reply = server.piece("file10m", 8388608, 12582911, 2, P)
    assert (reply.status, len(reply.body)) == (206, 2097167)
    assert reply.body[:4] == bytes.fromhex("0420000a")
    assert reply.body[-5:] == FILE_10M[-4:] + b"\x7f"


def test_go_request_bytes_get_go_response_bytes(server: PeerServer) -> None:
    """Replay the exact request head of transcript §1.19 on a raw socket."""
    request = (
        "GET /peer/file/file10m HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\n"
        "User-Agent: dfget/1.0.6\r\n"
        "Piecenum: 0\r\n"
        "Piecesize: 4194304\r\n"
        "Range: bytes=0-4194303\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        while len(body) < P:
            body += sock.recv(P - len(body))
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 206 Partial Content"
    assert lines[1:3] == ["Content-Length: 4194304", "Content-Type: application/octet-stream"]
    assert lines[3].startswith("Date: ") and lines[3].endswith(" GMT") and len(lines) == 4
    assert body == framed(FILE_10M, 0)
    assert body[:4] == bytes.fromhex("043ffffb")


def test_pieces_share_one_keep_alive_connection(server: PeerServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        for piece_num in (2, 0, 1):
            start = piece_num * P
            headers = {"pieceNum": str(piece_num), "pieceSize": str(P)}
            conn.request(
                "GET",
                "/peer/file/file10m",
                headers={**headers, "Range": f"bytes={start}-{start + P - 1}"},
            )
            response = conn.getresponse()
            assert response.read() == framed(FILE_10M, piece_num)
    finally:
        conn.close()


def test_raw_mode_serves_raw_slices(server: PeerServer) -> None:
    first = server.piece("file10m", 0, P - 1, 0, P, Cdnsource="source")
    last = server.piece("file10m", 2 * P, 3 * P - 1, 2, P, Cdnsource="source")
    assert (first.status, first.body) == (206, FILE_10M[:P])
    assert (last.status, last.body) == (206, FILE_10M[2 * P :])
    beyond = server.piece("file10m", 10 * MiB, 11 * MiB, 3, P, Cdnsource="source")
    assert beyond.status == 416


def test_zero_length_file_is_head_and_tail(server: PeerServer) -> None:
    server.add_task("empty", b"")
    reply = server.piece("empty", 0, P - 1, 0, P)
    assert (reply.status, reply.body) == (206, bytes.fromhex("04000000") + b"\x7f")


def test_non_standard_piece_size_is_reframed(server: PeerServer) -> None:
    size = 15 * MiB
    reply = server.piece("file10m", 0, size - 1, 0, size)
    assert reply.body == framed(FILE_10M, 0, size)
    assert reply.body[:4] == bytes.fromhex("0fa00000")  # all 10 MiB (0xA00000) in one piece


@pytest.mark.parametrize(
    "headers",
    [
        {"Piecesize": str(P), "Range": "bytes=0-4194303"},
        {"Piecenum": "0", "Range": "bytes=0-4194303"},
        {"Piecenum": "x", "Piecesize": str(P), "Range": "bytes=0-4194303"},
        {"Piecenum": "0", "Piecesize": "4M", "Range": "bytes=0-4194303"},
        {"Piecenum": "-1", "Piecesize": str(P), "Range": "bytes=0-4194303"},
        {"Piecenum": "0", "Piecesize": str(P)},
        {"Piecenum": "0", "Piecesize": str(P), "Range": "bytes=0-10,20-30"},
        {"Piecenum": "0", "Piecesize": str(P), "Range": "bytes=10-10"},
        {"Piecenum": "0", "Piecesize": str(P), "Range": "bytes=-100"},
        {"Piecenum": "0", "Piecesize": str(P), "Range": "0-100"},
    ],
)
def test_bad_parameters_are_400(server: PeerServer, headers: dict[str, str]) -> None:
    assert server.get("/peer/file/file10m", headers).status == 400


@pytest.mark.parametrize(
    ("start", "end", "piece_num"),
    [(0, 3, 0), (0, P - 1, 1), (3 * P, 4 * P - 1, 3)],
    ids=["shorter-than-a-frame", "negative-raw-start", "past-the-end"],
)
def test_unsatisfiable_ranges_are_416(
    server: PeerServer, start: int, end: int, piece_num: int
) -> None:
    reply = server.piece("file10m", start, end, piece_num, P)
    assert (reply.status, reply.body) == (416, b"range not satisfiable")


def test_unknown_task_and_missing_file_are_404(server: PeerServer) -> None:
    assert server.piece("never-checked", 0, P - 1, 0, P).status == 404
    assert server.get("/check/checked-no-file", {"Datadir": str(server.data)}).status == 200
    assert server.piece("checked-no-file", 0, P - 1, 0, P).status == 404


def test_text_endpoints(server: PeerServer) -> None:
    check = server.get(
        "/check/a.bin-20161-1795914754.517", {"Datadir": str(server.data), "Totallimit": "0"}
    )
    assert (check.status, check.body) == (200, b"a.bin-20161-1795914754.517@1.0.6")
    assert [name for name, _ in check.headers] == ["Content-Type", "Date", "Content-Length"]
    assert server.get("/server/ping").body == b"success"
    assert server.get("/no/such/route").status == 404


def test_rate_without_total_limit_echoes(server: PeerServer) -> None:
    reply = server.get("/rate/file10m", {"Ratelimit": "2147483648"})
    assert (reply.status, reply.body) == (200, b"2147483648")
    assert server.get("/rate/file10m", {"Ratelimit": "20MB"}).status == 400
    assert server.get("/rate/file10m").status == 400


@pytest.mark.parametrize(
    "query",
    [
        "taskID=t&cid=c&superNode=127.0.0.1:8002",
        "taskFileName=f&cid=c&superNode=127.0.0.1:8002",
        "taskFileName=f&taskID=t&superNode=127.0.0.1:8002",
        "taskFileName=&taskID=t&cid=c",
    ],
)
def test_finish_requires_its_parameters(server: PeerServer, query: str) -> None:
    reply = server.get(f"/client/finish?{query}")
    assert (reply.status, reply.body) == (400, b"invalid params")


@pytest.mark.parametrize(
    "name",
    [
        "..",
        "%2e%2e",
        "..%2f..%2fetc%2fpasswd",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/etc/passwd",
        "..%5c..%5cfile10m",
        "file10m%00",
        ".",
        "%ff%fe",
    ],
)
def test_traversal_names_are_refused(server: PeerServer, name: str) -> None:
    assert server.get(f"/check/{name}", {"Datadir": str(server.data)}).status in (400, 404)
    assert server.piece(name, 0, P - 1, 0, P).status in (400, 404)


def test_symlink_planted_in_data_dir_is_not_followed(server: PeerServer, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"not for peers")
    (server.data / "planted.service").symlink_to(secret)
    assert server.get("/check/planted", {"Datadir": str(server.data)}).status == 200
    assert server.piece("planted", 0, P - 1, 0, P, Cdnsource="source").status == 404
    assert secret.exists()


def test_data_dir_outside_home_is_refused(server: PeerServer, tmp_path: Path) -> None:
    """Only the dfget of another work home names one (our port was in its stale meta file):
    refused, it starts a server of its own instead of registering pieces we cannot find."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "outside.service").write_bytes(b"x" * 100)
    assert server.get("/check/outside", {"Datadir": str(outside)}).status == 403
    assert server.piece("outside", 0, P - 1, 0, P).status == 404
    link = server.home / "link-out"
    link.symlink_to(outside)  # inside the home by name, outside once resolved
    assert server.get("/check/outside", {"Datadir": str(link)}).status == 403
    assert server.piece("outside", 0, P - 1, 0, P).status == 404


def test_data_dir_inside_home_is_accepted(server: PeerServer) -> None:
    content = random_bytes(1000, seed=3)
    server.add_task("inside", content, data_dir=server.home / "data2")
    reply = server.piece("inside", 0, P - 1, 0, P)
    assert (reply.status, reply.body) == (206, framed(content, 0))


def test_non_ascii_names_travel_as_utf8(server: PeerServer) -> None:
    data_dir = server.home / "dätä-目录"
    data_dir.mkdir()
    name = "résumé 目录.pdf-42-1.5"
    (data_dir / f"{name}.service").write_bytes(b"bytes")
    assert peer_server.check("127.0.0.1", server.port, name, data_dir, 0)  # percent-encoded name
    assert server.piece(quote(name), 0, P - 1, 0, P, Cdnsource="source").body == b"bytes"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        # Like Go: raw UTF-8 bytes in the request line.
        sock.sendall(
            b"GET /peer/file/" + name.replace(" ", "%20").encode() + b" HTTP/1.1\r\n"
            b"Host: x\r\nPiecenum: 0\r\nPiecesize: 4194304\r\nCdnsource: source\r\n"
            b"Range: bytes=0-99\r\nConnection: close\r\n\r\n"
        )
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 206") and answer.endswith(b"\r\n\r\nbytes")


def test_zstd_when_negotiated_and_worth_it(server: PeerServer) -> None:
    import zstandard

    text = b"".join(b"line %08d of a very compressible log file\n" % i for i in range(60_000))
    server.add_task("compressible", text)
    reply = server.piece("compressible", 0, P - 1, 0, P, **{"Accept-Encoding": "gzip, zstd"})
    assert reply.header("Content-Encoding") == "zstd"
    assert int(reply.header("Content-Length") or 0) == len(reply.body) < len(text) // 2
    assert zstandard.ZstdDecompressor().decompress(reply.body) == framed(text, 0)
    plain = server.piece("compressible", 0, P - 1, 0, P)
    assert plain.header("Content-Encoding") is None and plain.body == framed(text, 0)


def test_no_zstd_for_incompressible_data(server: PeerServer) -> None:
    reply = server.piece("file10m", 0, P - 1, 0, P, **{"Accept-Encoding": "zstd"})
    assert reply.header("Content-Encoding") is None
    assert reply.body == framed(FILE_10M, 0)


def test_many_concurrent_readers_all_succeed(server: PeerServer) -> None:
    """More readers than upload slots: the extra ones wait, none fails."""
    content = random_bytes(64 * 1024, seed=4)
    server.add_task("small", content)
    results: list[bytes] = []

    def read() -> None:
        reply = server.piece("small", 0, P - 1, 0, P, Cdnsource="source")
        results.append(reply.body if reply.status == 206 else b"")

    threads = [threading.Thread(target=read) for _ in range(80)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == [content] * 80


def test_client_that_disconnects_does_not_hurt_the_server(server: PeerServer) -> None:
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(
                b"GET /peer/file/file10m HTTP/1.1\r\nHost: x\r\nPiecenum: 0\r\n"
                b"Piecesize: 4194304\r\nRange: bytes=0-4194303\r\n\r\n"
            )
            sock.recv(1000)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    assert server.piece("file10m", 0, P - 1, 0, P).body == framed(FILE_10M, 0)


def test_growing_unfinished_file_is_served_as_it_grows(server: PeerServer) -> None:
    """A download in progress writes pieces into the service file; they are served at once."""
    path = server.add_task("growing", b"")
    with open(path, "r+b") as fh:
        os.pwrite(fh.fileno(), FILE_10M[C : 2 * C], C)
    reply = server.piece("growing", P, 2 * P - 1, 1, P)
    assert (reply.status, reply.body) == (206, framed(FILE_10M, 1))


def test_announced_piece_is_held_until_stored(server: PeerServer) -> None:
    """A piece its download announced before storing it (dfget/uploader/pending.py) is served
    once marked stored, not before; one given up is a 404 at once."""
    data = random_bytes(3 * P, seed=31)
    server.add_task("announced", data)
    pieces = PendingPieces(pending_path(server.data, "announced"), 3)
    pieces.mark(1, FETCHING)
    pieces.mark(2, LOST)
    try:
        replies: list[int] = []
        waiter = threading.Thread(
            target=lambda: replies.append(
                server.piece("announced", P, 2 * P - 1, 1, P, Cdnsource="source").status
            )
        )
        waiter.start()
        waiter.join(0.5)
        assert waiter.is_alive() and not replies, "served before the piece was stored"
        assert server.piece("announced", 0, P - 1, 0, P, Cdnsource="source").status == 206
        lost = server.piece("announced", 2 * P, 3 * P - 1, 2, P, Cdnsource="source")
        assert lost.status == 404
        pieces.mark(1, STORED)
        waiter.join(10)
        assert replies == [206]
    finally:
        pieces.close()


def test_finish_removes_the_pending_file(server: PeerServer) -> None:
    server.add_task("finished-announced", b"x" * 100)
    path = pending_path(server.data, "finished-announced")
    PendingPieces(path, 1).close()
    server.finish("finished-announced", "127.0.0.1:1")
    assert not path.exists()
