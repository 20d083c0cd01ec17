"""The real `dfget supernode` process, driven with the Go dfget's requests from the wire transcript.

Simulated clients speak the v1 protocol exactly as Go dfget 1.0.6 does (unescaped queries,
result reported both on the next pull and via /peer/piece/suc, a connect-only TCP connection
before every piece) and run a minimal peer server, so pieces really flow between them.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from dfget.net.server import Handler, make_server
from dfget.protocol.pieces import (
    FRAME_OVERHEAD,
    check_frame,
    frame_head,
    piece_count,
    piece_data_len,
    wrapped_request_slice,
)
from dfget.protocol.ranges import PieceRange
from dfget.protocol.taskid import task_id
from dfget.protocol.wire import raw_query
from tests.support.helpers import random_bytes
from tests.support.origin import Origin
from tests.support.servers import SupernodeFactory, SupernodeProcess

SIZE = 10 * 1024 * 1024
P = 4 * 1024 * 1024
JSON_CT = "application/json;charset=utf-8"
CID_A = "127.0.0.1-20161-1795914754.517"
CID_B = "127.0.0.1-20180-1795914755.868"
PIECE_KEYS = ["range", "pieceNum", "pieceSize", "pieceMd5", "cid"]
PIECE_KEYS += ["peerIp", "peerPort", "path", "downLink"]


@pytest.fixture(scope="module")
def payload() -> bytes:
    return random_bytes(SIZE, seed=5)


def registry_body(url: str, cid: str, port: int, name: str) -> bytes:
    """A registration body byte for byte as Go dfget writes it (``&`` as ``\\u0026``)."""
    go_url = url.replace("&", "\\u0026")
    return (
        f'{{"superNodeIp":"127.0.0.1","rawUrl":"{go_url}","taskUrl":"{go_url}","cid":"{cid}",'
        f'"ip":"127.0.0.1","hostName":"vm","port":{port},"path":"/peer/file/{name}",'
        f'"version":"1.0.6"}}'
    ).encode()


def registry_answer(tid: str, length: int, cdn_source: str) -> bytes:
    return (
        f'{{"code":200,"data":{{"taskId":"{tid}","fileLength":{length},"pieceSize":{P},'
        f'"cdnSource":"{cdn_source}","asSeed":false,"seedTaskID":""}},"msg":"success"}}\n'
    ).encode()


def wrapped_md5(data: bytes, piece: int) -> str:
    chunk = data[piece * (P - 5) : (piece + 1) * (P - 5)]
    frame = frame_head(len(chunk), P) + chunk + b"\x7f"
    return f"{hashlib.md5(frame).hexdigest()}:{len(frame)}"


def pull_query(cid: str, tid: str, dst: str = "", rng: str = "", result: int = 502) -> str:
    status = 700 if result == 502 else 701
    params = [("srcCid", cid), ("dstCid", dst), ("range", rng)]
    return "/peer/task?" + raw_query(
        [*params, ("result", result), ("status", status), ("taskId", tid)]
    )


class SimPeer:
    """A minimal v1 peer server holding one file: wrapped or raw ranges of ``/peer/file/...``."""

    def __init__(self) -> None:
        self.data = bytearray()
        """The client's buffer: pieces are served as soon as they are stored, as real peers do."""
        peer = self

        class PeerHandler(Handler):
            def do_GET(self) -> None:
                rng = PieceRange.parse(self.header("Range").removeprefix("bytes="))
                if self.header("Cdnsource") == "source":
                    self.reply(206, peer.data[rng.start : rng.end + 1])
                    return
                piece_num = int(self.header("Piecenum"))
                served = wrapped_request_slice(rng, piece_num, len(peer.data))
                body = peer.data[served.raw_start : served.raw_start + served.data_len]
                self.reply(
                    206, frame_head(len(body), int(self.header("Piecesize"))) + body + b"\x7f"
                )

        self.server = make_server("127.0.0.1", 0, PeerHandler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class SimClient:
    """A v1 dfget: register, pull, fetch each piece from the holder it is given, report."""

    supernode: SupernodeProcess
    url: str
    cid: str
    serve: bool = True
    http: httpx.Client = field(init=False)
    peer: SimPeer | None = field(init=False, default=None)
    sources: dict[int, str] = field(default_factory=dict)
    answers: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.supernode.url, timeout=10)
        if self.serve:
            self.peer = SimPeer()

    def close(self) -> None:
        self.http.close()
        if self.peer is not None:
            self.peer.stop()

    def register(self) -> dict[str, Any]:
        port = self.peer.port if self.peer else 0
        body = registry_body(self.url, self.cid, port, f"out-{self.cid}")
        response = self.http.post("/peer/registry", content=body, headers={"Content-Type": JSON_CT})
        assert response.status_code == 200, response.text
        return dict(response.json()["data"])

    def download(self, timeout: float = 30.0) -> bytes:
        info = self.register()
        tid, length, wrapped = info["taskId"], info["fileLength"], info["cdnSource"] != "source"
        data = bytearray(length)
        if self.peer is not None:
            self.peer.data = data
        queue: deque[dict[str, Any]] = deque()
        report = pull_query(self.cid, tid)
        late_suc = ""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = self.http.get(report)
            assert response.status_code == 200
            if late_suc:
                self.report_suc(late_suc)
                late_suc = ""
            self.answers.append(response.content)
            answer = response.json()
            if answer["code"] == 600:
                break
            assert answer["code"] in (601, 602), answer
            queue.extend(
                task for task in answer.get("data") or [] if task["pieceNum"] not in self.sources
            )
            if not queue:
                time.sleep(0.02)
                continue
            task = queue.popleft()
            piece = task["pieceNum"]
            raw = self.fetch(task, length, wrapped)
            start = piece * (P - FRAME_OVERHEAD if wrapped else P)
            data[start : start + len(raw)] = raw
            self.sources[piece] = task["cid"]
            suc = raw_query(
                [
                    ("taskId", tid),
                    ("cid", self.cid),
                    ("dstCid", task["cid"]),
                    ("pieceRange", task["range"]),
                ]
            )
            report = pull_query(self.cid, tid, task["cid"], task["range"], 503)
            # Go dfget's result pull may overtake its /peer/piece/suc: exercise both orders.
            if piece % 2:
                late_suc = suc
            else:
                self.report_suc(suc)
        else:
            raise TimeoutError(f"{self.cid} did not finish")
        return bytes(data)

    def report_suc(self, query: str) -> None:
        assert self.http.get(f"/peer/piece/suc?{query}").content == b'{"code":611}\n'

    def fetch(self, task: dict[str, Any], length: int, wrapped: bool) -> bytes:
        piece, rng, size = task["pieceNum"], PieceRange.parse(task["range"]), task["pieceSize"]
        socket.create_connection((task["peerIp"], task["peerPort"]), timeout=1).close()
        headers = {"Piecenum": str(piece), "Piecesize": str(size), "Range": f"bytes={rng}"}
        if not wrapped:
            end = min(rng.end, length - 1)
            headers.update({"Cdnsource": "source", "Range": f"bytes={rng.start}-{end}"})
        url = task["path"]
        if "://" not in url:
            url = f"http://{task['peerIp']}:{task['peerPort']}{url}"
        response = httpx.get(url, headers=headers)
        assert response.status_code == 206
        body = response.content
        if not wrapped:
            return body
        check_frame(body, size, piece_data_len(piece, length, size))
        md5 = task["pieceMd5"].partition(":")[0]
        assert not md5 or hashlib.md5(body).hexdigest() == md5
        return body[4:-1]


@pytest.fixture
def clients() -> Any:
    made: list[SimClient] = []

    def make(supernode: SupernodeProcess, url: str, cid: str, serve: bool = True) -> SimClient:
        client = SimClient(supernode, url, cid, serve)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def api(supernode: SupernodeProcess) -> httpx.Client:
    return httpx.Client(base_url=supernode.url, timeout=10)


# ---- local pattern: golden bytes, one origin fetch, peer to peer -----------------------------


def test_local_pattern_wire_bytes_and_single_origin_fetch(
    origin: Origin, supernode: SupernodeFactory, clients: Any, payload: bytes
) -> None:
    url = origin.add("/file10m.bin", payload)
    tid = task_id(url)
    node = supernode()
    with api(node) as http:
        response = http.post(
            "/peer/registry",
            content=registry_body(url, CID_A, 16101, "a.bin"),
            headers={"Content-Type": JSON_CT},
        )
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/json"
        assert response.content == registry_answer(tid, SIZE, "supernode")
        first = http.get(pull_query(CID_A, tid))
        assert first.json()["code"] in (601, 602)
    client = clients(node, url, CID_A)
    assert client.download() == payload
    assert set(client.sources.values()) == {f"cdnnode:127.0.0.1~{tid}"}
    pieces = [json.loads(body) for body in client.answers if json.loads(body)["code"] == 601]
    tasks = {task["pieceNum"]: task for answer in pieces for task in answer.get("data", [])}
    assert sorted(tasks) == [0, 1, 2]
    for piece, task in tasks.items():
        assert list(task) == PIECE_KEYS
        assert task == {
            "range": f"{piece * P}-{piece * P + P - 1}",
            "pieceNum": piece,
            "pieceSize": P,
            "pieceMd5": wrapped_md5(payload, piece),
            "cid": f"cdnnode:127.0.0.1~{tid}",
            "peerIp": "127.0.0.1",
            "peerPort": node.download_port,
            "path": f"/download/{tid[:3]}/{tid}",
            "downLink": 0,
        }
    md5 = hashlib.md5(payload).hexdigest()
    assert (
        client.answers[-1]
        == f'{{"code":600,"data":{{"fileLength":10485775,"md5":"{md5}"}}}}\n'.encode()
    )
    # The CDN's single GET doubled as the length probe: the origin sent the file exactly once.
    assert [(r.method, r.range) for r in origin.stats.requests] == [("GET", None)]
    assert origin.stats.body_bytes == SIZE
    with api(node) as http:
        metrics = http.post(
            "/task/metrics",
            content=(
                f'{{"IP":"127.0.0.1","backsourceReason":"0","cID":"{CID_A}","duration":0.243031335,'
                f'"fileLength":{SIZE},"port":16101,"success":true,"taskId":"{tid}"}}'
            ),
            headers={"Content-Type": JSON_CT},
        )
        assert (metrics.status_code, metrics.content) == (200, b"null\n")
        down = http.get(f"/peer/service/down?taskId={tid}&cid={CID_A}")
        assert down.content == b'{"code":612}\n'
        assert down.headers["Content-Type"] == "application/json"
    assert node.stop() == 0


def test_second_client_gets_every_piece_from_the_first(
    origin: Origin, supernode: SupernodeFactory, clients: Any, payload: bytes
) -> None:
    url = origin.add("/layer", payload)
    node = supernode()
    first = clients(node, url, CID_A)
    assert first.download() == payload
    second = clients(node, url, CID_B)
    assert second.download() == payload
    assert set(second.sources.values()) == {CID_A}
    assert origin.stats.body_bytes == SIZE
    text = httpx.get(f"{node.url}/metrics").text
    assert 'dragonfly_supernode_pieces_total{holder="peer"} 3' in text
    assert 'dragonfly_supernode_pieces_total{holder="cdn"} 3' in text
    assert f'dragonfly_supernode_piece_bytes_total{{holder="peer"}} {SIZE}' in text


def test_service_down_sends_the_next_client_back_to_the_cdn(
    origin: Origin, supernode: SupernodeFactory, clients: Any, payload: bytes
) -> None:
    url = origin.add("/gone", payload)
    node = supernode()
    first = clients(node, url, CID_A)
    first.download()
    tid = task_id(url)
    assert httpx.get(f"{node.url}/peer/service/down?taskId={tid}&cid={CID_A}").json() == {
        "code": 612
    }
    second = clients(node, url, CID_B)
    assert second.download() == payload
    assert set(second.sources.values()) == {f"cdnnode:127.0.0.1~{tid}"}


def test_client_without_peer_server_is_not_offered(
    origin: Origin, supernode: SupernodeFactory, clients: Any, payload: bytes
) -> None:
    url = origin.add("/cdnpattern", payload)
    node = supernode()
    clients(node, url, CID_A, serve=False).download()
    second = clients(node, url, CID_B)
    second.download()
    assert CID_A not in second.sources.values()


# ---- source pattern -------------------------------------------------------------------------


def test_source_pattern_wire_bytes_and_second_client_uses_only_the_first(
    origin: Origin, supernode: SupernodeFactory, clients: Any, payload: bytes
) -> None:
    url = origin.add("/file10m.bin", payload) + "?mode=src&n=1"
    tid = task_id(url)
    # cid_c pulls once and never reports: the others wait for it at most --fetch-wait.
    node = supernode("--fetch-wait", "1s", cdn_pattern="source", shared_port=True)
    cid_c = "127.0.0.1-20344-1795914767.052"
    with api(node) as http:
        response = http.post(
            "/peer/registry",
            content=registry_body(url, cid_c, 16103, "c.bin"),
            headers={"Content-Type": JSON_CT},
        )
        assert response.content == registry_answer(tid, SIZE, "source")
        first = http.get(pull_query(cid_c, tid))
    holder = f"cdnnode:127.0.0.1~{tid}"
    expected = [
        {
            "range": f"{k * P}-{k * P + P - 1}",
            "pieceNum": k,
            "pieceSize": P,
            "pieceMd5": "",
            "cid": holder,
            "peerIp": "127.0.0.1",
            "peerPort": node.port,
            "path": url,
            "downLink": 0,
        }
        for k in range(3)
    ]
    body = json.dumps({"code": 601, "data": expected}, separators=(",", ":")).encode() + b"\n"
    assert first.content == body  # raw "&" in the path: not HTML-escaped
    # The registration cost the origin one ranged request of one byte.
    assert [r.range for r in origin.stats.requests] == ["bytes=0-0"]
    client = clients(node, url, "127.0.0.1-1-1.000")
    assert client.download() == payload
    assert client.answers[-1] == b'{"code":600,"data":{"fileLength":0,"md5":""}}\n'
    origin.reset_stats()
    second = clients(node, url, "127.0.0.1-2-2.000")
    assert second.download() == payload
    assert set(second.sources.values()) == {"127.0.0.1-1-1.000"}
    assert origin.stats.body_bytes == 0


def test_source_pattern_concurrent_clients_fetch_each_piece_from_origin_once(
    origin: Origin, supernode: SupernodeFactory, clients: Any, payload: bytes
) -> None:
    url = origin.add("/together", payload)
    node = supernode(cdn_pattern="source")
    sims = [clients(node, url, f"127.0.0.1-{n}-1.000") for n in range(3)]
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda sim: sim.download(), sims))
    assert results == [payload] * 3
    ranged = [r for r in origin.stats.requests if r.headers.get("Cdnsource") == "source"]
    assert len(ranged) == piece_count(SIZE, P, wrapped=False)
    assert origin.stats.body_bytes == SIZE + 1  # plus the one-byte range probe


# ---- failures -------------------------------------------------------------------------------


def refused(response: httpx.Response) -> str:
    assert response.status_code == 500
    assert response.content.endswith(b"}\n")
    body = response.json()
    assert list(body) == ["code", "msg"] and body["code"] == 500
    return str(body["msg"])


def test_registration_failures(origin: Origin, supernode: SupernodeFactory) -> None:
    node = supernode()
    missing = origin.url("/missing")
    origin.add("/secret", b"x" * 100)
    origin.behave("/secret", auth=("user", "pass"))
    with api(node) as http:

        def post(body: bytes) -> httpx.Response:
            return http.post("/peer/registry", content=body, headers={"Content-Type": JSON_CT})

        refused(post(registry_body(missing, CID_A, 16101, "a")))
        requests = len(origin.stats.requests)
        refused(post(registry_body(missing, CID_B, 16102, "b")))  # remembered as unreachable
        assert len(origin.stats.requests) == requests
        refused(post(registry_body(origin.url("/secret"), CID_A, 16101, "a")))
        assert "malformed JSON" in refused(post(b'{"rawUrl": '))
        refused(post(b"[1, 2]"))
        valid = json.loads(registry_body(origin.url("/secret"), CID_A, 16101, "a"))
        refused(post(json.dumps({**valid, "ip": "not-an-ip"}).encode()))
        refused(post(json.dumps({**valid, "port": 80}).encode()))
        refused(post(json.dumps({**valid, "cid": ""}).encode()))
        refused(post(json.dumps({**valid, "rawUrl": "ftp://host/file"}).encode()))
        assert post(b"x" * (2 << 20)).status_code == 413
        assert http.get("/no/such/route").status_code == 404


def test_source_pattern_refuses_a_source_whose_range_answer_is_not_the_first_byte(
    origin: Origin, supernode: SupernodeFactory
) -> None:
    """The length comes from the probe's ``Content-Range``: a 206 for another range than
    ``bytes=0-0`` (here shifted by one) is not trusted for the task's length."""
    node = supernode(cdn_pattern="source")
    url = origin.add("/shifted", b"x" * 1000)
    origin.behave("/shifted", wrong_range=True)
    with api(node) as http:
        body = registry_body(url, CID_A, 16101, "a")
        answer = http.post("/peer/registry", content=body, headers={"Content-Type": JSON_CT})
    assert "no usable length" in refused(answer)
    assert [r.range for r in origin.stats.requests] == ["bytes=0-0"]


def test_registration_accepts_form_bodies_and_ipv6_peers(
    origin: Origin, supernode: SupernodeFactory
) -> None:
    url = origin.add("/form", b"y" * 1000)
    node = supernode()
    form = {
        "rawUrl": url,
        "taskUrl": url,
        "cid": "c1",
        "ip": "::1",
        "port": "16000",
        "path": "/peer/file/p",
    }
    response = httpx.post(f"{node.url}/v1.0/peer/registry", data=form)
    assert response.json()["data"]["taskId"] == task_id(url)
    assert response.json()["data"]["fileLength"] == 1000


def test_pull_and_report_errors(
    origin: Origin, supernode: SupernodeFactory, payload: bytes
) -> None:
    url = origin.add("/errors", payload)
    tid = task_id(url)
    node = supernode()
    with api(node) as http:
        http.post(
            "/peer/registry",
            content=registry_body(url, CID_A, 16101, "a"),
            headers={"Content-Type": JSON_CT},
        )
        assert http.get(pull_query(CID_A, "f" * 64)).json()["code"] == 502
        assert http.get(pull_query("bogus", tid)).json()["code"] == 502
        assert http.get(f"/peer/task?srcCid={CID_A}&taskId=").json()["code"] == 501
        bad_range = pull_query(CID_A, tid, f"cdnnode:127.0.0.1~{tid}", "x-y", 503)
        assert http.get(bad_range).json()["code"] == 501
        bad_result = pull_query(CID_A, tid).replace(
            "result=502&status=700", "result=509&status=701"
        )
        assert http.get(bad_result).json()["code"] == 501
        suc = f"/peer/piece/suc?taskId={tid}&cid=bogus&dstCid=x&pieceRange=0-4194303"
        refused(http.get(suc))
        refused(http.get(f"/peer/service/down?taskId={tid}&cid=bogus"))
        error = http.get(
            f"/peer/piece/error?errorType=FILE_NOT_EXIST&srcCid={CID_A}&dstCid=bogus&dstIp=&taskId={tid}"
            "&range=&realMd5=&expectedMd5="
        )
        assert (error.status_code, error.content) == (200, b"")


def test_cdn_md5_mismatch_fails_pulls_until_a_registration_retries(
    origin: Origin, supernode: SupernodeFactory
) -> None:
    url = origin.add("/md5", b"z" * 5000)
    node = supernode()
    body = json.loads(registry_body(url, CID_A, 16101, "a"))
    body["md5"] = "0" * 32
    with api(node) as http:
        tid = http.post("/peer/registry", json=body).json()["data"]["taskId"]
        # Pieces are handed out as the CDN stores them (601), before the whole file's md5 is
        # known; once it is known wrong, pulls fail.
        codes = []
        for _ in range(200):
            codes.append(http.get(pull_query(CID_A, tid)).json()["code"])
            if codes[-1] not in (601, 602):
                break
            time.sleep(0.05)
        assert codes[-1] == 500, codes
        requests = len(origin.stats.requests)
        http.post("/peer/registry", json=body)
        time.sleep(0.3)
        assert len(origin.stats.requests) == requests + 1


def test_burst_of_pulls_is_answered(
    origin: Origin, supernode: SupernodeFactory, payload: bytes
) -> None:
    url = origin.add("/burst", payload)
    node = supernode()
    tid = task_id(url)
    cids = [f"127.0.0.1-{n}-9.000" for n in range(8)]
    with api(node) as http:
        for cid in cids:
            http.post(
                "/peer/registry",
                content=registry_body(url, cid, 16101, cid),
                headers={"Content-Type": JSON_CT},
            )

    def hammer(cid: str) -> list[int]:
        with api(node) as http:
            return [http.get(pull_query(cid, tid)).json()["code"] for _ in range(125)]

    with ThreadPoolExecutor(8) as pool:
        codes = [code for batch in pool.map(hammer, cids) for code in batch]
    assert len(codes) == 1000
    assert set(codes) <= {601, 602}


def test_idle_task_is_collected(origin: Origin, supernode: SupernodeFactory) -> None:
    url = origin.add("/gc", b"g" * 100)
    node = supernode("--task-expire", "1s", "--task-gc-interval", "200ms")
    with api(node) as http:
        tid = http.post("/peer/registry", content=registry_body(url, CID_A, 16101, "a")).json()[
            "data"
        ]["taskId"]
        time.sleep(0.3)
        assert Path(node.home, "repo", "download", tid[:3], tid).exists()
        time.sleep(1.5)
        assert http.get(pull_query(CID_A, tid)).json()["code"] == 502
        assert "dragonfly_supernode_tasks 0" in http.get("/metrics").text
    assert not Path(node.home, "repo", "download", tid[:3], tid).exists()


# ---- the download port ----------------------------------------------------------------------


def test_download_port_ranges_and_containment(origin: Origin, supernode: SupernodeFactory) -> None:
    data = bytes(range(256)) * 40
    url = origin.add("/small", data)
    node = supernode()
    with api(node) as http:
        tid = http.post("/peer/registry", content=registry_body(url, CID_A, 16101, "a")).json()[
            "data"
        ]["taskId"]
        for _ in range(100):
            if http.get(pull_query(CID_A, tid)).json()["code"] == 601:
                break
            time.sleep(0.05)
    base = f"http://127.0.0.1:{node.download_port}"
    path = f"/download/{tid[:3]}/{tid}"
    socket.create_connection(("127.0.0.1", node.download_port), timeout=1).close()
    whole = httpx.get(base + path)
    assert whole.status_code == 200 and len(whole.content) == len(data) + 5
    part = httpx.get(base + path, headers={"Range": f"bytes=4-{P - 1}"})
    assert part.status_code == 206
    assert part.content == data + b"\x7f"
    assert part.headers["Content-Range"] == f"bytes 4-{len(data) + 4}/{len(data) + 5}"
    assert httpx.get(base + path, headers={"Range": "bytes=99999-100000"}).status_code == 416
    for evil in (
        "/download/../supernode.log",
        "/%2e%2e/supernode.log",
        "/download/%2e%2e/%2e%2e/supernode.log",
    ):
        assert httpx.get(base + evil).status_code == 404


def test_damaged_cdn_copy_is_fetched_again_after_a_client_complaint(
    origin: Origin, supernode: SupernodeFactory, clients: Any, payload: bytes
) -> None:
    url = origin.add("/damaged", payload)
    tid = task_id(url)
    node = supernode()
    clients(node, url, CID_A).download()
    cache = Path(node.home, "repo", "download", tid[:3], tid)
    with open(cache, "r+b") as file:
        file.seek(10)
        file.write(b"corrupt")
    md5 = wrapped_md5(payload, 0).partition(":")[0]
    query = raw_query(
        [
            ("errorType", "FILE_MD5_NOT_MATCH"),
            ("srcCid", CID_A),
            ("dstCid", f"cdnnode:127.0.0.1~{tid}"),
            ("dstIp", "127.0.0.1"),
            ("taskId", tid),
            ("range", f"0-{P - 1}"),
            ("realMd5", "0" * 32),
            ("expectedMd5", md5),
        ]
    )
    assert httpx.get(f"{node.url}/peer/piece/error?{query}").status_code == 200
    for _ in range(100):
        if len(origin.stats.requests) == 2 and cache.read_bytes()[10:17] != b"corrupt":
            break
        time.sleep(0.05)
    assert len(origin.stats.requests) == 2
    assert clients(node, url, CID_B, serve=False).download() == payload


def test_service_routes_and_version_prefix(origin: Origin, supernode: SupernodeFactory) -> None:
    url = origin.add("/prefix", b"p" * 10)
    node = supernode()
    with api(node) as http:
        assert http.get("/_ping").text == "OK"
        assert http.get("/version").json()["version"] == "1.0.6"
        registered = http.post("/v1.0/peer/registry", content=registry_body(url, CID_A, 16101, "a"))
        tid = registered.json()["data"]["taskId"]
        assert http.get("/v1.0.6" + pull_query(CID_A, tid)).json()["code"] in (600, 601, 602)
        metrics = http.get("/v1/metrics")
        assert metrics.headers["Content-Type"].startswith("text/plain")
        assert 'dragonfly_supernode_registrations_total{result="success"} 1' in metrics.text
