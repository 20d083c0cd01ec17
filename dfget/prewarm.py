"""``dfget prewarm``: pull every blob of an image with dfget and check it against the manifest.

The manifest is fetched with the Docker schema 2 and OCI ``Accept`` types (for a manifest list or
an OCI index, the ``--platform`` entry is followed), then the config blob and every layer are
pulled by ``dfget`` one process per blob, exactly like dfdaemon would, so they land in this node's
peer server and are served to the other nodes of the P2P network. Arguments after ``--`` go to
every dfget call unchanged.

The registry credentials never appear on a command line: basic auth (or the bearer token obtained
with it from the registry's token service) is written to a 0600 temp file that dfget reads with
``--header-file``. Every file is checked for its size and sha256 against the manifest (dfget also
verifies the digest in the blob URL); one line per blob is printed, and the exit status is 0 only
when every blob is good (1: a blob failed, 2: the manifest could not be fetched).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from dfget.errors import NetworkError

MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
)
INDEX_TYPES = (
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
)
ACCEPT = ", ".join(MANIFEST_TYPES + INDEX_TYPES)


class PrewarmError(NetworkError):
    """The manifest could not be fetched or understood."""


@dataclass(frozen=True)
class BlobRef:
    digest: str
    size: int
    kind: str  # "config" or "layer i/n"


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    """Parse ``Bearer realm="...",service="...",scope="..."``."""
    scheme, _, rest = header.partition(" ")
    params: dict[str, str] = {}
    for part in _split_params(rest):
        name, _, value = part.partition("=")
        params[name.strip().lower()] = value.strip().strip('"')
    return scheme.lower(), params


def _split_params(text: str) -> list[str]:
    parts, current, quoted = [], "", False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    return [p for p in [*parts, current] if p.strip()]


class Registry:
    """Just enough of the distribution API to read a manifest, with basic or token auth."""

    def __init__(self, base: str, repo: str, user: str | None, password: str | None) -> None:
        self.base = base.rstrip("/")
        self.repo = repo
        self.basic = None
        if user is not None:
            pair = f"{user}:{password or ''}".encode()
            self.basic = "Basic " + base64.b64encode(pair).decode()
        self.authorization = self.basic
        self.client = httpx.Client(timeout=60.0, follow_redirects=True)

    def close(self) -> None:
        self.client.close()

    def blob_url(self, digest: str) -> str:
        return f"{self.base}/v2/{self.repo}/blobs/{digest}"

    def _get(self, url: str, accept: str) -> httpx.Response:
        headers = {"Accept": accept}
        if self.authorization:
            headers["Authorization"] = self.authorization
        reply = self.client.get(url, headers=headers)
        challenge = reply.headers.get("WWW-Authenticate", "")
        if reply.status_code == 401 and challenge.lower().startswith("bearer"):
            self.authorization = self._token(challenge)
            headers["Authorization"] = self.authorization
            reply = self.client.get(url, headers=headers)
        return reply

    def _token(self, challenge: str) -> str:
        """Trade the credentials for a pull token at the registry's token service."""
        _, params = _challenge(challenge)
        realm = params.pop("realm", "")
        if not realm:
            raise PrewarmError(f"bearer challenge without realm: {challenge}")
        headers = {"Authorization": self.basic} if self.basic else {}
        query = {k: v for k, v in params.items() if k in ("service", "scope")}
        reply = self.client.get(realm, params=query, headers=headers)
        if reply.status_code != 200:
            raise PrewarmError(f"token service {realm}: HTTP {reply.status_code}")
        document = reply.json()
        token = document.get("token") or document.get("access_token")
        if not token:
            raise PrewarmError(f"token service {realm} returned no token")
        return f"Bearer {token}"

    def manifest(self, reference: str, platform: str) -> dict[str, Any]:
        """The image manifest for ``reference`` (tag or digest), its digest checked."""
        url = f"{self.base}/v2/{self.repo}/manifests/{reference}"
        reply = self._get(url, ACCEPT)
        if reply.status_code != 200:
            raise PrewarmError(f"{url}: HTTP {reply.status_code} {reply.text[:200]}")
        body = reply.content
        actual = "sha256:" + hashlib.sha256(body).hexdigest()
        expected = reference if reference.startswith("sha256:") else None
        expected = expected or reply.headers.get("Docker-Content-Digest")
        if expected and expected.startswith("sha256:") and expected != actual:
            raise PrewarmError(f"manifest digest mismatch: expected {expected}, got {actual}")
        document = json.loads(body)
        if not isinstance(document, dict):
            raise PrewarmError("the manifest is not a JSON object")
        media_type = document.get("mediaType") or reply.headers.get("Content-Type", "")
        if media_type in INDEX_TYPES or "manifests" in document:
            return self.manifest(_pick_platform(document, platform), platform)
        if document.get("schemaVersion") != 2 or "layers" not in document:
            raise PrewarmError(f"unsupported manifest ({media_type or 'schema 1'})")
        return document


def _pick_platform(index: dict[str, Any], platform: str) -> str:
    os_name, _, rest = platform.partition("/")
    arch, _, variant = rest.partition("/")
    for entry in index.get("manifests", []):
        wanted = entry.get("platform", {})
        same = wanted.get("os") == os_name and wanted.get("architecture") == arch
        if same and (not variant or wanted.get("variant") == variant):
            return str(entry["digest"])
    raise PrewarmError(f"no {platform} image in the manifest list")


def blobs_of(manifest: dict[str, Any]) -> list[BlobRef]:
    """Config first, then the layers; each digest once. PrewarmError when malformed."""
    try:
        layers = manifest["layers"]
        config = manifest["config"]
        refs = [BlobRef(_digest(config["digest"]), int(config["size"]), "config")]
        refs += [
            BlobRef(_digest(layer["digest"]), int(layer["size"]), f"layer {i}/{len(layers)}")
            for i, layer in enumerate(layers, 1)
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise PrewarmError(f"malformed manifest: {exc!r}") from exc
    unique: dict[str, BlobRef] = {}
    for ref in refs:
        unique.setdefault(ref.digest, ref)
    return list(unique.values())


def _digest(value: object) -> str:
    """A blob digest as it may go into a URL and a file name: ``algorithm:hex``."""
    text = str(value)
    algorithm, sep, hexdigest = text.partition(":")
    if not (sep and algorithm.isalnum() and hexdigest.isalnum() and hexdigest.isascii()):
        raise ValueError(f"invalid digest {text[:80]!r}")
    return text


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def pull(
    registry: Registry,
    blob: BlobRef,
    out_dir: Path,
    dfget: list[str],
    header_file: Path | None,
    extra: list[str],
) -> tuple[bool, str]:
    """Run dfget for one blob and check the file; returns (ok, the line to print)."""
    algorithm, _, hexdigest = blob.digest.partition(":")
    output = out_dir / f"{algorithm}-{hexdigest}"
    command = [*dfget, "-u", registry.blob_url(blob.digest), "-o", str(output)]
    if header_file is not None:
        command += ["--header-file", str(header_file)]
    started = time.monotonic()
    result = subprocess.run([*command, *extra], capture_output=True, text=True)
    elapsed = time.monotonic() - started
    label = f"{blob.digest} {blob.size:>12} B  {blob.kind:<12}"
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        reason = lines[-1] if lines else ""
        return False, f"FAIL {label} dfget exit {result.returncode}: {reason}"
    if not output.is_file():
        return False, f"FAIL {label} dfget left no file at {output}"
    size = output.stat().st_size
    if size != blob.size:
        return False, f"FAIL {label} size {size} differs from the manifest"
    if algorithm == "sha256" and sha256_file(output) != blob.digest:
        return False, f"FAIL {label} sha256 differs from the manifest"
    return True, f"ok   {label} {elapsed:6.1f}s"


def run(
    registry_url: str,
    repo: str,
    tag: str,
    *,
    user: str | None,
    password: str | None,
    platform: str,
    output_dir: Path | None,
    jobs: int,
    dfget: list[str],
    extra: list[str],
) -> int:
    """Pre-warm ``repo:tag``; prints one line per blob; returns the exit status."""
    registry = Registry(registry_url, repo, user, password)
    scratch = Path(tempfile.mkdtemp(prefix="prewarm-"))
    try:
        try:
            blobs = blobs_of(registry.manifest(tag, platform))
        except (PrewarmError, httpx.HTTPError, ValueError) as error:
            print(f"dfget prewarm: {repo}:{tag}: {error}", file=sys.stderr)
            return 2
        header_file = None
        if registry.authorization:
            header_file = scratch / "headers"
            fd = os.open(header_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(f"Authorization: {registry.authorization}\n")
        out_dir = output_dir or scratch / "blobs"
        out_dir.mkdir(parents=True, exist_ok=True)
        failures = 0
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            results = pool.map(
                lambda blob: pull(registry, blob, out_dir, dfget, header_file, extra), blobs
            )
            for ok, line in results:
                failures += not ok
                print(line, flush=True)
        total = sum(blob.size for blob in blobs)
        status = "ok" if not failures else f"{failures} of {len(blobs)} blobs FAILED"
        print(f"{repo}:{tag}: {len(blobs)} blobs, {total} bytes: {status}", flush=True)
        return 1 if failures else 0
    finally:
        registry.close()
        shutil.rmtree(scratch, ignore_errors=True)
