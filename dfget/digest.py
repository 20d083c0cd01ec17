"""Digests the user (or the URL) names, and hashing that follows the data as it lands."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_HEX_LENGTH = {"sha256": 64, "md5": 32, "sha512": 128}
_OCI_BLOB = re.compile(r"/blobs/(sha256|sha512):([0-9a-fA-F]{64,128})(?:[/?#]|$)")


@dataclass(frozen=True, slots=True)
class Digest:
    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @classmethod
    def parse(cls, text: str) -> Digest:
        """``sha256:<hex>`` or ``md5:<hex>``; raises ValueError with a helpful message."""
        algorithm, sep, value = text.strip().partition(":")
        algorithm = algorithm.lower()
        value = value.lower()
        expected = _HEX_LENGTH.get(algorithm)
        if not sep or expected is None:
            raise ValueError(f"invalid digest {text!r}: use sha256:<hex> or md5:<hex>")
        if len(value) != expected or not re.fullmatch(r"[0-9a-f]+", value):
            raise ValueError(f"invalid digest {text!r}: {algorithm} takes {expected} hex digits")
        return cls(algorithm, value)

    def new_hash(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm)


def digest_from_url(url: str) -> Digest | None:
    """The content digest an OCI distribution blob URL names (``.../blobs/sha256:<hex>``)."""
    match = _OCI_BLOB.search(url.split("?", 1)[0] + "?")
    if not match:
        return None
    try:
        return Digest.parse(f"{match.group(1)}:{match.group(2)}")
    except ValueError:
        return None


def expected_digests(url: str, digest: str, md5: str) -> list[Digest]:
    """Every digest the final file must match: --digest, --md5 and the URL's blob digest."""
    digests: list[Digest] = []
    if digest:
        digests.append(Digest.parse(digest))
    if md5:
        digests.append(Digest.parse(f"md5:{md5}"))
    from_url = digest_from_url(url)
    if from_url is not None:
        digests.append(from_url)
    unique: dict[str, Digest] = {}
    for item in digests:
        previous = unique.get(item.algorithm)
        if previous is not None and previous.hex != item.hex:
            raise ValueError(f"conflicting {item.algorithm} digests: {previous.hex} and {item.hex}")
        unique[item.algorithm] = item
    return list(unique.values())
