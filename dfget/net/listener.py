"""Listening TCP sockets the way the peer server and the supernode want them."""

from __future__ import annotations

import socket

BACKLOG = 256


def listen(host: str, port: int, backlog: int = BACKLOG) -> socket.socket:
    """A TCP socket listening on ``host:port`` ("" for all interfaces). An IPv6 literal listens
    dual stack when it is "::" (IPv6 only is fine for a specific address). No SO_REUSEADDR: a
    port in use must fail to bind, so that a second server never shares it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock
