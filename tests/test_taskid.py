"""Task ids (spec §3.1, wire transcript §0.3) and the piece size table (spec §3.3)."""

from __future__ import annotations

import json

import pytest

from dfget.protocol.pieces import MiB, piece_size_for_length
from dfget.protocol.taskid import task_id
from dfget.supernode.registration import parse_registration

URL = "http://example.com/file.bin"


@pytest.mark.parametrize(
    ("sign", "range_value", "expected"),
    [
        ("", None, "38a8ac9c165da6440d6cea043161b0289457f54ae2dd74f08321d72d4c02b5d3"),
        (
            "0123456789abcdef0123456789abcdef",
            None,
            "3db1f4b2d3af9ac3f9458ce01229280dadd58e8097c77d4e892f834d29ba8cd9",
        ),
        ("", "bytes=0-99", "57cf9d7062d1bf45496aba6619ea20c7a68ef1ab60e5ac9745ddd432ccc9dc9b"),
    ],
)
def test_spec_vectors(sign: str, range_value: str | None, expected: str) -> None:
    assert task_id(URL, sign, range_value) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "http://127.0.0.1:8080/file10m.bin",
            "24880c54b89402eb273a93e83dafea4c549702070504bec0bc96a1a0bc9cc25c",
        ),
        (
            "http://127.0.0.1:8080/file10m.bin?mode=src&n=1",
            "7c23c14ce1aedaf326e8200c67cee46a9a4dfbc410dc7ad3d2d2b05eb7a81c52",
        ),
        (
            "http://127.0.0.1:8080/file200m.bin",
            "90d73af2750d3d32990a938ad3e28ea40a436c7658500fddb67c2abbedf5cd13",
        ),
    ],
)
def test_transcript_task_ids(url: str, expected: str) -> None:
    assert task_id(url) == expected


def test_registration_body_from_the_wire_gives_the_transcript_task_id() -> None:
    body = (
        b'{"superNodeIp":"127.0.0.1","rawUrl":"http://127.0.0.1:8080/file10m.bin?mode=src'
        b'\\u0026n=1","taskUrl":"http://127.0.0.1:8080/file10m.bin?mode=src\\u0026n=1",'
        b'"cid":"127.0.0.1-20344-1795914767.052","ip":"127.0.0.1","hostName":"vm",'
        b'"port":16103,"path":"/peer/file/c.bin-20344-1795914767.052","version":"1.0.6"}'
    )
    registration = parse_registration(body, "application/json;charset=utf-8")
    assert registration.task_url == "http://127.0.0.1:8080/file10m.bin?mode=src&n=1"
    assert registration.task_id == (
        "7c23c14ce1aedaf326e8200c67cee46a9a4dfbc410dc7ad3d2d2b05eb7a81c52"
    )


def test_range_header_and_md5_enter_the_id_other_headers_do_not() -> None:
    def registration(**extra: object) -> str:
        fields = {
            "rawUrl": URL,
            "taskUrl": URL,
            "cid": "c",
            "ip": "10.0.0.1",
            "path": "/peer/file/p",
        }
        body = json.dumps({**fields, **extra}).encode()
        return parse_registration(body, "application/json").task_id

    assert registration() == task_id(URL)
    assert registration(headers=["Authorization: Bearer x"]) == task_id(URL)
    assert registration(headers=["Range: bytes=0-99"]) == task_id(URL, "", "bytes=0-99")
    md5 = "0123456789abcdef0123456789abcdef"
    assert registration(md5=md5, identifier="ignored") == task_id(URL, md5)
    assert registration(identifier="layer") == task_id(URL, "layer")


@pytest.mark.parametrize(
    ("length", "piece_size"),
    [
        (-1, 4 * MiB),
        (0, 4 * MiB),
        (200 * MiB, 4 * MiB),
        (299 * MiB, 4 * MiB),
        (300 * MiB, 5 * MiB),
        (399 * MiB, 5 * MiB),
        (400 * MiB, 6 * MiB),
        (499 * MiB, 6 * MiB),
        (1000 * MiB, 12 * MiB),
        (1099 * MiB, 12 * MiB),
        (1300 * MiB, 15 * MiB),
        (10_000 * MiB, 15 * MiB),
    ],
)
def test_piece_size_table(length: int, piece_size: int) -> None:
    assert piece_size_for_length(length) == piece_size
