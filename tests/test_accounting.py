"""Accounting in-process: where every piece came from, as the summary line, --json and --trace
report it."""

from __future__ import annotations

import threading
from pathlib import Path

from dfget.download.accounting import CDN, PEER, RESUMED, SOURCE, Accounting
from dfget.download.trace import Trace, read_events

MiB = 1024 * 1024


def test_pieces_from_one_holder_add_up_and_every_kind_is_reported() -> None:
    tally = Accounting()
    tally.record(PEER, "10.0.0.2:15001", 4 * MiB, 0.5, cid="c2")
    tally.record(PEER, "10.0.0.2:15001", 4 * MiB, 0.25, cid="c2")
    tally.record(SOURCE, "source", 1000, 0.1)

    assert tally.bytes_by_kind() == {PEER: 8 * MiB, CDN: 0, SOURCE: 1000, RESUMED: 0}
    (peer, source) = tally.as_json()
    assert peer == {
        "kind": PEER, "address": "10.0.0.2:15001", "cid": "c2",
        "pieces": 2, "bytes": 8 * MiB, "seconds": 0.75, "failures": 0,
    }  # fmt: skip
    assert (source["kind"], source["pieces"], source["bytes"]) == (SOURCE, 1, 1000)


def test_the_same_address_as_peer_and_as_cdn_is_two_holders() -> None:
    tally = Accounting()
    tally.record(PEER, "10.0.0.9:8002", 100, 0.0)
    tally.record(CDN, "10.0.0.9:8002", 300, 0.0)
    assert [(h["kind"], h["bytes"]) for h in tally.as_json()] == [(CDN, 300), (PEER, 100)]


def test_failures_count_per_holder_without_pieces_or_bytes() -> None:
    tally = Accounting()
    tally.failure(PEER, "10.0.0.3:15001", cid="c3")
    tally.failure(PEER, "10.0.0.3:15001", cid="c3")
    tally.record(PEER, "10.0.0.4:15001", 10, 0.0)
    failed = next(h for h in tally.as_json() if h["address"] == "10.0.0.3:15001")
    assert (failed["failures"], failed["pieces"], failed["bytes"]) == (2, 0, 0)
    assert failed["cid"] == "c3"
    # The summary names where pieces came from: a holder that only failed is not one.
    assert tally.summary() == "1 pieces: 1 from peer 10.0.0.4:15001 (10 B)"


def test_summary_lists_holders_by_bytes_and_says_why_the_source_was_used() -> None:
    tally = Accounting()
    tally.record(SOURCE, "source", 11 * 4 * MiB, 1.0, pieces=11)
    tally.record(PEER, "10.0.0.2:15001", 40 * 4 * MiB, 1.0, pieces=40)
    tally.record(CDN, "10.0.0.1:8001", 4 * MiB, 1.0)
    tally.why_source("the supernode is unreachable")
    assert tally.summary() == (
        "52 pieces: 40 from peer 10.0.0.2:15001 (160.0 MiB), 11 from source (44.0 MiB), "
        "1 from supernode CDN 10.0.0.1:8001 (4.0 MiB); "
        "source used because the supernode is unreachable"
    )


def test_the_reasons_for_the_source_are_left_out_when_it_served_nothing() -> None:
    tally = Accounting()
    tally.why_source("--pattern source")
    tally.record(RESUMED, "earlier attempt", 500, 0.0, pieces=2)
    assert tally.summary() == "2 pieces: 2 from resumed (500 B)"
    assert tally.reasons() == ["--pattern source"]
    assert Accounting().summary() == "0 pieces"


def test_each_reason_for_the_source_is_kept_once_in_order() -> None:
    tally = Accounting()
    for reason in ("b: peers failed", "a: no supernode", "b: peers failed"):
        tally.why_source(reason)
    assert tally.reasons() == ["b: peers failed", "a: no supernode"]


def test_pieces_the_supernode_sent_to_the_source_are_explained_with_the_other_peers() -> None:
    tally = Accounting()
    tally.source_assigned()
    tally.source_assigned()
    assert tally.reasons() == [
        "the supernode sent 2 piece(s) to the source: no other peer held pieces of this task yet"
    ]
    tally.record(PEER, "10.0.0.2:15001", 1, 0.0, cid="c2")
    tally.failure(PEER, "10.0.0.2:15002", cid="c2")  # the same peer at another port
    tally.record(PEER, "10.0.0.3:15001", 1, 0.0)  # no cid: told apart by address
    tally.record(CDN, "10.0.0.1:8001", 1, 0.0, cid="cdn")  # a CDN is not a peer
    assert tally.other_peers() == 2
    (reason,) = tally.reasons()
    assert reason.startswith(
        "the supernode sent 2 piece(s) to the source although 2 other peer(s) held pieces"
    )
    assert tally.assigned_to_source == 2


def test_the_trace_gets_every_piece_and_failure_and_reason(tmp_path: Path) -> None:
    trace = Trace(tmp_path / "trace.jsonl")
    tally = Accounting(trace=trace)
    tally.record(PEER, "10.0.0.2:15001", 4096, 0.0123, cid="c2", piece=3)
    tally.failure(CDN, "10.0.0.1:8001", error="reset", piece=4)
    tally.record(RESUMED, "earlier attempt", 0, 0.0, pieces=0)  # nothing resumed: no event
    tally.why_source("peers failed")
    trace.close()
    events = [{k: v for k, v in e.items() if k != "t"} for e in read_events(trace.path)]
    assert events == [
        {"event": "piece", "kind": PEER, "holder": "10.0.0.2:15001", "cid": "c2",
         "bytes": 4096, "ms": 12.3, "ok": True, "piece": 3},
        {"event": "piece", "kind": CDN, "holder": "10.0.0.1:8001", "cid": "", "ok": False,
         "error": "reset", "piece": 4},
        {"event": "source", "reason": "peers failed"},
    ]  # fmt: skip


def test_concurrent_records_lose_nothing() -> None:
    tally = Accounting()

    def fetch(worker: int) -> None:
        for i in range(2000):
            tally.record(PEER, f"10.0.0.{i % 5}:15001", worker, 0.001)
            if i % 2 == 0:
                tally.failure(PEER, f"10.0.0.{i % 5}:15001")

    threads = [threading.Thread(target=fetch, args=(w,)) for w in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    holders = {h["address"]: (h["pieces"], h["bytes"], h["failures"]) for h in tally.as_json()}
    # Each address: 400 pieces of the worker's number of bytes and 200 failures per worker.
    assert holders == {f"10.0.0.{a}:15001": (1600, 400 * 10, 800) for a in range(5)}
    assert tally.bytes_by_kind()[PEER] == 2000 * (1 + 2 + 3 + 4)


def test_the_report_can_be_read_while_fetch_threads_still_record(fast_switching: None) -> None:
    """A fetch thread that outlives its join (a failed or interrupted download) may still
    record while the summary or --json is written; reading must neither fail nor see a
    holder half-updated."""
    tally = Accounting()
    problems: list[str] = []

    def fetch(worker: int) -> None:
        for piece in range(20_000):  # a new holder each time: the holders keep growing
            tally.record(PEER, f"10.0.{worker}.{piece}:15001", 7, 0.0)

    fetchers = [threading.Thread(target=fetch, args=(w,)) for w in range(2)]
    for thread in fetchers:
        thread.start()
    while any(thread.is_alive() for thread in fetchers) and not problems:
        try:
            tally.summary()
            tally.bytes_by_kind()
            holders = tally.as_json()
        except RuntimeError as exc:  # e.g. the holders changed size during iteration
            problems.append(repr(exc))
            break
        torn = [h for h in holders if h["bytes"] != 7 * h["pieces"]]  # type: ignore[operator]
        if torn:
            problems.append(f"half-updated holders: {torn[:3]}")
    for thread in fetchers:
        thread.join()
    assert problems == []
    assert tally.bytes_by_kind()[PEER] == 2 * 20_000 * 7
