"""A stand-in peer for the P2P fault and secrets tests: it joins a task through the real v1
protocol without ever fetching a byte."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

from dfget.net.server import Handler, make_server
from dfget.protocol.pieces import TAIL, frame_head, wrapped_request_slice
from dfget.protocol.ranges import parse_range_header
from tests.support.helpers import peer_port
from tests.support.servers import SupernodeProcess


@dataclass
class FakePeer:
    """A peer server that joins a task through the real v1 protocol (register, pull, report
    every piece stored) without fetching a byte, then serves ``data``, each piece with one byte
    flipped when ``corrupt``. Records the headers of every request it gets."""

    data: bytes
    corrupt: bool = True
    requests: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        fake = self

        class PeerHandler(Handler):
            def do_GET(self) -> None:
                fake.requests.append({k.lower(): v for k, v in self.headers.items()})
                rng = parse_range_header(self.header("Range"))
                if self.header("cdnSource") == "source":
                    self.reply(206, fake.spoil(fake.data[rng.start : rng.end + 1]))
                    return
                served = wrapped_request_slice(rng, int(self.header("pieceNum")), len(fake.data))
                chunk = fake.data[served.raw_start : served.raw_start + served.data_len]
                head = frame_head(len(chunk), int(self.header("pieceSize")))
                self.reply(206, head + fake.spoil(chunk) + TAIL)

        self.port = peer_port()
        self.server = make_server("127.0.0.1", self.port, PeerHandler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.cid = f"127.0.0.1-{self.port}-1.000"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def spoil(self, data: bytes) -> bytes:
        if not self.corrupt or not data:
            return data
        spoilt = bytearray(data)
        spoilt[len(spoilt) // 2] ^= 0xFF
        return bytes(spoilt)

    def join(self, node: SupernodeProcess, url: str, headers: Sequence[str] = ()) -> None:
        with httpx.Client(base_url=node.url, timeout=10) as api:
            body = {
                "rawUrl": url, "taskUrl": url, "cid": self.cid, "ip": "127.0.0.1",
                "hostName": "fake", "port": self.port, "path": "/peer/file/fake",
                "version": "1.0.6", "headers": list(headers),
            }  # fmt: skip
            tid = api.post("/peer/registry", json=body).json()["data"]["taskId"]
            pull = f"/peer/task?srcCid={self.cid}&dstCid=&range=&result=502&status=700&taskId={tid}"
            deadline = time.monotonic() + 20
            while (answer := api.get(pull).json())["code"] != 600:
                assert time.monotonic() < deadline, answer
                for piece in answer.get("data") or [] if answer["code"] == 601 else []:
                    report = (
                        f"/peer/piece/suc?taskId={tid}&cid={self.cid}&dstCid={piece['cid']}"
                        f"&pieceRange={piece['range']}"
                    )
                    assert api.get(report).json() == {"code": 611}
                if answer["code"] != 601:
                    time.sleep(0.05)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
