"""The real servers the tests run against, as objects: a `dfget server` (PeerServer), our
supernode (SupernodeProcess) and a recorder of supernode calls (FakeSupernode). conftest.py
turns them into fixtures."""

from __future__ import annotations

import http.client
import json
import os
import selectors
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from tests.support.helpers import (
    DFGET,
    REPO,
    V1_SUPERNODE,
    free_port,
    start_dfget,
    stop_process,
)


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key.lower() == name.lower()), None)


@dataclass
class PeerServer:
    """A real `dfget server` subprocess on 127.0.0.1 and a few calls against it."""

    proc: subprocess.Popen[bytes]
    port: int
    home: Path

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def meta_file(self) -> Path:
        return self.home / "meta" / "host.meta"

    def get(
        self, target: str, headers: dict[str, str] | None = None, timeout: float = 10.0
    ) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.putrequest("GET", target, skip_host=False, skip_accept_encoding=True)
            for name, value in (headers or {}).items():
                conn.putheader(name, value)
            conn.endheaders()
            response = conn.getresponse()
            return Reply(response.status, response.getheaders(), response.read())
        finally:
            conn.close()

    def piece(
        self,
        name: str,
        start: int,
        end: int,
        piece_num: int,
        piece_size: int,
        timeout: float = 10.0,
        **extra: str,
    ) -> Reply:
        """A piece request; ``extra`` are more headers."""
        headers = {
            "Piecenum": str(piece_num),
            "Piecesize": str(piece_size),
            "Range": f"bytes={start}-{end}",
        }
        return self.get(f"/peer/file/{name}", {**headers, **extra}, timeout=timeout)

    def add_task(self, name: str, content: bytes, data_dir: Path | None = None) -> Path:
        """Write a service file and register it with `/check/` as dfget does."""
        path = (data_dir or self.data) / f"{name}.service"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        reply = self.get(
            f"/check/{name}", {"Datadir": str(data_dir or self.data), "Totallimit": "0"}
        )
        assert (reply.status, reply.body) == (200, f"{name}@1.0.6".encode())
        return path

    def finish(
        self, name: str, supernode: str, task_id: str = "t" * 64, cid: str = "127.0.0.1-1-2.3"
    ) -> None:
        reply = self.get(
            f"/client/finish?taskFileName={name}&taskID={task_id}&cid={cid}&superNode={supernode}"
        )
        assert (reply.status, reply.body) == (200, b"success")

    def meta_port(self) -> int:
        return int(json.loads(self.meta_file.read_text())["servicePort"])

    def wait_exit(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)


def read_first_line(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> str:
    """The first stdout line of a process, or "" after ``timeout``."""
    assert proc.stdout is not None
    data = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while b"\n" not in data and time.monotonic() < deadline:
            if selector.select(deadline - time.monotonic()):
                chunk = os.read(proc.stdout.fileno(), 256)
                if not chunk:
                    break
                data += chunk
    return data.decode(errors="replace").split("\n", 1)[0]


def launch_peer_server(home: Path, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start `dfget server` for ``home`` on 127.0.0.1; returns the process and its first line."""
    proc = start_dfget(["server", "--ip", "127.0.0.1", "--home", str(home), *args])
    return proc, read_first_line(proc)


@dataclass
class FakeSupernode:
    """Records every request path; answers `/peer/service/down` like the Go supernode."""

    server: ThreadingHTTPServer
    paths: list[str] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    @classmethod
    def start(cls) -> FakeSupernode:
        holder: list[FakeSupernode] = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                body = b'{"code":612}\n'
                self.send_response_only(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                with holder[0].arrived:
                    holder[0].paths.append(self.path)
                    holder[0].arrived.notify_all()

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        holder.append(cls(server))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return holder[0]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[str]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.paths) >= count, timeout)
            return list(self.paths)


@dataclass
class SupernodeProcess:
    """A running `python -m dfget supernode`; ``url`` is its API, ``node`` the --node value."""

    port: int
    download_port: int
    home: Path
    log: Path
    proc: subprocess.Popen[bytes]

    @property
    def node(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"supernode exited: {self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/_ping", timeout=1.0).text == "OK":
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise TimeoutError(f"supernode not ready after {timeout}s: {self.log.read_text()}")

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit code (0 on a clean shutdown)."""
        stop_process(self.proc)
        return int(self.proc.returncode)


SupernodeFactory = Callable[..., SupernodeProcess]


def start_supernode(
    home: Path, args: Sequence[str], cdn_pattern: str, shared_port: bool, scheduling: str
) -> SupernodeProcess:
    """Our supernode (or, ``scheduling="v1"``, tests/support/v1_supernode.py) on free ports of
    127.0.0.1, logging to ``home/supernode.log``; not yet waited for."""
    port = free_port()
    download_port = port if shared_port else free_port()
    home.mkdir()
    log = home / "supernode.log"
    program = V1_SUPERNODE if scheduling == "v1" else [*DFGET, "supernode"]
    command = [
        *program,
        "--port", str(port),
        "--download-port", str(download_port),
        "--listen-ip", "127.0.0.1",
        "--advertise-ip", "127.0.0.1",
        "--home", str(home),
        "--cdn-pattern", cdn_pattern,
        "--seed", "1",
        *args,
    ]  # fmt: skip
    with open(log, "wb") as output:
        proc = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=REPO)
    return SupernodeProcess(port, download_port, home, log, proc)
