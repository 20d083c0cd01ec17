"""Keep secrets out of logs, messages and --json: credentials and signed-URL query values."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

SENSITIVE_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "x-registry-auth"})


def redact_url(url: str) -> str:
    """Drop userinfo and query values (signed URLs carry tokens there)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = "&".join(
        p.split("=", 1)[0] + ("=…" if "=" in p else "") for p in parts.query.split("&") if p
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redact_header(name: str, value: str) -> str:
    """``Name: value`` with the value hidden for credential headers."""
    return f"{name}: <redacted>" if name.lower() in SENSITIVE_HEADERS else f"{name}: {value}"
