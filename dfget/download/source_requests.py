"""Requests to the source URL: a GET carrying the user's headers only to the origin they were
given for, redirects followed, statuses judged (retryable or final); and what a ranged response
says about its range."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from urllib.parse import urljoin

from dfget import PROTOCOL_VERSION
from dfget.download.cancel import Cancel
from dfget.errors import DfgetError, NetworkError, SourceHTTPError, source_http_error
from dfget.net.client import Pool, Response
from dfget.net.endpoint import TLS, Endpoint, is_ssl_error
from dfget.net.heads import WireError
from dfget.protocol.ranges import parse_content_range, parse_unsatisfied_range
from dfget.redact import redact_url

log = logging.getLogger(__name__)

MAX_REDIRECTS = 10
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def parse_header_option(entry: str) -> tuple[str, str]:
    """``Name: value`` or dfdaemon's ``Name:value`` into a (name, value) pair."""
    name, sep, value = entry.partition(":")
    if not sep or not name.strip():
        raise ValueError(f"invalid header {entry!r}: use 'Name: value'")
    return name.strip(), value.strip()


class Retry(DfgetError):
    """A transient failure of one range; carries the error to report if attempts run out, and
    how far a broken body got (None when no body was read)."""

    def __init__(self, error: DfgetError, reached: int | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.reached = reached


class SourceRequests:
    """GETs of one source URL (``url`` redacted, ``origin`` parsed) on a pool of its own."""

    def __init__(
        self,
        url: str,
        origin: Endpoint,
        headers: Sequence[tuple[str, str]],
        *,
        tls: TLS | None,
        cancel: Cancel,
        io_timeout: float,
    ) -> None:
        self.url = url
        self.origin = origin
        self.headers = list(headers)
        self.cancel = cancel
        self.io_timeout = io_timeout
        self.pool = Pool(timeout=io_timeout, tls=tls)

    def close(self) -> None:
        self.pool.close()

    def headers_for(
        self, endpoint: Endpoint, extra: Sequence[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        # The user's headers go only to the scheme, host and port they were given for: after a
        # redirect elsewhere none follows (tokens come in many names, not only Authorization).
        same_origin = endpoint.origin == self.origin.origin
        user = [(n, v) for n, v in self.headers if same_origin and n.lower() != "range"]
        names = {n.lower() for n, _ in user}
        base = [("User-Agent", f"dfget/{PROTOCOL_VERSION}"), ("Accept-Encoding", "identity")]
        return [h for h in base if h[0].lower() not in names] + user + list(extra)

    def open(
        self, endpoint: Endpoint, extra: Sequence[tuple[str, str]]
    ) -> tuple[Endpoint, Response]:
        """Send a GET, following redirects; returns the final endpoint and response."""
        for _ in range(MAX_REDIRECTS + 1):
            self.cancel.check()
            timeout = self.cancel.remaining(self.io_timeout)
            try:
                response = self.pool.request(
                    endpoint, self.headers_for(endpoint, extra), timeout=timeout
                )
            except (OSError, WireError) as exc:
                if is_ssl_error(exc, "SSLCertVerificationError"):
                    reason = getattr(exc, "verify_message", exc)
                    raise NetworkError(
                        f"{endpoint.url}: TLS certificate not trusted ({reason})"
                    ) from exc
                raise Retry(network_error(endpoint, exc)) from exc
            self.cancel.watch(response.connection.sock)
            if response.status in (301, 302, 303, 307, 308) and response.header("location"):
                location = urljoin(endpoint.url, response.header("location"))
                self.finish(response)
                log.debug("redirected to %s", redact_url(location))
                endpoint = Endpoint.parse(location)
                continue
            return endpoint, response
        raise SourceHTTPError(self.url, 310, "too many redirects")

    def finish(self, response: Response) -> None:
        self.cancel.unwatch(response.connection.sock)
        try:
            response.read(64 * 1024) if response.status >= 300 else None
        except (OSError, WireError):
            response.connection.keep_alive = False
        response.release()

    def fail_status(self, endpoint: Endpoint, response: Response) -> DfgetError:
        try:
            detail = response.read(512).decode("utf-8", "replace").strip().splitlines()
        except (OSError, WireError):
            detail = []
        self.finish(response)
        error = source_http_error(self.url, response.status, detail[0][:120] if detail else "")
        if response.status in RETRYABLE_STATUS:
            raise Retry(error)
        return error


def content_range(response: Response) -> tuple[int, int, int | None]:
    parsed = parse_content_range(response.header("content-range"))
    if parsed is None:
        raise SourceHTTPError(
            response.connection.endpoint.url, 206, "206 without a valid Content-Range"
        )
    return parsed


def content_range_total(response: Response) -> int | None:
    """The length a 416 answer gives (``bytes */N``)."""
    return parse_unsatisfied_range(response.header("content-range"))


def network_error(endpoint: Endpoint, exc: BaseException) -> NetworkError:
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError):
        reason = "timed out"
    return NetworkError(f"{redact_url(endpoint.url)}: {reason}")
