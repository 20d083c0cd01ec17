"""Resuming interrupted downloads: only the missing bytes are fetched again, stored bytes are
verified (xxh3), a changed source restarts clean, and nothing is left beside the output."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from dfget.errors import ExitCode
from tests.support.helpers import random_bytes, run_dfget, start_dfget
from tests.support.origin import Origin
from tests.support.servers import SupernodeFactory

SIZE = 16 * 1024 * 1024


def _args(url: str, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "-u", url, "-o", str(tmp_path / "out" / "blob.bin"), "--home", str(tmp_path / "home"),
        "--pattern", "source", "--json", *extra,
    ]  # fmt: skip


def _interrupt(
    args: list[str], tmp_path: Path, signum: int = signal.SIGKILL, times: int = 1
) -> int:
    """Start a download, stop it once some data is journaled (``times`` signals, 2 ms apart,
    like an impatient Ctrl-C); returns its exit status."""
    proc = start_dfget(args)
    partial = tmp_path / "home" / "partial"
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            records = list(partial.glob("*.json")) if partial.is_dir() else []
            if records and json.loads(records[0].read_text() or "{}").get("extents"):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the download never journaled any data")
        for _ in range(times):
            proc.send_signal(signum)
            time.sleep(0.002)
        _, err = proc.communicate(timeout=20)
        assert b"Traceback" not in err, err.decode()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


def _settle(origin: Origin) -> None:
    """Wait until the origin stopped sending to the killed client, then zero its counters."""
    deadline = time.monotonic() + 10
    last = -1
    while time.monotonic() < deadline and origin.stats.body_bytes != last:
        last = origin.stats.body_bytes
        time.sleep(0.3)
    origin.reset_stats()


def _throttled(origin: Origin, data: bytes, path: str = "/blob.bin") -> str:
    url = origin.add(path, data)
    origin.behave(path, rate=2 * 1024 * 1024)
    return url


def _run(url: str, tmp_path: Path, *extra: str) -> dict[str, object]:
    result = run_dfget(_args(url, tmp_path, *extra), timeout=120)
    assert result.returncode == ExitCode.OK, result.stderr.decode()[-2000:]
    return json.loads(result.stdout)


def _out_dir_clean(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert [p.name for p in out.iterdir()] in ([], ["blob.bin"])


def test_sigkill_then_rerun_fetches_only_the_missing_part(origin: Origin, tmp_path: Path) -> None:
    data = random_bytes(SIZE, seed=21)
    url = _throttled(origin, data)
    assert _interrupt(_args(url, tmp_path), tmp_path) == -signal.SIGKILL
    _out_dir_clean(tmp_path)
    origin.behave("/blob.bin")
    _settle(origin)
    result = _run(url, tmp_path)
    resumed = int(result["resumed_bytes"])  # type: ignore[call-overload]
    assert 0 < resumed < SIZE
    assert origin.stats.body_bytes == SIZE - resumed + 1  # +1: the identity check (bytes=0-0)
    assert result["bytes"]["resumed"] == resumed  # type: ignore[index]
    assert (tmp_path / "out" / "blob.bin").read_bytes() == data
    assert not list((tmp_path / "home" / "partial").iterdir())


def test_sigterm_keeps_partial_state_and_no_litter(origin: Origin, tmp_path: Path) -> None:
    data = random_bytes(SIZE, seed=22)
    url = _throttled(origin, data)
    assert _interrupt(_args(url, tmp_path), tmp_path, signal.SIGTERM) == ExitCode.TERMINATED
    _out_dir_clean(tmp_path)
    assert not (tmp_path / "out" / "blob.bin").exists()
    assert list((tmp_path / "home" / "partial").glob("*.data"))
    origin.behave("/blob.bin")
    result = _run(url, tmp_path)
    assert int(result["resumed_bytes"]) > 0  # type: ignore[call-overload]
    assert (tmp_path / "out" / "blob.bin").read_bytes() == data


@pytest.mark.parametrize("attempt", range(3))
def test_ctrl_c_pressed_again_during_cleanup_still_keeps_the_partial_data(
    origin: Origin, tmp_path: Path, attempt: int
) -> None:
    """A second Ctrl-C used to raise inside the cleanup and could skip keeping the data."""
    url = _throttled(origin, random_bytes(SIZE, seed=24 + attempt))
    code = _interrupt(_args(url, tmp_path), tmp_path, signal.SIGINT, times=3)
    assert code == ExitCode.INTERRUPTED
    _out_dir_clean(tmp_path)
    (record,) = (tmp_path / "home" / "partial").glob("*.json")
    assert json.loads(record.read_text())["extents"]
    assert record.with_suffix(".data").stat().st_size > 0


def test_corrupted_stored_bytes_are_fetched_again(origin: Origin, tmp_path: Path) -> None:
    data = random_bytes(SIZE, seed=23)
    url = _throttled(origin, data)
    _interrupt(_args(url, tmp_path), tmp_path)
    (record,) = (tmp_path / "home" / "partial").glob("*.json")
    start, end, _ = json.loads(record.read_text())["extents"][0]
    stored = record.with_suffix(".data")
    with open(stored, "r+b") as fh:
        fh.seek((start + end) // 2)
        byte = fh.read(1)
        fh.seek((start + end) // 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    origin.behave("/blob.bin")
    _settle(origin)
    result = _run(url, tmp_path)
    resumed = int(result["resumed_bytes"])  # type: ignore[call-overload]
    assert origin.stats.body_bytes == SIZE - resumed + 1  # +1: the identity check (bytes=0-0)
    assert origin.stats.body_bytes > end - start  # the corrupted extent came again
    assert (tmp_path / "out" / "blob.bin").read_bytes() == data


@pytest.mark.parametrize("change", ["length", "etag"])
def test_changed_source_restarts_clean(origin: Origin, tmp_path: Path, change: str) -> None:
    data = random_bytes(SIZE, seed=24)
    url = _throttled(origin, data)
    if change == "etag":
        origin.behave("/blob.bin", rate=2 * 1024 * 1024, etag='"v1"')
    _interrupt(_args(url, tmp_path), tmp_path)
    new = random_bytes(SIZE + (1000 if change == "length" else 0), seed=25)
    origin.add("/blob.bin", new)
    origin.behave("/blob.bin", etag='"v2"' if change == "etag" else None)
    _settle(origin)
    result = run_dfget(_args(url, tmp_path), timeout=120)
    assert result.returncode == ExitCode.OK, result.stderr.decode()
    assert b"the source changed" in result.stderr
    assert json.loads(result.stdout)["resumed_bytes"] == 0
    assert (tmp_path / "out" / "blob.bin").read_bytes() == new


def test_no_resume_starts_clean(origin: Origin, tmp_path: Path) -> None:
    data = random_bytes(SIZE, seed=26)
    url = _throttled(origin, data)
    _interrupt(_args(url, tmp_path), tmp_path)
    origin.behave("/blob.bin")
    _settle(origin)
    result = _run(url, tmp_path, "--no-resume")
    assert result["resumed_bytes"] == 0 and origin.stats.body_bytes == SIZE
    assert not list((tmp_path / "home" / "partial").iterdir())


def test_old_partial_state_is_collected(origin: Origin, tmp_path: Path) -> None:
    data = random_bytes(SIZE, seed=27)
    url = _throttled(origin, data)
    _interrupt(_args(url, tmp_path), tmp_path)
    other = origin.add("/other.bin", b"x" * 1000)
    partial = tmp_path / "home" / "partial"
    old = time.time() - 3600
    for path in partial.iterdir():
        os.utime(path, (old, old))
    run_dfget(_args(other, tmp_path, "--partial-max-age", "10m"), timeout=60)
    assert not list(partial.glob("*.data"))


def test_p2p_download_resumes_and_tells_the_supernode(
    origin: Origin, supernode: SupernodeFactory, tmp_path: Path
) -> None:
    data = random_bytes(SIZE, seed=28)
    url = origin.add("/p2p.bin", data)
    node = supernode()
    args = [
        "-u", url, "-o", str(tmp_path / "out" / "blob.bin"), "--home", str(tmp_path / "home"),
        "--node", node.node, "--ip", "127.0.0.1", "--json", "--alivetime", "30s",
    ]  # fmt: skip
    try:
        _interrupt([*args, "--locallimit", "4M"], tmp_path)
        _out_dir_clean(tmp_path)
        result = run_dfget(args, timeout=120)
        assert result.returncode == ExitCode.OK, result.stderr.decode()[-2000:]
        summary = json.loads(result.stdout)
        resumed = int(summary["resumed_bytes"])
        assert 0 < resumed < SIZE, summary
        assert summary["bytes"]["cdn"] + resumed == SIZE, summary  # nothing fetched twice
        assert (tmp_path / "out" / "blob.bin").read_bytes() == data
    finally:
        pid_file = tmp_path / "home" / "meta" / "server.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
