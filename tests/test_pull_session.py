"""The P2P side of a download in-process: P2PDownload and its PullSession against stand-in
supernodes (tests/support/standin_supernode.py), with the real piece fetcher moving real bytes
from an origin (and a "peer") on 127.0.0.1. No dfget process, no supernode process: what is
asserted is the conversation with the supernode and where every byte came from."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dfget.config import Node, Settings
from dfget.download.accounting import PEER, SOURCE, Accounting
from dfget.download.cancel import Cancel
from dfget.download.network import Identity
from dfget.download.p2p import P2PDownload
from dfget.download.progress import Progress
from dfget.download.pull_session import MAX_PIECE_FAILURES
from dfget.download.target import Target
from dfget.errors import P2PFallback, SupernodeAuthError
from dfget.net.client import Pool
from dfget.net.tokenbucket import TokenBucket
from dfget.protocol.codes import (
    CODE_NEED_AUTH,
    CODE_PEER_FINISH,
    CODE_SYSTEM_ERROR,
    CODE_URL_NOT_REACHABLE,
    REASON_NONE,
    REASON_P2P_ERROR,
    REASON_REGISTER_FAILED,
    RESULT_FAILED,
    RESULT_SEMI_SUCCESS,
)
from dfget.protocol.messages import PullAnswer, SupernodeError
from tests.support.helpers import random_bytes
from tests.support.origin import Origin
from tests.support.standin_supernode import Holder, StandInSupernode

PIECE = 256 * 1024
DATA = random_bytes(10 * PIECE + 1234, seed=11)  # 11 pieces, the last one short
PIECES = 11


@pytest.fixture
def blob(origin: Origin) -> str:
    origin.add("/peer/file/blob-1-2.3", DATA)  # what a "peer" serves: the same bytes
    return origin.add("/blob", DATA)


def standin(address: str, url: str, **kwargs: object) -> StandInSupernode:
    kwargs.setdefault("holder", lambda piece, times: Holder(url))
    return StandInSupernode(Node.parse(address), len(DATA), PIECE, **kwargs)  # type: ignore[arg-type]


class Run:
    """One P2PDownload into a work file under ``root``, against the given stand-ins."""

    def __init__(self, root: Path, url: str, *apis: StandInSupernode, timeout: float = 30) -> None:
        self.apis = {api.node.address: api for api in apis}
        self.output = root / "out.bin"
        self.settings = Settings(url=url, output=self.output, nodes=tuple(a.node for a in apis))
        self.target = Target(root / "out.bin.work", self.output, [])
        self.accounting = Accounting()
        self.pool = Pool()
        self.closed = False
        self.p2p = P2PDownload(
            self.settings,
            Identity("127.0.0.1", "1-2.3", "127.0.0.1-1-2.3", "out.bin-1-2.3"),
            list(self.settings.nodes),
            self.target,
            server=None,
            headers=[("Authorization", "Bearer secret")],
            accounting=self.accounting,
            progress=Progress(False),
            bucket=TokenBucket(0),
            cancel=Cancel(time.monotonic() + timeout),
            pool=self.pool,
            task_key=url,
            connect=lambda node: self.apis[node.address],
        )

    def __call__(self) -> int:
        return self.p2p.run(time.monotonic())

    def publish(self, length: int) -> bytes:
        self.target.commit(length)
        return self.output.read_bytes()

    def close(self) -> None:
        """Stop the reporters (waiting for reports still queued) and the pool; idempotent."""
        if not self.closed:
            self.closed = True
            self.p2p.close()
            self.pool.close()


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for run in started:
        run.close()


def start(runs: list[Run], root: Path, url: str, *apis: StandInSupernode, **kw: float) -> Run:
    run = Run(root, url, *apis, **kw)
    runs.append(run)
    return run


def test_every_piece_comes_from_where_the_supernode_sent_it_and_is_reported_once(
    runs: list[Run], tmp_path: Path, origin: Origin, blob: str
) -> None:
    peer_pieces = {1, 4, 7}

    def holder(piece: int, times: int) -> Holder:
        if piece in peer_pieces:
            return Holder("/peer/file/blob-1-2.3", "10.0.0.9-7-1.0", "127.0.0.1", origin.port)
        return Holder(blob)

    api = standin("127.0.0.1:8002", blob, holder=holder)
    run = start(runs, tmp_path, blob, api)

    assert run() == len(DATA)
    assert run.publish(len(DATA)) == DATA
    by_kind = run.accounting.bytes_by_kind()
    peer_bytes = sum(min(PIECE, len(DATA) - p * PIECE) for p in peer_pieces)
    assert by_kind[PEER] == peer_bytes and by_kind[SOURCE] == len(DATA) - peer_bytes
    # One origin request per source piece, one per peer piece: nothing fetched twice.
    assert origin.stats.count("/blob") == PIECES - len(peer_pieces)
    assert origin.stats.count("/peer/file/blob-1-2.3") == len(peer_pieces)
    # Each piece reported stored exactly once (/peer/piece/suc), naming its holder.
    run.close()  # sends what the background reporter still has queued
    reported = sorted(api.stored_reports, key=lambda report: int(report[1].split("-")[0]))
    assert [piece_range for _, piece_range in reported] == [
        f"{p * PIECE}-{(p + 1) * PIECE - 1}" for p in range(PIECES)
    ]
    assert {cid for cid, _ in reported if cid != "source"} == {"10.0.0.9-7-1.0"}
    assert [int(r.split("-")[0]) // PIECE for cid, r in reported if cid != "source"] == [1, 4, 7]
    # The user's Authorization went to the origin's own URL only, never to the "peer".
    sent = {r.path: r.headers.get("Authorization") for r in origin.stats.requests}
    assert sent["/blob"] == "Bearer secret" and sent["/peer/file/blob-1-2.3"] is None
    # Peer bytes are suspects should the file's digest fail; origin bytes are not.
    assert {d.task.piece_num for d in run.p2p.delivered} == peer_pieces
    assert api.pulls[0].status == 700 and api.pulls[0].range == ""


def test_a_failed_piece_is_reported_failed_in_the_next_pull_and_fetched_again(
    runs: list[Run], tmp_path: Path, origin: Origin, blob: str
) -> None:
    dead = Holder("/peer/file/gone", "10.0.0.8-1-1.0", "127.0.0.1", 9)  # discard port: refused
    api = standin(
        "127.0.0.1:8002",
        blob,
        holder=lambda piece, times: dead if piece == 2 and times == 0 else Holder(blob),
    )
    run = start(runs, tmp_path, blob, api)

    assert run() == len(DATA)
    assert run.publish(len(DATA)) == DATA
    failed = [p for p in api.pulls if p.result == RESULT_FAILED]
    assert [(p.dst_cid, p.range) for p in failed] == [
        ("10.0.0.8-1-1.0", f"{2 * PIECE}-{3 * PIECE - 1}")
    ]
    assert api.handed_out[2] == 2
    failures = [h for h in run.accounting.holders.values() if h.failures]
    assert [h.address for h in failures] == ["127.0.0.1:9"]


def test_a_piece_that_keeps_failing_hands_over_to_the_source(
    runs: list[Run], tmp_path: Path, origin: Origin, blob: str
) -> None:
    dead = Holder("/peer/file/gone", "10.0.0.8-1-1.0", "127.0.0.1", 9)
    api = standin(
        "127.0.0.1:8002",
        blob,
        holder=lambda piece, times: dead if piece == 0 else Holder(blob),
    )
    run = start(runs, tmp_path, blob, api)

    with pytest.raises(P2PFallback) as caught:
        run()
    assert caught.value.reason == REASON_P2P_ERROR
    assert f"piece 0 failed {MAX_PIECE_FAILURES} times" in str(caught.value)
    # What landed stays on disk for the source to complete; piece 0 is missing.
    assert run.target.missing(len(DATA))[0] == (0, PIECE)


def test_a_migration_keeps_the_pieces_on_disk_and_tells_the_new_supernode(
    runs: list[Run], tmp_path: Path, origin: Origin, blob: str
) -> None:
    first = standin("127.0.0.1:8002", blob)
    second = standin("127.0.0.2:8002", blob, task_id="b" * 64)
    apis = sorted([first, second], key=lambda a: a.node.address)
    run = start(runs, tmp_path, blob, *apis)
    preferred, other = (apis[0], apis[1]) if _prefers(run, apis[0]) else (apis[1], apis[0])
    preferred.script[4] = SupernodeError("connection reset")  # after three pulls' worth

    assert run() == len(DATA)
    assert run.publish(len(DATA)) == DATA
    assert run.p2p.state.tried == [preferred.node.address, other.node.address]
    # Not a byte fetched twice: pieces stored before the migration are reported to the new
    # supernode as already held when it assigns them.
    assert origin.stats.count("/blob") == PIECES
    held_before = set(preferred.stored)
    assert held_before, "some pieces landed before the migration"
    # Pieces on disk already are not fetched again: the new supernode learns of them from the
    # pull that answers its assignment, never from a fresh /peer/piece/suc.
    run.close()
    pulled = {
        int(p.range.split("-")[0]) // PIECE for p in other.pulls if p.result == RESULT_SEMI_SUCCESS
    }
    fresh = {int(r.split("-")[0]) // PIECE for _, r in other.stored_reports}
    assert held_before <= pulled and not held_before & fresh
    # Each report names the task as the supernode it went to registered it.
    assert preferred.stored_task_ids <= {preferred.task_id}
    assert other.stored_task_ids <= {other.task_id}


def _prefers(run: Run, api: StandInSupernode) -> bool:
    return run.p2p.registrar.nodes[0] == api.node


def test_registration_walks_past_an_unreachable_supernode(
    runs: list[Run], tmp_path: Path, origin: Origin, blob: str
) -> None:
    apis = [standin("127.0.0.1:8002", blob), standin("127.0.0.2:8002", blob)]
    run = start(runs, tmp_path, blob, *apis)
    down, up = (apis[0], apis[1]) if _prefers(run, apis[0]) else (apis[1], apis[0])
    down.reachable = False

    assert run() == len(DATA)
    assert run.p2p.state.tried == [up.node.address]
    (request,) = up.registrations
    assert request.raw_url == blob and request.port == 0  # not serving: no peer server
    assert request.cid == "127.0.0.1-1-2.3" and request.path == "/peer/file/out.bin-1-2.3"
    assert request.headers == ("Authorization: Bearer secret",)  # the CDN may need them


def test_registration_answers_decide_between_fallback_and_auth_error(
    runs: list[Run], tmp_path: Path, blob: str
) -> None:
    run = start(runs, tmp_path, blob, standin("127.0.0.1:8002", blob, register_code=CODE_NEED_AUTH))
    with pytest.raises(SupernodeAuthError):
        run()
    run = start(
        runs,
        tmp_path / "b",
        blob,
        standin("127.0.0.1:8002", blob, register_code=CODE_URL_NOT_REACHABLE),
    )
    with pytest.raises(P2PFallback) as caught:
        run()
    assert caught.value.reason == REASON_REGISTER_FAILED and "607" in str(caught.value)


def test_an_unexpected_answer_with_no_other_supernode_falls_back(
    runs: list[Run], tmp_path: Path, origin: Origin, blob: str
) -> None:
    api = standin("127.0.0.1:8002", blob)
    api.script[2] = PullAnswer(CODE_SYSTEM_ERROR, "boom")
    run = start(runs, tmp_path, blob, api)
    with pytest.raises(P2PFallback) as caught:
        run()
    assert caught.value.reason == REASON_P2P_ERROR and "code 500 boom" in str(caught.value)


def test_finished_while_ranges_are_missing_is_not_trusted(
    runs: list[Run], tmp_path: Path, origin: Origin, blob: str
) -> None:
    api = standin("127.0.0.1:8002", blob)
    api.script[1] = PullAnswer(CODE_PEER_FINISH)
    run = start(runs, tmp_path, blob, api)
    with pytest.raises(P2PFallback) as caught:
        run()
    assert "1 range(s) are missing" in str(caught.value)
    assert origin.stats.count("/blob") == 0


def test_the_deadline_ends_the_pull_loop(
    runs: list[Run], tmp_path: Path, origin: Origin, blob: str
) -> None:
    origin.behave("/blob", rate=128 * 1024)  # a 256 KiB piece takes 2 s
    api = standin("127.0.0.1:8002", blob)
    run = start(runs, tmp_path, blob, api, timeout=1.0)
    with pytest.raises(P2PFallback) as caught:
        run()
    assert caught.value.reason == REASON_NONE and "timed out" in str(caught.value)
    # The running fetches were cancelled, not awaited: none of them stored its piece, and
    # nothing was reported to the supernode as held.
    assert run.target.missing(len(DATA)) == [(0, len(DATA))]
    run.close()
    assert api.stored_reports == [] and api.stored == set()


def test_metrics_go_once_with_v1_keys_and_without_empty_values(
    runs: list[Run], tmp_path: Path, origin: Origin, blob: str
) -> None:
    api = standin("127.0.0.1:8002", blob)
    run = start(runs, tmp_path, blob, api)
    length = run()
    run.p2p.metrics(True, 0, 1.5, length)
    (body,) = api.metrics_sent
    assert body == {
        "IP": "127.0.0.1",
        "backsourceReason": "0",
        "cID": "127.0.0.1-1-2.3",
        "duration": 1.5,
        "fileLength": len(DATA),
        "success": True,
        "taskId": "a" * 64,
    }
