"""The resume journal in-process: what a partial download records, reading it back, records
that cannot be trusted, and work files that no longer match their record."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dfget.download.resume import Journal, digest_of
from tests.support.helpers import random_bytes

PIECE = 64 * 1024


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def journal_in(home: Path, output: str = "/out/file.bin") -> Journal:
    return Journal.for_download(home, "task-key", Path(output))


def partial_download(home: Path, data: bytes, stored: list[int]) -> Journal:
    """A download of ``data`` that stored the pieces at ``stored`` offsets and flushed."""
    journal = journal_in(home)
    journal.describe_source(len(data), '"etag-1"', "Mon, 01 Jan 2024 00:00:00 GMT")
    journal.flush()  # creates the partial directory
    journal.partial_path.write_bytes(b"\0" * len(data))
    with open(journal.partial_path, "r+b") as file:
        for offset in stored:
            piece = data[offset : offset + PIECE]
            file.seek(offset)
            file.write(piece)
            journal.add(offset, offset + len(piece), digest_of(piece))
    journal.flush()
    return journal


def test_a_flushed_record_reads_back_as_it_was(home: Path) -> None:
    data = random_bytes(4 * PIECE, seed=1)
    written = partial_download(home, data, [3 * PIECE, 0])
    again = journal_in(home)
    assert again.load()
    assert (again.length, again.etag, again.last_modified) == (
        written.length, written.etag, written.last_modified,
    )  # fmt: skip
    assert again.extents == written.extents
    assert again.data_path == written.partial_path
    assert again.record_path.parent == home / "partial"


def test_one_record_per_task_and_output(home: Path) -> None:
    first = journal_in(home, "/out/a.bin")
    assert first.record_path == journal_in(home, "/out/a.bin").record_path
    assert first.record_path != journal_in(home, "/out/b.bin").record_path
    other_task = Journal.for_download(home, "other-task", Path("/out/a.bin"))
    assert first.record_path != other_task.record_path


def test_no_record_means_nothing_to_resume(home: Path) -> None:
    assert not journal_in(home).load()


@pytest.mark.parametrize(
    "record",
    [
        '{"length": 262144, "etag": "x", "data": "',  # cut short by a crash
        "",
        "[1, 2, 3]",
        '{"length": 262144, "data": "%s"}',  # no extents
        '{"length": 262144, "data": "%s", "extents": [[0, 65536]]}',  # an extent without digest
        '{"length": 262144, "data": "%s", "extents": [["zero", 65536, "d"]]}',
        '{"length": null, "data": "%s", "extents": []}',  # the source was never known
    ],
)
def test_a_record_that_cannot_be_trusted_is_not_resumed(home: Path, record: str) -> None:
    journal = partial_download(home, random_bytes(4 * PIECE, seed=2), [0])
    journal.record_path.write_text(record.replace("%s", str(journal.partial_path)))
    fresh = journal_in(home)
    assert not fresh.load()


def test_an_unusable_record_leaves_nothing_of_itself_in_the_journal(home: Path) -> None:
    """What a broken record did say (its length, ETag) must not end up in the record of the
    download that starts over, as the identity of bytes it never saw."""
    journal = partial_download(home, random_bytes(4 * PIECE, seed=3), [0])
    broken = json.loads(journal.record_path.read_text())
    broken["extents"] = "not a list of extents"
    journal.record_path.write_text(json.dumps(broken))
    fresh = journal_in(home)
    assert not fresh.load()
    assert (fresh.length, fresh.etag, fresh.last_modified, fresh.extents) == (None, "", "", [])


def test_a_record_without_its_data_is_not_resumed(home: Path) -> None:
    journal = partial_download(home, random_bytes(4 * PIECE, seed=4), [0])
    journal.partial_path.unlink()
    assert not journal_in(home).load()


def test_data_left_where_a_killed_download_served_it_is_adopted(home: Path) -> None:
    """A SIGKILLed download never moved its work file (the peer server's, in data/) to the
    partial directory: the record says where it is."""
    journal = partial_download(home, random_bytes(4 * PIECE, seed=5), [0])
    served = home / "data" / "task.service"
    served.parent.mkdir()
    os.replace(journal.partial_path, served)
    journal.data_path = served
    journal.flush()
    again = journal_in(home)
    assert again.load() and again.data_path == served


def test_a_record_pointing_outside_the_home_is_not_followed(tmp_path: Path, home: Path) -> None:
    """The record is data: a data path outside the home (planted, or from another home) is
    never adopted, so a resume can neither read nor move a file elsewhere."""
    elsewhere = tmp_path / "precious"
    elsewhere.write_bytes(b"x" * PIECE)
    journal = partial_download(home, random_bytes(4 * PIECE, seed=6), [0])
    journal.data_path = elsewhere
    journal.flush()
    again = journal_in(home)
    assert again.load() and again.data_path == journal.partial_path  # its own partial data
    journal.partial_path.unlink()
    assert not journal_in(home).load()
    assert elsewhere.read_bytes() == b"x" * PIECE


def test_only_extents_whose_bytes_still_match_are_kept(home: Path) -> None:
    data = random_bytes(4 * PIECE, seed=7)
    partial_download(home, data, [0, PIECE, 3 * PIECE])
    journal = journal_in(home)
    assert journal.load()
    with open(journal.partial_path, "r+b") as file:
        file.seek(PIECE + 100)
        file.write(b"!")  # the file changed under its record
        file.truncate(3 * PIECE + 10)  # and lost most of its last piece
    fd = os.open(journal.partial_path, os.O_RDONLY)
    try:
        assert journal.verified(fd) == [(0, PIECE)]
    finally:
        os.close(fd)
    assert journal.extents == [(0, PIECE, digest_of(data[:PIECE]))]  # the others are forgotten
    journal.flush()
    assert json.loads(journal.record_path.read_text())["extents"] == [
        [0, PIECE, digest_of(data[:PIECE])]
    ]


def test_a_work_file_of_other_bytes_keeps_nothing(home: Path) -> None:
    partial_download(home, random_bytes(4 * PIECE, seed=8), [0, 2 * PIECE])
    journal = journal_in(home)
    assert journal.load()
    journal.partial_path.write_bytes(random_bytes(4 * PIECE, seed=9))
    fd = os.open(journal.partial_path, os.O_RDONLY)
    try:
        assert journal.verified(fd) == []
    finally:
        os.close(fd)
    assert journal.extents == []


@pytest.mark.parametrize(
    ("now", "same"),
    [
        ((4 * PIECE, '"etag-1"', "Mon, 01 Jan 2024 00:00:00 GMT"), True),
        ((None, "", ""), True),  # nothing known now: nothing contradicts the record
        ((4 * PIECE + 1, '"etag-1"', ""), False),
        ((4 * PIECE, '"etag-2"', ""), False),
        ((4 * PIECE, "", "Tue, 02 Jan 2024 00:00:00 GMT"), False),
    ],
)
def test_a_changed_source_is_recognised(
    home: Path, now: tuple[int | None, str, str], same: bool
) -> None:
    partial_download(home, random_bytes(4 * PIECE, seed=10), [0])
    journal = journal_in(home)
    assert journal.load()
    assert journal.same_source(*now) is same


def test_what_the_source_said_is_kept_when_later_it_says_less(home: Path) -> None:
    journal = journal_in(home)
    journal.describe_source(100, '"e"', "Mon, 01 Jan 2024 00:00:00 GMT")
    journal.describe_source(None)
    assert (journal.length, journal.etag, journal.last_modified) == (
        100, '"e"', "Mon, 01 Jan 2024 00:00:00 GMT",
    )  # fmt: skip


def test_forgotten_extents_are_gone_from_the_record(home: Path) -> None:
    journal = partial_download(home, random_bytes(4 * PIECE, seed=11), [0, PIECE])
    journal.forget()
    journal.flush()
    again = journal_in(home)
    assert again.load() and again.extents == []


def test_a_record_is_claimed_by_one_download_at_a_time(home: Path) -> None:
    first, second = journal_in(home), journal_in(home)
    assert first.claim()
    assert not second.claim()
    first.release()
    assert second.claim()
    second.release()


def test_discard_removes_record_data_and_lock_and_frees_the_claim(home: Path) -> None:
    journal = partial_download(home, random_bytes(4 * PIECE, seed=12), [0])
    assert journal.claim()
    journal.discard()
    assert list(journal.record_path.parent.iterdir()) == []
    other = journal_in(home)
    assert other.claim()
    other.release()


def test_the_record_and_its_directory_are_private(home: Path) -> None:
    journal = partial_download(home, random_bytes(PIECE, seed=13), [0])
    assert journal.record_path.stat().st_mode & 0o777 == 0o600
    assert journal.record_path.parent.stat().st_mode & 0o777 == 0o700
