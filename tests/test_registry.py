"""End to end against a real Docker Registry v2 (Debian's ``docker-registry``).

A synthetic image is pushed once per module through the registry HTTP API; every pull goes
through :class:`tests.support.registry.CountingProxy`, which counts the body bytes that left the
registry per blob. Each P2P case asserts where the bytes came from: the registry served each
layer about once for three peers, and the 2nd and 3rd peers took nothing from it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from dfget.errors import ExitCode
from dfget.prewarm import sha256_file
from tests.support.helpers import DFGET, run_dfget
from tests.support.peers import Peers
from tests.support.registry import CountingProxy, Image, MiB, Registry, missing_tools, push_image
from tests.support.servers import SupernodeFactory

_missing = missing_tools()
if _missing and os.environ.get("CI") == "true":
    pytest.fail(f"CI must run the registry tests: {_missing}", pytrace=False)
pytestmark = pytest.mark.skipif(_missing is not None, reason=_missing or "")

# 1-16 MiB: one piece, two pieces, four pieces (the last ones partial).
LAYER_SIZES = [1 * MiB + 17, 6 * MiB + 4321, 13 * MiB + 99]
REPO = "team/app"
TAG = "v1"


@dataclass
class Hub:
    registry: Registry
    proxy: CountingProxy
    image: Image
    log_mark: int = 0

    def reset(self) -> None:
        self.proxy.reset()
        self.log_mark = self.registry.log_mark()

    def logged(self, digest: str, expected: int, wait: float = 3.0) -> int:
        """Bytes of this blob in the registry's access log since the reset; the registry logs a
        response just after its last byte, so give it a moment to reach ``expected``."""
        path = f"/v2/{self.image.repo}/blobs/{digest}"
        deadline = time.monotonic() + wait
        while True:
            logged = self.registry.access_log_bytes(path, since=self.log_mark)
            if logged >= expected or time.monotonic() > deadline:
                return logged
            time.sleep(0.05)

    @property
    def auth_header(self) -> str:
        return f"Authorization: {self.registry.auth}"

    def blob_url(self, digest: str) -> str:
        return f"{self.proxy.url}/v2/{self.image.repo}/blobs/{digest}"

    def served(self, digest: str) -> int:
        """Body bytes of this blob that left the registry since the last reset."""
        return self.proxy.stats.body_bytes(f"/v2/{self.image.repo}/blobs/{digest}")


@pytest.fixture(scope="module")
def hub_once(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    registry = Registry(tmp_path_factory.mktemp("registry")).start()
    try:
        image = push_image(registry.url, registry.auth, REPO, TAG, LAYER_SIZES, seed=7)
        proxy = CountingProxy(registry.url).start()
        try:
            yield Hub(registry, proxy, image)
        finally:
            proxy.stop()
    finally:
        registry.stop()


@pytest.fixture
def hub(hub_once: Hub) -> Hub:
    hub_once.reset()
    return hub_once


def pull(peers: Peers, name: str, url: str, node: str, *extra: str) -> dict[str, object]:
    """Node ``name`` (its own --home and peer server) pulls the blob at ``url``; its report."""
    return peers.json(name, url, "--node", node, *extra, out=blob_out(name, url))


def blob_out(name: str, url: str) -> str:
    """Where node ``name`` saves the blob at ``url`` in the peers' out directory, so that one
    node can pull several blobs."""
    digest = url.split("?")[0].rsplit("/", 1)[1]
    return f"{name}/{digest.replace(':', '-')}"


def check_result(result: dict[str, object], digest: str, size: int) -> dict[str, int]:
    """The run verified the URL's sha256 and accounts for every byte; returns bytes per kind."""
    assert result["success"] and result["length"] == size, result
    verified = result["verified"]
    assert verified and digest.split(":", 1)[1] in json.dumps(verified), result
    by_kind: dict[str, int] = result["bytes"]  # type: ignore[assignment]
    assert by_kind["peer"] + by_kind["cdn"] + by_kind["source"] == size, by_kind
    return by_kind


def pull_three(hub: Hub, peers: Peers, node: str) -> dict[str, list[dict[str, int]]]:
    """Each layer: node a first, then b and c at the same time (from a and each other)."""
    report: dict[str, list[dict[str, int]]] = {}
    auth = ("--header", hub.auth_header)
    for layer in hub.image.layers:
        url = hub.blob_url(layer.digest)
        first = pull(peers, "a", url, node, *auth)
        with ThreadPoolExecutor(2) as pool:
            runs = [pool.submit(pull, peers, name, url, node, *auth) for name in ("b", "c")]
            later = [run.result() for run in runs]
        kinds = [check_result(r, layer.digest, layer.size) for r in (first, *later)]
        for name in "abc":
            assert sha256_file(peers.out / blob_out(name, url)) == layer.digest
        report[layer.digest] = kinds
    return report


def print_figures(case: str, hub: Hub, report: dict[str, list[dict[str, int]]]) -> None:
    for layer in hub.image.layers:
        kinds = report.get(layer.digest)
        print(
            f"[{case}] {layer.digest[:19]} size {layer.size}: registry sent "
            f"{hub.served(layer.digest)} B (access log {hub.logged(layer.digest, 0, 0)} B); "
            f"per peer {kinds}"
        )


def test_direct_pull_of_each_layer(hub: Hub, tmp_path: Path) -> None:
    report = {}
    for layer in hub.image.layers:
        out = tmp_path / layer.hex
        result = run_dfget(
            [
                "-u", hub.blob_url(layer.digest), "-o", str(out),
                "--header", hub.auth_header, "--pattern", "source", "--json",
            ],
            timeout=60,
        )  # fmt: skip
        assert result.returncode == ExitCode.OK, result.stderr.decode()[-2000:]
        by_kind = check_result(json.loads(result.stdout), layer.digest, layer.size)
        assert by_kind["source"] == layer.size
        assert sha256_file(out) == layer.digest
        assert layer.size <= hub.served(layer.digest) <= layer.size * 1.05
        report[layer.digest] = [by_kind]
    print_figures("direct", hub, report)


def test_local_cdn_three_peers(hub: Hub, supernode: SupernodeFactory, peers: Peers) -> None:
    report = pull_three(hub, peers, supernode().node)
    print_figures("local cdn", hub, report)
    for layer in hub.image.layers:
        first, *later = report[layer.digest]
        assert first["source"] == 0 and first["cdn"] == layer.size, first
        # b and c take pieces from a, each other, or the CDN when a is busy: never the registry.
        assert all(kinds["source"] == 0 for kinds in later), later
        assert sum(kinds["peer"] for kinds in later) > 0, later
        # The supernode's CDN fetched it once, plus its bytes=0-0 probe.
        assert layer.size <= hub.served(layer.digest) <= layer.size * 1.05
        assert hub.logged(layer.digest, hub.served(layer.digest)) == hub.served(layer.digest)


def test_source_pattern_three_peers(hub: Hub, supernode: SupernodeFactory, peers: Peers) -> None:
    node = supernode(cdn_pattern="source", shared_port=True)
    report = pull_three(hub, peers, node.node)
    print_figures("source pattern", hub, report)
    for layer in hub.image.layers:
        first, *later = report[layer.digest]
        assert first["source"] == layer.size, first
        assert all(kinds["source"] == 0 for kinds in later), later
        assert all(kinds["peer"] == layer.size for kinds in later), later
        assert layer.size <= hub.served(layer.digest) <= layer.size * 1.05
        assert hub.logged(layer.digest, hub.served(layer.digest)) == hub.served(layer.digest)


@pytest.mark.parametrize("filtered", [True, False])
def test_signed_urls_share_one_task_with_filter(
    hub: Hub, supernode: SupernodeFactory, peers: Peers, filtered: bool
) -> None:
    """Blob URLs signed per client (as behind a CDN or a token-issuing proxy) differ in their
    query; ``--filter`` drops the signature from the task URL so both peers join one task."""
    layer = hub.image.layers[1]
    node = supernode().node
    extra = ["--header", hub.auth_header, *(["--filter", "sig&exp"] if filtered else [])]
    results = []
    for name, signature in (("a", "c2lnbmVkLWZvci1h"), ("b", "c2lnbmVkLWZvci1i")):
        url = f"{hub.blob_url(layer.digest)}?exp=1700000000&sig={signature}"
        results.append(check_result(pull(peers, name, url, node, *extra), layer.digest, layer.size))
    served = hub.served(layer.digest)
    print(f"[filter={filtered}] registry sent {served} B for {layer.size} B; {results}")
    if filtered:
        assert results[1]["peer"] == layer.size
        assert layer.size <= served <= layer.size * 1.05
    else:  # two tasks: the CDN fetched the layer twice
        assert results[1]["peer"] == 0
        assert served >= 2 * layer.size


def no_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


@pytest.mark.parametrize("mode", ["direct", "local", "source"])
def test_wrong_password_is_exit_100_and_leaves_nothing(
    hub: Hub, supernode: SupernodeFactory, peers: Peers, mode: str
) -> None:
    layer = hub.image.layers[0]
    out_dir = peers.out / "a"
    wrong = ("--header", "Authorization: Basic " + "d3Jvbmc6cGFzc3dvcmQ=")  # wrong:password
    url = hub.blob_url(layer.digest)
    if mode == "direct":
        out_dir.mkdir(parents=True)
        args = ["-u", url, "-o", str(out_dir / "layer"), "--pattern", "source"]
        result = run_dfget([*args, *wrong], timeout=60)
    else:
        node = supernode(cdn_pattern=mode, shared_port=mode == "source")
        args = peers.args("a", url, "--node", node.node, "--json", *wrong, out=blob_out("a", url))
        result = run_dfget(args, timeout=60)
    assert result.returncode == ExitCode.AUTH_REQUIRED, result.stderr.decode()[-2000:]
    assert no_files(out_dir) == [] and no_files(peers.root / "a" / "data") == []
    assert hub.served(layer.digest) < 1024  # only the registry's 401 error documents


@pytest.mark.parametrize("mode", ["direct", "local", "source"])
def test_missing_blob_is_exit_82(
    hub: Hub, supernode: SupernodeFactory, peers: Peers, mode: str
) -> None:
    missing = "sha256:" + hashlib.sha256(b"never pushed").hexdigest()
    out_dir = peers.out / "a"
    auth = ("--header", hub.auth_header)
    if mode == "direct":
        out_dir.mkdir(parents=True)
        args = ["-u", hub.blob_url(missing), "-o", str(out_dir / "layer"), "--pattern", "source"]
        result = run_dfget([*args, *auth], timeout=60)
    else:
        node = supernode(cdn_pattern=mode, shared_port=mode == "source")
        url = hub.blob_url(missing)
        args = peers.args("a", url, "--node", node.node, "--json", *auth, out=blob_out("a", url))
        result = run_dfget(args, timeout=60)
    assert result.returncode == ExitCode.NOT_FOUND, result.stderr.decode()[-2000:]
    assert no_files(out_dir) == [] and no_files(peers.root / "a" / "data") == []


def run_prewarm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DFGET, "prewarm", *args], capture_output=True, text=True, timeout=120)


def test_prewarm_seeds_a_node_for_its_peers(
    hub: Hub, supernode: SupernodeFactory, peers: Peers, tmp_path: Path
) -> None:
    node = supernode()
    # A dfget wrapper that records its argv: the registry password must not be on it.
    argv_log = tmp_path / "argv.log"
    wrapper = tmp_path / "dfget-wrapper.py"
    wrapper.write_text(
        "import runpy, sys\n"
        f"open({str(argv_log)!r}, 'a').write(repr(sys.argv) + '\\n')\n"
        "sys.argv[0] = 'dfget'\n"
        "runpy.run_module('dfget', run_name='__main__')\n"
    )
    home = peers.home("prewarmed")
    out = tmp_path / "blobs"
    result = run_prewarm(
        "--registry", hub.proxy.url, "--repo", REPO, "--tag", TAG,
        "--user", hub.registry.user, f"--password={hub.registry.password}",
        "--output-dir", str(out), "--jobs", "2",
        "--dfget", f"{sys.executable} {wrapper}",
        "--", "--node", node.node, "--home", str(home), "--ip", "127.0.0.1",
        "--expiretime", "60s", "--alivetime", "60s", "--quiet",
    )  # fmt: skip
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    blobs = [hub.image.config, *hub.image.layers]
    lines = [line for line in result.stdout.splitlines() if line.startswith(("ok", "FAIL"))]
    assert len(lines) == len(blobs) and all(line.startswith("ok ") for line in lines), lines
    for blob in blobs:
        assert sha256_file(out / f"sha256-{blob.hex}") == blob.digest
    recorded = argv_log.read_text()
    assert recorded.count("--header-file") == len(blobs)
    assert hub.registry.password not in recorded and hub.registry.auth.split()[1] not in recorded

    # Another node now gets the biggest layer from the pre-warmed one, not from the registry.
    hub.reset()
    biggest = max(hub.image.layers, key=lambda blob: blob.size)
    result_b = pull(
        peers, "b", hub.blob_url(biggest.digest), node.node, "--header", hub.auth_header
    )
    assert check_result(result_b, biggest.digest, biggest.size)["peer"] == biggest.size
    assert hub.served(biggest.digest) <= 1  # at most the supernode's probe


def test_prewarm_fails_clearly(hub: Hub) -> None:
    wrong = run_prewarm(
        "--registry", hub.proxy.url, "--repo", REPO, "--tag", TAG,
        "--user", hub.registry.user, "--password", "not-the-password",
    )  # fmt: skip
    assert wrong.returncode == 2 and "HTTP 401" in wrong.stderr
    unknown = run_prewarm(
        "--registry", hub.proxy.url, "--repo", REPO, "--tag", "no-such-tag",
        "--user", hub.registry.user, f"--password={hub.registry.password}",
    )  # fmt: skip
    assert unknown.returncode == 2 and "HTTP 404" in unknown.stderr
