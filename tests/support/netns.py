"""Run a test script inside a private network namespace whose loopback interface also carries two
non-loopback addresses: a server bound to one sees a caller from the other as a remote peer.

Needs root (``unshare -n``); nothing leaves the namespace, which ends with the script.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.support.helpers import REPO

SERVER_IP = "10.77.0.2"
REMOTE_IP = "10.77.0.1"
SETUP = (
    f"ip link set lo up && ip addr add {REMOTE_IP}/24 dev lo && ip addr add {SERVER_IP}/24 dev lo"
)


def run_in_private_network(script: str, *args: str, timeout: float = 60.0) -> object:
    """Run ``script`` (Python, printing one JSON document) in a new network namespace with
    SERVER_IP and REMOTE_IP configured; returns what it printed. Skips where namespaces
    cannot be made (not root, no iproute2)."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip (iproute2)")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {probe.stderr.decode().strip()}")
    result = subprocess.run(
        [
            "unshare",
            "-n",
            "sh",
            "-c",
            f'{SETUP} && exec "$@"',
            "sh",
            sys.executable,
            "-c",
            script,
            *args,
        ],  # fmt: skip
        capture_output=True,
        timeout=timeout,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    return json.loads(result.stdout)
