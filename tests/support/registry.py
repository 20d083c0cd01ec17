"""A real Docker Registry v2 for end-to-end tests, and a counting reverse proxy in front of it.

The registry is Debian's ``docker-registry`` (upstream distribution 2.8) on 127.0.0.1 with a temp
filesystem storage and htpasswd basic auth; nothing in its configuration reaches the network.
:func:`push_image` uploads a synthetic image through the registry HTTP API (monolithic
``POST`` + ``PUT ?digest=`` blob uploads, then the manifest), so the blobs dfget pulls are served
by the registry's own blob handler: ``Accept-Ranges``, ``206`` and ``Docker-Content-Digest``
exactly as a production registry answers them.

The registry's access log cannot tell how many body bytes a client actually took when it hangs up
early, so tests talk to :class:`CountingProxy` instead: it forwards every request unchanged
(``Authorization``, ``Range`` and ``Host`` included, so upload ``Location`` URLs point back at the
proxy), streams bodies both ways, and counts requests and response body bytes per path.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.support.helpers import free_port, random_bytes, stop_process

REGISTRY_BINARY = "docker-registry"
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_V1 = "application/vnd.docker.container.image.v1+json"
LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MiB = 1024 * 1024
ACCESS_LINE = re.compile(r'"GET (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3}) (?P<bytes>\d+|-)')


def find_registry() -> str | None:
    """Path of the registry binary (Debian installs it as /usr/bin/docker-registry)."""
    found = shutil.which(REGISTRY_BINARY)
    if found:
        return found
    return "/usr/bin/docker-registry" if os.access("/usr/bin/docker-registry", os.X_OK) else None


def missing_tools() -> str | None:
    """Why the registry tests cannot run here, or None when they can."""
    if find_registry() is None:
        return "docker-registry is not installed (apt-get install docker-registry; .ci/run does)"
    if shutil.which("htpasswd") is None:
        try:
            import bcrypt  # type: ignore[import-not-found]  # noqa: F401
        except ImportError:
            return "htpasswd is not installed (apt-get install apache2-utils; .ci/run does)"
    return None


def htpasswd_line(user: str, password: str) -> str:
    """One bcrypt htpasswd entry: the registry's htpasswd auth accepts bcrypt only."""
    tool = shutil.which("htpasswd")
    if tool:
        result = subprocess.run(
            [tool, "-Bbn", user, password], capture_output=True, check=True, timeout=30
        )
        return result.stdout.decode().strip()
    import bcrypt  # type: ignore[import-not-found]

    return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}"


def basic_auth(user: str, password: str) -> str:
    """The value of an ``Authorization`` header for HTTP basic auth."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Registry:
    """``docker-registry serve`` on 127.0.0.1:<free port>; storage and logs under ``root``."""

    def __init__(self, root: Path, user: str = "puller", password: str | None = None) -> None:
        self.root = root
        self.user = user
        self.password = password or secrets.token_hex(12)
        self.port = free_port()
        self.log = root / "registry.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth(self) -> str:
        return basic_auth(self.user, self.password)

    def config(self) -> str:
        # JSON is YAML: no quoting surprises with paths. No notifications, no redis, no
        # redirects, no upload purging and no health checks, so the registry never dials out.
        document = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.root / "storage")},
                "delete": {"enabled": True},
                "redirect": {"disable": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": f"127.0.0.1:{self.port}", "secret": secrets.token_hex(16)},
            "auth": {"htpasswd": {"realm": "dfget-test", "path": str(self.root / "htpasswd")}},
            "health": {"storagedriver": {"enabled": False}},
        }
        return json.dumps(document, indent=2)

    def start(self, timeout: float = 20.0) -> Registry:
        binary = find_registry()
        if binary is None:
            raise RuntimeError("docker-registry is not installed")
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "htpasswd").write_text(htpasswd_line(self.user, self.password) + "\n")
        config = self.root / "config.yml"
        config.write_text(self.config())
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT, env=env
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/v2/", timeout=1.0).status_code == 401:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"docker-registry not ready after {timeout}s: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def log_mark(self) -> int:
        """A position in the log; :meth:`access_log_bytes` counts what follows it."""
        return self.log.stat().st_size

    def access_log_bytes(self, path: str, since: int = 0) -> int:
        """Body bytes the registry's access log records for GETs of ``path`` after ``since``.

        The log is the registry's own combined-format access log, written when a response
        ends (bytes written, so a client that hung up early is counted as far as it got).
        """
        with open(self.log, "rb") as handle:
            handle.seek(since)
            text = handle.read().decode(errors="replace")
        total = 0
        for match in ACCESS_LINE.finditer(text):
            if match["path"].split("?")[0] == path and match["bytes"] != "-":
                total += int(match["bytes"])
        return total


@dataclass(frozen=True)
class Blob:
    digest: str  # "sha256:<hex>"
    size: int
    media_type: str

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]


@dataclass(frozen=True)
class Image:
    repo: str
    tag: str
    layers: tuple[Blob, ...]
    config: Blob
    manifest: bytes
    manifest_digest: str

    def blob_path(self, blob: Blob) -> str:
        return f"/v2/{self.repo}/blobs/{blob.digest}"


def _put_blob(client: httpx.Client, base: str, repo: str, data: bytes) -> str:
    """Monolithic upload: open a session with POST, send everything with PUT ?digest=."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    opened = client.post(f"{base}/v2/{repo}/blobs/uploads/")
    if opened.status_code != 202:
        raise RuntimeError(f"blob upload not accepted: {opened.status_code} {opened.text}")
    location = opened.headers["Location"]
    if location.startswith("/"):
        location = base + location
    separator = "&" if "?" in location else "?"
    done = client.put(
        f"{location}{separator}digest={digest}",
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    if done.status_code != 201 or done.headers.get("Docker-Content-Digest") != digest:
        raise RuntimeError(f"blob upload failed: {done.status_code} {done.text}")
    return digest


def push_image(
    base: str, auth: str, repo: str, tag: str, layer_sizes: list[int], seed: int = 1
) -> Image:
    """Push random layers, an image config and a schema 2 manifest; returns their digests.

    The layers are random bytes labelled as gzip tars: the registry stores and serves blobs
    without looking inside, which is all a transport test needs.
    """
    layers: list[Blob] = []
    with httpx.Client(headers={"Authorization": auth}, timeout=60.0) as client:
        for index, size in enumerate(layer_sizes):
            digest = _put_blob(client, base, repo, random_bytes(size, seed=seed * 1000 + index))
            layers.append(Blob(digest, size, LAYER_GZIP))
        config_doc = {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/true"]},
            "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
            "history": [{"created_by": f"synthetic layer {i}"} for i in range(len(layers))],
        }
        config_bytes = json.dumps(config_doc, separators=(",", ":")).encode()
        config = Blob(_put_blob(client, base, repo, config_bytes), len(config_bytes), CONFIG_V1)
        manifest_doc = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_V2,
            "config": {"mediaType": CONFIG_V1, "size": config.size, "digest": config.digest},
            "layers": [
                {"mediaType": b.media_type, "size": b.size, "digest": b.digest} for b in layers
            ],
        }
        manifest = json.dumps(manifest_doc, indent=3).encode()
        reply = client.put(
            f"{base}/v2/{repo}/manifests/{tag}",
            content=manifest,
            headers={"Content-Type": MANIFEST_V2},
        )
        if reply.status_code != 201:
            raise RuntimeError(f"manifest push failed: {reply.status_code} {reply.text}")
        manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        if reply.headers.get("Docker-Content-Digest") != manifest_digest:
            raise RuntimeError(f"registry stored another manifest: {reply.headers}")
    return Image(repo, tag, tuple(layers), config, manifest, manifest_digest)


# --- counting reverse proxy ---------------------------------------------------------------

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
}


@dataclass
class ProxiedRequest:
    method: str
    path: str  # without the query string
    range: str | None
    status: int = 0
    body_bytes: int = 0  # response body bytes the client actually received


@dataclass
class ProxyStats:
    requests: list[ProxiedRequest] = field(default_factory=list)
    bytes_by_path: dict[str, int] = field(default_factory=dict)

    def body_bytes(self, path: str) -> int:
        return self.bytes_by_path.get(path, 0)

    def for_path(self, path: str) -> list[ProxiedRequest]:
        return [r for r in self.requests if r.path == path]


class CountingProxy:
    """Threaded HTTP/1.1 reverse proxy on 127.0.0.1 that counts what leaves ``upstream``."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.lock = threading.Lock()
        self.stats = ProxyStats()
        handler = _proxy_handler(self)

        class _Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256

            def handle_error(self, request: object, client_address: object) -> None:
                # Clients hanging up (a cancelled range, a reset keep-alive) are normal here.
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)  # type: ignore[arg-type]

        self.server = _Server(("127.0.0.1", 0), handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> CountingProxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reset(self) -> None:
        with self.lock:
            self.stats = ProxyStats()

    def _record(self, request: ProxiedRequest) -> None:
        with self.lock:
            self.stats.requests.append(request)

    def _count(self, request: ProxiedRequest, nbytes: int) -> None:
        with self.lock:
            request.body_bytes += nbytes
            paths = self.stats.bytes_by_path
            paths[request.path] = paths.get(request.path, 0) + nbytes


def _proxy_handler(proxy: CountingProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self._forward()

        do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

        def _forward(self) -> None:
            record = ProxiedRequest(self.command, self.path.split("?")[0], self.headers["Range"])
            proxy._record(record)
            upstream = http.client.HTTPConnection(
                proxy.upstream_host, proxy.upstream_port, timeout=60
            )
            try:
                upstream.putrequest(
                    self.command, self.path, skip_host=True, skip_accept_encoding=True
                )
                for name, value in self.headers.items():
                    if name.lower() not in HOP_BY_HOP and name.lower() != "expect":
                        upstream.putheader(name, value)
                upstream.endheaders()
                length = int(self.headers.get("Content-Length") or 0)
                while length > 0:
                    chunk = self.rfile.read(min(length, 1 << 20))
                    if not chunk:
                        break
                    upstream.send(chunk)
                    length -= len(chunk)
                response = upstream.getresponse()
                record.status = response.status
                self._relay(response, record)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            finally:
                upstream.close()

        def _relay(self, response: http.client.HTTPResponse, record: ProxiedRequest) -> None:
            announced = response.getheader("Content-Length")
            buffered = None
            if announced is None and self.command != "HEAD":
                buffered = response.read()  # chunked upstream: re-frame with a length
            self.send_response_only(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() not in HOP_BY_HOP and not (
                    buffered is not None and name.lower() == "content-length"
                ):
                    self.send_header(name, value)
            if buffered is not None:
                self.send_header("Content-Length", str(len(buffered)))
            self.end_headers()
            if self.command == "HEAD":
                return
            if buffered is not None:
                self.wfile.write(buffered)
                proxy._count(record, len(buffered))
                return
            while True:
                chunk = response.read(256 * 1024)
                if not chunk:
                    break
                self.wfile.write(chunk)
                proxy._count(record, len(chunk))

    return Handler
