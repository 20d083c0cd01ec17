"""Digests from --digest, --md5 and OCI blob URLs."""

from __future__ import annotations

import hashlib

import pytest

from dfget.digest import Digest, digest_from_url, expected_digests

SHA = hashlib.sha256(b"layer").hexdigest()
MD5 = hashlib.md5(b"layer").hexdigest()
BLOB = f"https://registry.example/v2/library/app/blobs/sha256:{SHA}"


@pytest.mark.parametrize(
    ("text", "algorithm", "hex_"),
    [
        (f"sha256:{SHA}", "sha256", SHA),
        (f"SHA256:{SHA.upper()}", "sha256", SHA),
        (f"  md5:{MD5}  ", "md5", MD5),
        ("sha512:" + "a" * 128, "sha512", "a" * 128),
    ],
)
def test_parse(text: str, algorithm: str, hex_: str) -> None:
    digest = Digest.parse(text)
    assert (digest.algorithm, digest.hex) == (algorithm, hex_)
    assert str(digest) == f"{algorithm}:{hex_}"


@pytest.mark.parametrize(
    "text",
    [
        "",
        SHA,
        f"sha256-{SHA}",
        f"sha1:{SHA[:40]}",
        f"crc32:{SHA[:8]}",
        f"sha256:{SHA[:-1]}",
        f"sha256:{SHA}0",
        f"sha256:{SHA[:-1]}g",
        f"md5:{SHA}",
        f"sha256:{MD5}",
        "md5:",
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid digest"):
        Digest.parse(text)


def test_new_hash_matches_hashlib() -> None:
    for algorithm, expected in (("sha256", SHA), ("md5", MD5)):
        hasher = Digest(algorithm, expected).new_hash()
        hasher.update(b"lay")
        hasher.update(b"er")
        assert hasher.hexdigest() == expected


@pytest.mark.parametrize(
    "url",
    [
        BLOB,
        BLOB + "?X-Amz-Signature=abc&expires=1",
        BLOB + "/",
        BLOB + "#fragment",
        f"http://127.0.0.1:5000/v2/a/b/c/blobs/sha256:{SHA.upper()}",
    ],
)
def test_digest_from_blob_url(url: str) -> None:
    assert digest_from_url(url) == Digest("sha256", SHA)


def test_digest_from_sha512_blob_url() -> None:
    url = "http://r/v2/app/blobs/sha512:" + "c" * 128
    assert digest_from_url(url) == Digest("sha512", "c" * 128)


@pytest.mark.parametrize(
    "url",
    [
        "http://origin/file.bin",
        f"http://r/v2/app/manifests/sha256:{SHA}",
        f"http://r/v2/app/blobs/sha256:{SHA[:-1]}",
        f"http://r/v2/app/blobs/sha256:{SHA}x",
        f"http://r/v2/app/blobs/sha256:{SHA}0",
        f"http://r/v2/app/blobs/md5:{MD5}",
        f"http://r/download?next=/v2/app/blobs/sha256:{SHA}",
    ],
)
def test_no_digest_in_url(url: str) -> None:
    assert digest_from_url(url) is None


def test_expected_digests_none() -> None:
    assert expected_digests("http://origin/file", "", "") == []


def test_expected_digests_combines_every_source() -> None:
    digests = expected_digests(BLOB, f"md5:{MD5}", "")
    assert sorted(map(str, digests)) == sorted([f"md5:{MD5}", f"sha256:{SHA}"])


def test_expected_digests_md5_option() -> None:
    assert expected_digests("http://o/f", "", MD5) == [Digest("md5", MD5)]
    assert expected_digests("http://o/f", "", MD5.upper()) == [Digest("md5", MD5)]


def test_expected_digests_deduplicates_agreeing_values() -> None:
    assert expected_digests(BLOB, f"sha256:{SHA}", "") == [Digest("sha256", SHA)]
    assert expected_digests("http://o/f", f"md5:{MD5}", MD5) == [Digest("md5", MD5)]


def test_expected_digests_conflict() -> None:
    with pytest.raises(ValueError, match="conflicting sha256"):
        expected_digests(BLOB, "sha256:" + "0" * 64, "")
    with pytest.raises(ValueError, match="conflicting md5"):
        expected_digests("http://o/f", f"md5:{MD5}", "0" * 32)


def test_expected_digests_invalid_md5_option() -> None:
    with pytest.raises(ValueError, match="invalid digest"):
        expected_digests("http://o/f", "", "xyz")
