"""The small GETs of the peer-server protocol, as dfget 1.0.6 writes them.

The downloader uses these to talk to its own peer server, the peer server uses
:func:`service_down` to tell the supernode it dropped a task. Plain ``http.client`` with short
timeouts: cheap to import, one connection per call, never a hang. Query values are not
escaped, like v1 (``superNode=127.0.0.1:8002``); only bytes that would make the request line
invalid are percent-encoded, and the server decodes them.
"""

from __future__ import annotations

import http.client
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

from dfget import PROTOCOL_VERSION
from dfget.protocol import DEFAULT_SUPERNODE_PORT, raw_query

log = logging.getLogger(__name__)

TIMEOUT = 2.0
USER_AGENT = f"dfget/{PROTOCOL_VERSION}"
OK_BODY = "success"


def check(host: str, port: int, tfn: str, data_dir: Path | str, totallimit: int) -> bool:
    """Register ``tfn`` with the peer server; True if it answers ``<tfn>@<version>``.

    The directory goes out as the file system's bytes (like Go), not latin-1 text.
    """
    reply = _get(
        _hostport(host, port),
        f"/check/{_segment(tfn)}",
        [("dataDir", os.fsencode(data_dir)), ("totalLimit", str(totallimit))],
    )
    return reply == (200, f"{tfn}@{PROTOCOL_VERSION}")


def rate(host: str, port: int, tfn: str, rate: int) -> int:
    """The upload-fair rate granted for a requested download rate; on any failure the
    requested rate itself (what v1 applies when its peer server does not answer)."""
    reply = _get(_hostport(host, port), f"/rate/{_segment(tfn)}", [("rateLimit", str(rate))])
    if reply is not None and reply[0] == 200:
        try:
            return int(reply[1])
        except ValueError:
            pass
    return rate


def finish(host: str, port: int, tfn: str, task_id: str, cid: str, supernode: str) -> bool:
    """Tell the peer server the download is complete and may be served as verified."""
    query = _query(
        [("taskFileName", tfn), ("taskID", task_id), ("cid", cid), ("superNode", supernode)]
    )
    return _get(_hostport(host, port), f"/client/finish?{query}") == (200, OK_BODY)


def ping(host: str, port: int, timeout: float = TIMEOUT) -> bool:
    """Whether a dfget peer server answers on ``host:port``."""
    return _get(_hostport(host, port), "/server/ping", timeout=timeout) == (200, OK_BODY)


def service_down(supernode: str, task_id: str, cid: str) -> bool:
    """``/peer/service/down`` to ``supernode`` (``ip:port``); True if it answered HTTP 200."""
    reply = _get(
        _with_port(supernode), f"/peer/service/down?{_query([('taskId', task_id), ('cid', cid)])}"
    )
    return reply is not None and reply[0] == 200


def loopback_for(ip: str) -> str:
    """The address to reach a server bound to ``ip`` from this host."""
    if ip in ("", "0.0.0.0"):
        return "127.0.0.1"
    if ip.strip("[]") == "::":
        return "::1"
    return ip


def _get(
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


def _hostport(host: str, port: int) -> str:
    host = loopback_for(host).strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _with_port(node: str) -> str:
    """``ip:port`` as recorded from ``/client/finish``; the v1 default port if none is given."""
    return node if ":" in node.rsplit("]", 1)[-1] else f"{node}:{DEFAULT_SUPERNODE_PORT}"


def _segment(name: str) -> str:
    return quote(name, safe="")


def _query(params: Iterable[tuple[str, str]]) -> str:
    """``a=1&b=2`` in v1's order, values raw except bytes a request line cannot carry."""
    return raw_query((name, quote(value, safe=":~@!$()*+,;")) for name, value in params)
