"""The work file a download writes into, in-process: pieces stored at their offsets in any order,
what is complete and what is missing, the digests, and the destination that only ever gets a
whole, verified file (atomically) or nothing."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import tempfile
import threading
from pathlib import Path

import pytest

from dfget.digest import Digest
from dfget.download import target as target_module
from dfget.download.resume import Journal, digest_of
from dfget.download.target import STDOUT_HOLDBACK, Target
from dfget.errors import DigestMismatchError, LocalIOError
from tests.support.helpers import random_bytes

MiB = 1024 * 1024
PIECE = 64 * 1024


def sha256(data: bytes) -> Digest:
    return Digest("sha256", hashlib.sha256(data).hexdigest())


def md5(data: bytes) -> Digest:
    return Digest("md5", hashlib.md5(data).hexdigest())


def pieces(data: bytes, size: int = PIECE) -> list[tuple[int, bytes]]:
    return [(offset, data[offset : offset + size]) for offset in range(0, len(data), size)]


def store_shuffled(target: Target, data: bytes, seed: int = 1) -> None:
    shuffled = pieces(data)
    random.Random(seed).shuffle(shuffled)
    for offset, chunk in shuffled:
        target.store(offset, chunk)


def listing(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def test_pieces_stored_in_any_order_are_published_whole(tmp_path: Path) -> None:
    data = random_bytes(20 * PIECE + 123, seed=1)
    out = tmp_path / "out"
    out.mkdir()
    target = Target(tmp_path / "work", out / "file.bin", [sha256(data)])
    store_shuffled(target, data)
    assert target.verify(len(data)) == {"sha256": sha256(data).hex}
    target.commit(len(data))
    assert (out / "file.bin").read_bytes() == data
    assert listing(out) == ["file.bin"]  # no temp name left beside it
    assert not (tmp_path / "work").exists()


def test_covers_and_missing_follow_what_was_stored(tmp_path: Path) -> None:
    target = Target(tmp_path / "work", None, [])
    target.store(100, b"x" * 50)
    target.store(300, b"y" * 100)
    assert target.covers(100, 150) and target.covers(120, 130) and target.covers(5, 5)
    assert not target.covers(99, 150) and not target.covers(100, 151)
    assert target.missing(500) == [(0, 100), (150, 300), (400, 500)]
    target.store(150, b"z" * 150)  # fills the gap between the two
    assert target.covers(100, 400)
    assert target.missing(500) == [(0, 100), (400, 500)]
    assert target.missing(200) == [(0, 100)]  # only gaps below the length asked about
    target.discard()


def test_the_digests_are_checked_and_a_mismatch_names_both(tmp_path: Path) -> None:
    data = random_bytes(3 * PIECE, seed=2)
    wrong = Digest("sha256", "0" * 64)
    target = Target(tmp_path / "work", tmp_path / "out.bin", [md5(data), wrong])
    store_shuffled(target, data)
    with pytest.raises(DigestMismatchError) as failure:
        target.verify(len(data))
    assert "0" * 64 in str(failure.value) and sha256(data).hex in str(failure.value)
    target.discard()
    assert listing(tmp_path) == []  # neither a destination nor a work file


def test_corrupt_bytes_are_caught_even_when_every_piece_arrived(tmp_path: Path) -> None:
    data = random_bytes(4 * PIECE, seed=3)
    spoilt = bytearray(data)
    spoilt[PIECE + 7] ^= 1
    target = Target(tmp_path / "work", tmp_path / "out.bin", [sha256(data)])
    store_shuffled(target, bytes(spoilt))
    with pytest.raises(DigestMismatchError):
        target.verify(len(data))
    target.discard()


def test_a_digest_learnt_after_the_bytes_is_checked_by_reading_them_again(tmp_path: Path) -> None:
    data = random_bytes(5 * PIECE, seed=4)
    right = Target(tmp_path / "right", None, [sha256(data)])
    store_shuffled(right, data)
    right.add_digest(md5(data))  # e.g. the supernode's md5, known only at the end
    assert right.verify(len(data)) == {"sha256": sha256(data).hex, "md5": md5(data).hex}
    right.discard()

    late = Target(tmp_path / "late", None, [])
    store_shuffled(late, data)
    late.add_digest(md5(b"something else"))
    with pytest.raises(DigestMismatchError):
        late.verify(len(data))
    late.discard()


def test_verify_again_rereads_bytes_fetched_again_after_a_mismatch(tmp_path: Path) -> None:
    data = random_bytes(4 * PIECE, seed=5)
    target = Target(tmp_path / "work", tmp_path / "out.bin", [sha256(data)])
    target.store(0, data[:PIECE])
    target.store(PIECE, b"\0" * PIECE)  # a lying holder
    target.store(2 * PIECE, data[2 * PIECE :])
    with pytest.raises(DigestMismatchError):
        target.verify(len(data))
    target.write(PIECE, data[PIECE : 2 * PIECE])  # the same piece from an honest one
    assert target.verify_again(len(data)) == {"sha256": sha256(data).hex}
    target.commit(len(data))
    assert (tmp_path / "out.bin").read_bytes() == data


def test_publishing_replaces_the_destination_rather_than_writing_into_it(tmp_path: Path) -> None:
    """The old file is renamed over, not overwritten: another name for it (a hard link, a
    reader holding it open) keeps the old bytes, and nobody sees a half-written file."""
    destination = tmp_path / "file.bin"
    destination.write_bytes(b"old contents")
    os.link(destination, tmp_path / "other-name")
    data = random_bytes(2 * PIECE, seed=6)
    target = Target(tmp_path / "data" / "work", destination, [])
    store_shuffled(target, data)
    target.verify(len(data))
    target.commit(len(data))
    assert destination.read_bytes() == data
    assert (tmp_path / "other-name").read_bytes() == b"old contents"


def test_commit_cuts_the_work_file_to_the_real_length(tmp_path: Path) -> None:
    """The work file was sized from an announced length; the file is as long as its data."""
    data = random_bytes(PIECE + 10, seed=7)
    target = Target(tmp_path / "work", tmp_path / "out.bin", [sha256(data)], length=4 * PIECE)
    assert (tmp_path / "work").stat().st_size == 4 * PIECE
    target.store(0, data)
    target.verify(len(data))
    target.commit(len(data))
    assert (tmp_path / "out.bin").read_bytes() == data


def test_a_served_work_file_stays_and_the_destination_is_the_same_file(tmp_path: Path) -> None:
    data = random_bytes(3 * PIECE, seed=8)
    work = tmp_path / "data" / "task.service"
    target = Target(work, tmp_path / "out.bin", [], keep_work_file=True)
    store_shuffled(target, data)
    target.verify(len(data))
    target.commit(len(data))
    assert work.read_bytes() == data
    assert os.path.samefile(work, tmp_path / "out.bin")  # a hard link: no second copy


def test_a_work_file_on_another_filesystem_is_copied_to_the_destination(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs a second filesystem (/dev/shm) beside the test directory")
    data = random_bytes(3 * PIECE, seed=9)
    with tempfile.TemporaryDirectory(dir=shm) as home:
        moved = Target(Path(home) / "moved", tmp_path / "moved.bin", [])
        served = Target(Path(home) / "served", tmp_path / "served.bin", [], keep_work_file=True)
        for target in (moved, served):
            store_shuffled(target, data)
            target.verify(len(data))
            target.commit(len(data))
        assert (tmp_path / "moved.bin").read_bytes() == data
        assert not (Path(home) / "moved").exists()
        assert (tmp_path / "served.bin").read_bytes() == data
        assert (Path(home) / "served").read_bytes() == data  # still served from the work home
    assert listing(tmp_path) == ["moved.bin", "served.bin"]


def test_a_destination_that_cannot_be_replaced_fails_cleanly(tmp_path: Path) -> None:
    destination = tmp_path / "out"
    (destination / "occupied").mkdir(parents=True)  # a non-empty directory is in the way
    data = random_bytes(PIECE, seed=10)
    target = Target(tmp_path / "work", destination, [])
    target.store(0, data)
    target.verify(len(data))
    with pytest.raises(LocalIOError, match="cannot move the download onto"):
        target.commit(len(data))
    assert listing(tmp_path) == ["out"]  # no work file, no staged copy
    assert listing(destination) == ["occupied"]


def test_kept_partial_data_moves_to_the_partial_directory_intact(tmp_path: Path) -> None:
    data = random_bytes(3 * PIECE, seed=11)
    work = tmp_path / "data" / "task.service"
    partial = tmp_path / "partial" / "key.data"
    target = Target(work, tmp_path / "out.bin", [])
    target.store(0, data[:PIECE])
    target.store(2 * PIECE, data[2 * PIECE :])
    target.keep(partial)
    kept = partial.read_bytes()
    assert kept[:PIECE] == data[:PIECE] and kept[2 * PIECE :] == data[2 * PIECE :]
    assert not work.exists() and not (tmp_path / "out.bin").exists()
    assert partial.parent.stat().st_mode & 0o777 == 0o700


def test_a_resumed_work_file_keeps_its_bytes_and_a_fresh_one_starts_empty(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.write_bytes(b"earlier attempt")
    resumed = Target(work, None, [], resume=True)
    assert resumed.restore([(0, 7)]) == 7
    assert resumed.covers(0, 7) and resumed.missing(15) == [(7, 15)]
    resumed.write(7, b" ATTEMPT")
    assert work.read_bytes() == b"earlier ATTEMPT"
    resumed.keep(work)

    fresh = Target(work, None, [])
    assert work.read_bytes() == b"" and fresh.missing(15) == [(0, 15)]
    fresh.discard()


def test_truncate_drops_the_data_but_keeps_the_announced_size(tmp_path: Path) -> None:
    work = tmp_path / "work"
    target = Target(work, None, [], length=100)
    target.write(0, b"\xff" * 100)
    target.truncate()  # the source changed: none of it may be used
    assert work.read_bytes() == b"\0" * 100
    target.discard()


def test_stored_pieces_are_journaled_with_their_xxh3(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "partial" / "k.json", tmp_path / "k.data", tmp_path / "k.data")
    target = Target(tmp_path / "k.data", tmp_path / "out.bin", [], journal=journal)
    target.describe_source(3 * PIECE, etag='"v1"')
    data = random_bytes(3 * PIECE, seed=12)
    for offset, chunk in reversed(pieces(data)):
        target.store(offset, chunk)
    assert sorted(journal.extents) == [(o, o + len(c), digest_of(c)) for o, c in pieces(data)]
    assert (journal.length, journal.etag) == (3 * PIECE, '"v1"')
    target.discard()


def test_stdout_gets_the_bytes_in_order_and_the_end_only_once_verified(tmp_path: Path) -> None:
    """With ``-o -`` a consumer of a corrupt download must see a cut stream, never the whole
    file: the last bytes wait for the digest."""
    data = random_bytes(3 * MiB + 5, seed=13)
    for digest, whole in ((sha256(data), True), (sha256(b"other"), False)):
        stdout_path = tmp_path / f"stdout-{whole}"
        stdout = os.open(stdout_path, os.O_WRONLY | os.O_CREAT, 0o600)
        work = tmp_path / "tmp" / f"stdout-{whole}.work"
        target = Target(work, None, [digest], stdout_fd=stdout)
        store_shuffled(target, data)
        if whole:
            target.verify(len(data))
            assert stdout_path.read_bytes() == data[: len(data) - STDOUT_HOLDBACK]
            target.flush_stdout_tail(len(data))
            target.commit(len(data))
        else:
            with pytest.raises(DigestMismatchError):
                target.verify(len(data))
            target.discard()
        os.close(stdout)
        streamed = stdout_path.read_bytes()
        assert streamed == (data if whole else data[: len(data) - STDOUT_HOLDBACK])
        assert not work.exists()  # the work file was only a reorder buffer


def test_a_symlink_planted_at_the_work_path_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / "work").symlink_to(victim)
    with pytest.raises(LocalIOError, match="cannot create"):
        Target(tmp_path / "work", tmp_path / "out.bin", [])
    assert victim.read_bytes() == b"precious"


def test_a_range_is_never_seen_stored_before_its_bytes_are_in_the_file(
    tmp_path: Path, fast_switching: None
) -> None:
    """Fetch threads store disjoint pieces while the download loop asks what is stored (to
    serve it, to report it, to know what is still missing): whatever covers() or missing()
    call stored is readable from the work file, with the right bytes."""
    data = random_bytes(400 * 1024, seed=14)
    size = 1024
    work = tmp_path / "work"
    target = Target(work, None, [])
    reader = os.open(work, os.O_RDONLY)
    offsets = list(range(0, len(data), size))
    random.Random(14).shuffle(offsets)
    writers = 4
    finished = threading.Event()
    early: list[str] = []

    def fetch(share: list[int]) -> None:
        for offset in share:
            target.store(offset, data[offset : offset + size])

    def check(start: int, end: int, how: str) -> None:
        if os.pread(reader, end - start, start) != data[start:end]:
            early.append(f"{how} [{start}, {end}) before its bytes")

    def watch() -> None:
        rng = random.Random(15)
        while not finished.is_set() and not early:
            start = rng.randrange(len(offsets)) * size
            if target.covers(start, start + size):
                check(start, start + size, "covers()")
            gaps = target.missing(len(data))
            stored, position = [], 0
            for gap_start, gap_end in gaps:
                stored.append((position, gap_start))
                position = gap_end
            stored.append((position, len(data)))
            for start, end in stored[:: max(1, len(stored) // 8)]:  # a sample of the stored
                if end > start:
                    check(start, end, "missing() left out")

    threads = [threading.Thread(target=fetch, args=(offsets[w::writers],)) for w in range(writers)]
    watcher = threading.Thread(target=watch)
    watcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    finished.set()
    watcher.join()
    os.close(reader)
    assert early == []
    assert target.missing(len(data)) == [] and work.read_bytes() == data
    target.discard()


def test_a_stop_during_the_copy_to_another_filesystem_leaves_nothing_beside_the_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Publishing across filesystems copies the whole file; a stop signal then (here a
    KeyboardInterrupt from the copy) must leave no staged file beside the destination, keep the
    work file (its data may be resumed or still served) and never reach ``publishing``."""
    data = random_bytes(3 * PIECE, seed=9)
    out = tmp_path / "out"
    out.mkdir()
    target = Target(tmp_path / "work", out / "file.bin", [], keep_work_file=True)
    store_shuffled(target, data)

    def no_link(source: Path, staged: Path) -> None:
        raise OSError(errno.EXDEV, "cross-device link")

    def copy_then_stop(source: Path, staged: Path) -> None:
        staged.write_bytes(data[:PIECE])
        raise KeyboardInterrupt

    monkeypatch.setattr(target_module.os, "link", no_link)
    monkeypatch.setattr(target_module.shutil, "copyfile", copy_then_stop)
    published: list[bool] = []
    with pytest.raises(KeyboardInterrupt):
        target.commit(len(data), publishing=lambda: published.append(True))
    assert listing(out) == [] and published == []
    assert (tmp_path / "work").read_bytes() == data
