"""The supernode's access to a task's source URL: length probe, range check, TLS settings.

Both the registration probe and the CDN fill use the user's headers and TLS options
(``insecure``, ``rootCAs``) exactly as dfget sent them, so the supernode sees what the user
would see. Requests ask for ``Accept-Encoding: identity`` so that lengths and bytes are those
of the file itself, identical to what a ranged request returns.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx

from dfget.errors import Refused
from dfget.protocol.ranges import parse_content_range
from dfget.protocol.wire import decimal

PROBE_TIMEOUT = 4.0
PROBE_RECEIVE_BUFFER = 16 * 1024
"""The range probe reads no body; should the origin ignore the range and send the whole file, a
small receive window keeps it from pushing megabytes at us before we hang up."""


class SourceError(Refused):
    """The source refused the task: registration fails (HTTP 500)."""


class NotFound(SourceError):
    """The source answered 404; the URL is remembered as unreachable for a while."""


@dataclass(frozen=True, slots=True)
class Source:
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    insecure: bool = False
    root_cas: tuple[bytes, ...] = ()

    def client(self, timeout: httpx.Timeout | float, receive_buffer: int = 0) -> httpx.Client:
        options = [(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)] if receive_buffer else []
        transport = httpx.HTTPTransport(verify=self._verify(), socket_options=options)
        return httpx.Client(transport=transport, timeout=timeout, follow_redirects=True)

    def request_headers(self, **extra: str) -> dict[str, str]:
        headers = {"Accept-Encoding": "identity", **self.headers}
        headers.update(extra)
        return headers

    @property
    def ranged(self) -> bool:
        """The user asked for a byte range of the URL (then 206 is the normal answer)."""
        return any(name.lower() == "range" for name in self.headers)

    def _verify(self) -> ssl.SSLContext | bool:
        if self.insecure:
            return False
        context = ssl.create_default_context()
        for pem in self.root_cas:
            try:
                context.load_verify_locations(cadata=pem.decode("ascii"))
            except (ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
                raise SourceError(f"invalid root CA certificate: {exc}") from exc
        return context


def length_from_head(status: int, content_length: str | None) -> int:
    """The raw length a source's response head announces, -1 when unknown."""
    if status in (401, 407):
        raise SourceError(f"the source needs authentication ({status})")
    if status == 404:
        raise NotFound("the source answered 404")
    length = decimal(content_length or "")
    return length if status in (200, 206) and length is not None else -1


def probe_ranged(source: Source, timeout: float = PROBE_TIMEOUT) -> int:
    """The total length of a source that must answer ranges (source-CDN pattern).

    One ``Range: bytes=0-0`` GET proves range support (206) and gives the length in
    ``Content-Range``; v1 spent a full GET on the length and a second request on the range.
    """
    try:
        with (
            source.client(timeout, PROBE_RECEIVE_BUFFER) as client,
            client.stream(
                "GET", source.url, headers=source.request_headers(Range="bytes=0-0")
            ) as response,
        ):
            status = response.status_code
            content_range = response.headers.get("Content-Range", "")
    except httpx.HTTPError as exc:
        raise SourceError(f"cannot reach the source: {exc}") from exc
    length_from_head(status, None)
    if status != 206:
        raise SourceError(f"the source answered {status} to a range request, not 206")
    parsed = parse_content_range(content_range)
    if parsed is None or parsed[:2] != (0, 0) or not parsed[2]:
        raise SourceError(f"the source gave no usable length ({content_range[:80]!r})")
    return parsed[2]
