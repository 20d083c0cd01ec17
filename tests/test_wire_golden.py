"""Golden tests: the bytes our dfget sends to a v1.0.6 supernode match the Go dfget's
(shared/spec/wire-transcript-v1.0.6.md §1), with run-dependent values abstracted."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dfget.errors import ExitCode
from tests.support.helpers import random_bytes, run_dfget
from tests.support.origin import Origin
from tests.support.scripted_supernode import ScriptedSupernode

CID = r"127\.0\.0\.1-\d+-\d+\.\d{3}"


@pytest.fixture
def scripted(origin: Origin) -> Iterator[ScriptedSupernode]:
    data = random_bytes(10 * 1024 * 1024 + 123, seed=7)
    url = origin.add("/file10m.bin", data)
    sn = ScriptedSupernode(url, data)
    yield sn
    sn.stop()


def _run(sn: ScriptedSupernode, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[bytes]:
    """Our dfget against the scripted supernode, cdn pattern, output at <tmp>/out/a.bin."""
    return run_dfget(
        [
            "-u", sn.url, "-o", str(tmp_path / "out" / "a.bin"), "--node", sn.address,
            "--home", str(tmp_path / "h"), "--ip", "127.0.0.1", "--pattern", "cdn", *extra,
        ],
        timeout=90,
    )  # fmt: skip


def _download(sn: ScriptedSupernode, tmp_path: Path, *extra: str) -> Path:
    result = _run(sn, tmp_path, *extra)
    assert result.returncode == ExitCode.OK, result.stderr.decode()
    out = tmp_path / "out" / "a.bin"
    assert out.read_bytes() == sn.data
    return out


def test_register_body_has_dfget_keys_in_v1_order(
    scripted: ScriptedSupernode, tmp_path: Path
) -> None:
    _download(scripted, tmp_path)
    (register,) = scripted.of("/peer/registry")
    assert (
        dict((k.lower(), v) for k, v in register.headers)["content-type"]
        == "application/json;charset=utf-8"
    )
    body = json.loads(register.body)
    assert list(body) == [
        "superNodeIp",
        "rawUrl",
        "taskUrl",
        "cid",
        "ip",
        "hostName",
        "port",
        "path",
        "version",
    ]
    assert body["superNodeIp"] == "127.0.0.1"
    assert body["rawUrl"] == body["taskUrl"] == scripted.url
    assert re.fullmatch(CID, body["cid"])
    assert body["path"] == "/peer/file/a.bin-" + body["cid"].split("-", 1)[1]
    assert body["port"] == 0 and body["version"] == "1.0.6"
    assert not register.body.endswith(b"\n")


def test_query_url_is_go_escaped_in_the_register_body(origin: Origin, tmp_path: Path) -> None:
    data = random_bytes(1000, seed=3)
    origin.add("/file10m.bin", data)
    sn = ScriptedSupernode(origin.url("/file10m.bin?mode=src&n=1"), data)
    try:
        _download(sn, tmp_path)
        (register,) = sn.of("/peer/registry")
        assert (
            b'"rawUrl":"' + origin.url("/file10m.bin?mode=src\\u0026n=1").encode() + b'"'
            in register.body
        )
    finally:
        sn.stop()


def test_pull_and_report_queries_in_v1_order_unescaped(
    scripted: ScriptedSupernode, tmp_path: Path
) -> None:
    _download(scripted, tmp_path)
    pulls = scripted.of("/peer/task")
    first = pulls[0].path
    assert re.fullmatch(
        rf"/peer/task\?srcCid={CID}&dstCid=&range=&result=502&status=700&taskId={scripted.task_id}",
        first,
    )
    later = [p.path for p in pulls if "status=701" in p.path]
    assert later, "no pull reported a piece"
    pattern = (
        rf"/peer/task\?srcCid={CID}&dstCid={re.escape(scripted.cdn_cid)}"
        rf"&range=\d+-\d+&result=503&status=701&taskId={scripted.task_id}"
    )
    assert all(re.fullmatch(pattern, p) for p in later), later
    reports = [r.path for r in scripted.of("/peer/piece/suc")]
    assert len(reports) == scripted.count
    assert all(
        re.fullmatch(
            rf"/peer/piece/suc\?taskId={scripted.task_id}&cid={CID}&dstCid={re.escape(scripted.cdn_cid)}&pieceRange=\d+-\d+",
            r,
        )
        for r in reports
    ), reports


def test_piece_requests_carry_v1_headers(scripted: ScriptedSupernode, tmp_path: Path) -> None:
    _download(scripted, tmp_path)
    pieces = scripted.of(f"/download/{scripted.task_id[:3]}/{scripted.task_id}")
    assert len(pieces) == scripted.count
    for request in pieces:
        headers = {k.lower(): v for k, v in request.headers}
        k = int(headers["piecenum"])
        assert headers["piecesize"] == "4194304"
        assert headers["range"] == f"bytes={k * 4194304}-{(k + 1) * 4194304 - 1}"
        assert headers["user-agent"] == "dfget/1.0.6"
        assert "accept-encoding" not in headers or "zstd" not in headers["accept-encoding"]


def test_metrics_sent_once_with_go_keys(scripted: ScriptedSupernode, tmp_path: Path) -> None:
    _download(scripted, tmp_path)
    (metrics,) = scripted.of("/task/metrics")
    body = json.loads(metrics.body)
    assert list(body) == sorted(body, key=str.lower) or list(body) == sorted(body)
    assert body["success"] is True and body["backsourceReason"] == "0"
    assert body["fileLength"] == len(scripted.data) and body["taskId"] == scripted.task_id
    assert isinstance(body["duration"], float)


def test_corrupt_piece_is_reported_and_never_written(
    scripted: ScriptedSupernode, tmp_path: Path
) -> None:
    scripted.corrupt_pieces.add(1)
    out = tmp_path / "out" / "a.bin"
    result = _run(scripted, tmp_path, "--notbs")
    assert result.returncode == ExitCode.P2P_FAILED, result.stderr.decode()
    assert b"piece 1 failed 5 times" in result.stderr
    assert not out.exists()
    assert not any((tmp_path / "out").iterdir())
    errors = scripted.of("/peer/piece/error")
    assert errors and "errorType=FILE_MD5_NOT_MATCH" in errors[0].path


def test_failing_piece_falls_back_to_source_for_that_range_only(
    origin: Origin, scripted: ScriptedSupernode, tmp_path: Path
) -> None:
    scripted.corrupt_pieces.add(1)
    out = _download(scripted, tmp_path)
    assert out.read_bytes() == scripted.data
    capacity = 4 * 1024 * 1024 - 5
    assert origin.stats.body_bytes == capacity  # exactly piece 1, nothing else
    ranges = [r.range for r in origin.stats.requests]
    assert ranges == [f"bytes={capacity}-{2 * capacity - 1}"]


def test_timeout_bounds_a_p2p_download_that_never_gets_pieces(
    origin: Origin, scripted: ScriptedSupernode, tmp_path: Path
) -> None:
    scripted.waits_before_pieces = 10**9  # 602 forever
    out = tmp_path / "out" / "a.bin"
    result = _run(scripted, tmp_path, "--timeout", "2s")
    assert result.returncode == ExitCode.TIMEOUT, result.stderr.decode()
    assert b"timeout" in result.stderr
    assert not out.exists() and not origin.stats.requests
