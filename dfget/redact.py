"""Keep secrets out of logs, messages and --json: credentials and signed-URL query values."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import unquote, urlsplit, urlunsplit

SENSITIVE_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "x-registry-auth"})


def redact_url(url: str) -> str:
    """Drop userinfo and query values (signed URLs carry tokens there)."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. a broken IPv6 literal: show nothing of it
        return "<invalid URL>"
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = "&".join(
        p.split("=", 1)[0] + ("=…" if "=" in p else "") for p in parts.query.split("&") if p
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


class Scrubber:
    """Masks the secrets of one download in text that comes back from elsewhere: a supernode's
    error message may quote the URL with its signed-URL token, or a header value."""

    MIN_SECRET = 6  # shorter query values ("1", "true") are not secrets, and are everywhere

    def __init__(self, url: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        self.url = url
        self.redacted = redact_url(url)
        found: set[str] = set()
        try:
            parts = urlsplit(url)
        except ValueError:
            parts = None
        if parts is not None:
            if parts.password:
                found.add(parts.password)
            for item in parts.query.split("&"):
                value = item.partition("=")[2]
                found.update((value, unquote(value)))
        for name, value in headers:
            if name.lower() in SENSITIVE_HEADERS:
                found.update((value, value.rpartition(" ")[2]))  # "Bearer <token>"
        self.secrets = sorted(
            (s for s in found if len(s) >= self.MIN_SECRET), key=len, reverse=True
        )

    def __call__(self, text: str) -> str:
        text = text.replace(self.url, self.redacted)
        for secret in self.secrets:
            text = text.replace(secret, "…")
        return text
