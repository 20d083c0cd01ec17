"""Task identity: the supernode's task id, the task URL (``--filter``) and the key that names
the content for choosing a supernode and for resuming."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

_TASK_ID_KEY = ">I$pg-~AS~sP'rqu_`Oh&lz#9]\"=;nE%"


def task_id(task_url: str, sign: str = "", range_value: str | None = None) -> str:
    """The supernode task id: sha256 of key + taskUrl + md5-or-identifier + [Range] + key."""
    parts = [_TASK_ID_KEY, task_url, sign]
    if range_value is not None:
        parts.append(range_value)
    parts.append(_TASK_ID_KEY)
    return hashlib.sha256("".join(parts).encode()).hexdigest()


def task_url(url: str, filters: Sequence[str]) -> str:
    """The URL with ``--filter``ed query parameters removed."""
    base, sep, query = url.partition("?")
    if not sep or not filters:
        return url
    kept = [p for p in query.split("&") if p.split("=", 1)[0] not in set(filters)]
    return f"{base}?{'&'.join(kept)}" if kept else base


def task_key(url: str, filters: Sequence[str]) -> str:
    """What identifies the content (for choosing a supernode, and for resuming): the blob
    digest in the URL, else the task URL."""
    from dfget.digest import digest_from_url

    digest = digest_from_url(url)
    return str(digest) if digest else task_url(url, filters)
