"""Dragonfly v1 wire conventions shared by the downloader, the peer server and the supernode.

Result codes, the supernode's JSON envelope, task ids and the unescaped query
strings dfget 1.0.6 writes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

MAX_DECIMAL_DIGITS = 18  # what fits Go's int64 (strconv.Atoi)


def decimal(text: str, max_digits: int = MAX_DECIMAL_DIGITS) -> int | None:
    """A plain non-negative decimal number from the network or a file, or None.

    Only ASCII digits, at most ``max_digits``: ``str.isdigit`` also takes '²' (which ``int``
    rejects), ``int`` takes '1_0', ' 7', '+7' and '٣', and a 5,000-digit number raises.
    """
    if 0 < len(text) <= max_digits and text.isascii() and text.isdigit():
        return int(text)
    return None


# Supernode -> dfget codes in the envelope.
CODE_SUCCESS = 200
CODE_SYSTEM_ERROR = 500
CODE_PARAM_ERROR = 501
CODE_TARGET_NOT_FOUND = 502
CODE_PEER_FINISH = 600
CODE_PEER_CONTINUE = 601
CODE_PEER_WAIT = 602
CODE_PEER_LIMITED = 603
CODE_SUPER_FAIL = 604
CODE_UNKNOWN_ERROR = 605
CODE_TASK_CONFLICT = 606
CODE_URL_NOT_REACHABLE = 607
CODE_NEED_AUTH = 608
CODE_WAIT_AUTH = 609
CODE_SOURCE_ERROR = 610
CODE_PIECE_REPORT_OK = 611
CODE_PEER_DOWN_OK = 612

# dfget -> supernode `status` and `result` of /peer/task.
STATUS_START = 700
STATUS_RUNNING = 701
STATUS_FINISHED = 702
RESULT_FAILED = 500
RESULT_SUCCESS = 501
RESULT_INVALID = 502
RESULT_SEMI_SUCCESS = 503

# Error types of /peer/piece/error.
ERROR_FILE_NOT_EXIST = "FILE_NOT_EXIST"
ERROR_FILE_MD5_NOT_MATCH = "FILE_MD5_NOT_MATCH"

CDN_CID_PREFIX = "cdnnode:"  # the cid of a supernode's CDN as a piece holder
CDN_SOURCE_SUPERNODE = "supernode"
CDN_SOURCE_SOURCE = "source"

DEFAULT_SUPERNODE_PORT = 8002
DEFAULT_DOWNLOAD_PORT = 8001
JSON_REQUEST_CONTENT_TYPE = "application/json;charset=utf-8"

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


def headers_to_map(headers: Iterable[str]) -> dict[str, str]:
    """v1's conversion of ``Name: value`` strings: split at the first colon, trim, drop empty
    values, join duplicates with commas."""
    result: dict[str, str] = {}
    for entry in headers:
        name, sep, value = entry.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            continue
        result[name] = f"{result[name]},{value}" if name in result else value
    return result


def raw_query(params: Iterable[tuple[str, object]]) -> str:
    """``a=1&b=2`` in the given order, values not escaped, as dfget 1.0.6 writes them."""
    return "&".join(f"{name}={'' if value is None else value}" for name, value in params)


def parse_raw_query(query: str) -> dict[str, str]:
    """Parse a query the way the Go supernode effectively does for dfget's unescaped values.

    Values may contain ``:`` and ``~`` unescaped; percent-escapes are decoded when present.
    """
    from urllib.parse import unquote

    result: dict[str, str] = {}
    for part in query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        result.setdefault(unquote(name), unquote(value))
    return result


def go_json(value: Any) -> bytes:
    """Compact JSON like Go's encoding/json (HTML-safe escaping of <, >, &)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


def envelope(code: int | None = None, msg: str | None = None, data: Any = None) -> bytes:
    """The supernode's ResultInfo body: keys omitted when empty, trailing newline."""
    body: dict[str, Any] = {}
    if code:
        body["code"] = code
    if data is not None:
        body["data"] = data
    if msg:
        body["msg"] = msg
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def lower_keys(value: Mapping[str, Any]) -> dict[str, Any]:
    """JSON keys matched case-insensitively, as the Go supernode does."""
    return {key.lower(): item for key, item in value.items()}
