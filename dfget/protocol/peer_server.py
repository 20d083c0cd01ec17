"""The peer server's small control GETs, as dfget 1.0.6 writes them: the downloader registers
its task with its own peer server (``/check/``), asks for its rate share (``/rate/``), hands the
finished file over (``/client/finish``) and checks that a server is up (``/server/ping``)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

from dfget import PROTOCOL_VERSION
from dfget.net.oneshot import TIMEOUT, get, query

OK_BODY = "success"


def check(host: str, port: int, tfn: str, data_dir: Path | str, totallimit: int) -> bool:
    """Register ``tfn`` with the peer server; True if it answers ``<tfn>@<version>``.

    The directory goes out as the file system's bytes (like Go), not latin-1 text.
    """
    reply = get(
        _hostport(host, port),
        f"/check/{_segment(tfn)}",
        [("dataDir", os.fsencode(data_dir)), ("totalLimit", str(totallimit))],
    )
    return reply == (200, f"{tfn}@{PROTOCOL_VERSION}")


def rate(host: str, port: int, tfn: str, rate: int) -> int:
    """The upload-fair rate granted for a requested download rate; on any failure the
    requested rate itself (what v1 applies when its peer server does not answer)."""
    reply = get(_hostport(host, port), f"/rate/{_segment(tfn)}", [("rateLimit", str(rate))])
    if reply is not None and reply[0] == 200:
        try:
            return int(reply[1])
        except ValueError:
            pass
    return rate


def finish(host: str, port: int, tfn: str, task_id: str, cid: str, supernode: str) -> bool:
    """Tell the peer server the download is complete and may be served as verified."""
    params = [("taskFileName", tfn), ("taskID", task_id), ("cid", cid), ("superNode", supernode)]
    return get(_hostport(host, port), f"/client/finish?{query(params)}") == (200, OK_BODY)


def ping(host: str, port: int, timeout: float = TIMEOUT) -> bool:
    """Whether a dfget peer server answers on ``host:port``."""
    return get(_hostport(host, port), "/server/ping", timeout=timeout) == (200, OK_BODY)


def loopback_for(ip: str) -> str:
    """The address to reach a server bound to ``ip`` from this host."""
    if ip in ("", "0.0.0.0"):
        return "127.0.0.1"
    if ip.strip("[]") == "::":
        return "::1"
    return ip


def _hostport(host: str, port: int) -> str:
    host = loopback_for(host).strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _segment(name: str) -> str:
    return quote(name, safe="")
