"""Where a request goes: a URL as scheme, host, port and target; the TLS settings for https;
the HTTP proxy the environment names."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import ssl


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a URL's bytes come from: scheme, host, port and the request target."""

    scheme: str
    host: str
    port: int
    target: str

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"unsupported URL {url!r}")
        port = parts.port or (443 if scheme == "https" else 80)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        return cls(scheme, parts.hostname, port, target)

    @property
    def origin(self) -> tuple[str, str, int]:
        """Scheme, host and port: what the user's headers are scoped to."""
        return self.scheme, self.host, self.port

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.authority}{self.target}"

    @property
    def origin_key(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port


class TLS:
    """TLS settings for the source: system roots plus ``--cacerts`` files, or no verification.

    The context is built on first use: loading the system roots takes 20-50 ms, which a
    plain-HTTP download never needs.
    """

    def __init__(self, cacerts: Iterable[str] = (), insecure: bool = False) -> None:
        self.cacerts = tuple(cacerts)
        self.insecure = insecure
        self._context: ssl.SSLContext | None = None
        self._lock = threading.Lock()

    def context(self) -> ssl.SSLContext:
        import ssl  # here, not at the top: plain-http downloads start ~9 ms sooner

        with self._lock:
            if self._context is None:
                context = ssl.create_default_context()
                for path in self.cacerts:
                    context.load_verify_locations(cafile=path)
                if self.insecure:
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                self._context = context
            return self._context


def is_ssl_error(exc: BaseException, kind: str = "SSLError") -> bool:
    """Whether ``exc`` is ``ssl.<kind>``; ssl is imported by the first TLS connection only."""
    module = sys.modules.get("ssl")
    return module is not None and isinstance(exc, getattr(module, kind))


def proxy_for(endpoint: Endpoint) -> Endpoint | None:
    """The HTTP proxy the environment names for this endpoint, if any (``no_proxy`` honoured)."""
    if not any(name.lower().endswith("_proxy") for name in os.environ):
        return None  # the usual case, without importing urllib.request (~18 ms)
    import urllib.request

    proxies = urllib.request.getproxies()
    proxy = proxies.get(endpoint.scheme)
    if not proxy or urllib.request.proxy_bypass(endpoint.host):
        return None
    if "://" not in proxy:
        proxy = "http://" + proxy
    return Endpoint.parse(proxy)
