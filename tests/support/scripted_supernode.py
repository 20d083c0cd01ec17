"""A scripted stand-in for the Go supernode: canned v1.0.6 answers, every request recorded.

Used for golden tests of what our dfget puts on the wire. It also serves the wrapped CDN file
of the task (``/download/<id[:3]>/<id>``) with single byte ranges, like nginx on port 8001.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from dfget.protocol.pieces import piece_count, piece_data_len, wrap
from dfget.protocol.ranges import PieceRange
from dfget.protocol.taskid import task_id

PIECE_SIZE = 4 * 1024 * 1024
WAIT_ANSWER = (  # wire transcript §1.5
    b'{"code":602,"msg":"clientSucCount:0,cdnSucCount:0: '
    b'{\\"Code\\":9,\\"Msg\\":\\"peer should wait\\"}"}\n'
)


@dataclass
class Recorded:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class ScriptedSupernode:
    url: str
    data: bytes
    cdn_source: str = "supernode"
    waits_before_pieces: int = 1
    refuse_ipv6: bool = False  # like Go 1.0.6: registration of a non-IPv4 peer fails (HTTP 500)
    corrupt_pieces: set[int] = field(default_factory=set)  # served with one bit flipped
    lying_zstd: dict[int, bytes] = field(default_factory=dict)  # piece: zstd body, sent once
    registration_lies: dict[str, object] = field(default_factory=dict)  # merged into its data
    piece_lies: dict[str, object] = field(default_factory=dict)  # merged into every piece task
    metrics_delay: float = 0.0  # seconds before /task/metrics is answered
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    metrics_arrived: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.task_id = task_id(self.url)
        self.count = piece_count(len(self.data), PIECE_SIZE)
        self.wrapped = b"".join(
            wrap(
                self.data[
                    k * (PIECE_SIZE - 5) : k * (PIECE_SIZE - 5)
                    + piece_data_len(k, len(self.data), PIECE_SIZE)
                ],
                PIECE_SIZE,
            )
            for k in range(self.count)
        )
        self.done: set[int] = set()
        self.pulls = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def cdn_cid(self) -> str:
        return f"cdnnode:127.0.0.1~{self.task_id}"

    def piece_json(self, k: int) -> dict[str, object]:
        rng = PieceRange.of_piece(k, PIECE_SIZE)
        frame = self.wrapped[k * PIECE_SIZE : (k + 1) * PIECE_SIZE]
        return {
            "range": str(rng),
            "pieceNum": k,
            "pieceSize": PIECE_SIZE,
            "pieceMd5": f"{hashlib.md5(frame).hexdigest()}:{len(frame)}",
            "cid": self.cdn_cid,
            "peerIp": "127.0.0.1",
            "peerPort": self.port,
            "path": f"/download/{self.task_id[:3]}/{self.task_id}",
            "downLink": 0,
            **self.piece_lies,
        }

    def pull(self, query: dict[str, str]) -> bytes:
        self.pulls += 1
        if query.get("result") == "503" and query.get("range"):
            self.done.add(PieceRange.parse(query["range"]).piece_num())
        if self.pulls <= self.waits_before_pieces:
            return WAIT_ANSWER
        if len(self.done) == self.count:
            md5 = hashlib.md5(self.data).hexdigest()
            return (
                json.dumps(
                    {"code": 600, "data": {"fileLength": len(self.wrapped), "md5": md5}},
                    separators=(",", ":"),
                ).encode()
                + b"\n"
            )
        todo = [k for k in range(self.count) if k not in self.done][:4]
        return (
            json.dumps(
                {"code": 601, "data": [self.piece_json(k) for k in todo]}, separators=(",", ":")
            ).encode()
            + b"\n"
        )

    def of(self, route: str) -> list[Recorded]:
        return [r for r in self.requests if r.path.split("?")[0] == route]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(sn: ScriptedSupernode) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _record(self, body: bytes = b"") -> None:
            with sn.lock:
                sn.requests.append(
                    Recorded(self.command, self.path, list(self.headers.items()), body)
                )

        def _json(self, body: bytes, status: int = 200) -> None:
            self.send_response_only(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._record(body)
            if self.path == "/peer/registry" and sn.refuse_ipv6 and ":" in json.loads(body)["ip"]:
                self._json(b'{"code":500,"msg":"invalid ip"}\n', 500)
            elif self.path == "/peer/registry":
                data = {
                    "taskId": sn.task_id,
                    "fileLength": len(sn.data),
                    "pieceSize": PIECE_SIZE,
                    "cdnSource": sn.cdn_source,
                    "asSeed": False,
                    "seedTaskID": "",
                    **sn.registration_lies,
                }
                self._json(
                    json.dumps(
                        {"code": 200, "data": data, "msg": "success"}, separators=(",", ":")
                    ).encode()
                    + b"\n"
                )
            else:
                if self.path == "/task/metrics":
                    sn.metrics_arrived.set()
                    time.sleep(sn.metrics_delay)
                self._json(b"null\n")

        def do_GET(self) -> None:
            self._record()
            route, _, query = self.path.partition("?")
            params = dict(p.partition("=")[::2] for p in query.split("&") if p)
            if route == "/peer/task":
                with sn.lock:
                    answer = sn.pull(params)
                self._json(answer)
            elif route == "/peer/piece/suc":
                self._json(b'{"code":611}\n')
            elif route.startswith("/download/"):
                rng = self.headers["Range"].split("=", 1)[1]
                start, end = (int(x) for x in rng.split("-"))
                chunk = bytearray(sn.wrapped[start : end + 1])
                if start // PIECE_SIZE in sn.corrupt_pieces:
                    chunk[len(chunk) // 2] ^= 1
                with sn.lock:
                    lie = sn.lying_zstd.pop(start // PIECE_SIZE, None)
                self.send_response_only(206)
                if lie is not None:
                    chunk = bytearray(lie)
                    self.send_header("Content-Encoding", "zstd")
                self.send_header("Content-Length", str(len(chunk)))
                self.send_header(
                    "Content-Range", f"bytes {start}-{start + len(chunk) - 1}/{len(sn.wrapped)}"
                )
                self.end_headers()
                self.wfile.write(chunk)
            else:
                self._json(b"", 404)

    return Handler
