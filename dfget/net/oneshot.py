"""One-shot GETs for the small control calls (peer server, service-down): plain
``http.client`` with short timeouts, cheap to import, one connection per call, never a hang.
Query values are not escaped, like v1 (``superNode=127.0.0.1:8002``); only bytes that would make
the request line invalid are percent-encoded, and the servers decode them.
"""

from __future__ import annotations

import http.client
import logging
from collections.abc import Iterable
from urllib.parse import quote

from dfget import PROTOCOL_VERSION
from dfget.protocol.wire import raw_query

log = logging.getLogger(__name__)

TIMEOUT = 2.0
USER_AGENT = f"dfget/{PROTOCOL_VERSION}"


def get(
    hostport: str,
    target: str,
    headers: Iterable[tuple[str, str | bytes]] = (),
    timeout: float = TIMEOUT,
) -> tuple[int, str] | None:
    """One GET; ``(status, body)`` or None on any transport error."""
    conn = http.client.HTTPConnection(hostport, timeout=timeout)
    try:
        conn.putrequest("GET", target, skip_accept_encoding=True)
        conn.putheader("User-Agent", USER_AGENT)
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        body = response.read(64 * 1024)
        return response.status, body.decode(errors="replace")
    except (OSError, http.client.HTTPException, ValueError) as exc:
        log.debug("GET http://%s%s failed: %s", hostport, target.split("?")[0], exc)
        return None
    finally:
        conn.close()


def query(params: Iterable[tuple[str, str]]) -> str:
    """``a=1&b=2`` in v1's order, values raw except bytes a request line cannot carry."""
    return raw_query((name, quote(value, safe=":~@!$()*+,;")) for name, value in params)
