"""Parsing and validation of ``POST /peer/registry`` bodies.

The Go supernode matches JSON keys case-insensitively (dfget writes ``rawUrl``, the schema says
``rawURL``), also takes ``application/x-www-form-urlencoded``, and validates a few fields.
Unlike v1 we accept IPv6 peer addresses: our own dfget may advertise one.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from dfget.errors import ProtocolError
from dfget.protocol.taskid import task_id, task_url
from dfget.protocol.wire import decimal, headers_to_map, lower_keys
from dfget.redact import redact_url

log = logging.getLogger(__name__)

_PEER_PATH = re.compile(r"/peer/file/[^/\\?#\x00-\x1f\x7f]+")
PEER_PORT_MIN = 15000
PEER_PORT_MAX = 65000


class InvalidRegistration(ProtocolError, ValueError):
    """The body cannot be parsed or a field is invalid (HTTP 500, as in v1)."""


@dataclass(frozen=True, slots=True)
class PeerRegistration:
    supernode_ip: str
    raw_url: str
    task_url: str
    cid: str
    ip: str
    host_name: str
    port: int
    path: str
    version: str = ""
    md5: str = ""
    identifier: str = ""
    call_system: str = ""
    headers: tuple[str, ...] = ()
    dfdaemon: bool = False
    insecure: bool = False
    root_cas: tuple[bytes, ...] = ()

    @property
    def sign(self) -> str:
        """What besides the URL tells tasks apart: the md5, else the identifier."""
        return self.md5 or self.identifier

    @property
    def header_map(self) -> dict[str, str]:
        return headers_to_map(self.headers)

    @property
    def task_id(self) -> str:
        return task_id(self.task_url, self.sign, self.header_map.get("Range"))


def parse_registration(body: bytes, content_type: str) -> PeerRegistration:
    """A validated registration from a JSON or form body."""
    if content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
        fields = _form_fields(body)
    else:
        try:
            decoded = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise InvalidRegistration(f"malformed JSON body: {exc}") from exc
        if not isinstance(decoded, dict):
            raise InvalidRegistration("the body must be a JSON object")
        fields = lower_keys(decoded)
    return _validate(fields)


def _form_fields(body: bytes) -> dict[str, Any]:
    try:
        pairs = parse_qs(body.decode(), keep_blank_values=True)
    except UnicodeDecodeError as exc:
        raise InvalidRegistration(f"malformed form body: {exc}") from exc
    fields: dict[str, Any] = {}
    for name, values in lower_keys(pairs).items():
        if name in ("headers", "rootcas"):
            fields[name] = values
        elif name == "port":
            port = decimal(values[0].removeprefix("-"))
            negative = values[0].startswith("-")
            fields[name] = values[0] if port is None else -port if negative else port
        elif name in ("dfdaemon", "insecure"):
            fields[name] = values[0].lower() == "true"
        else:
            fields[name] = values[0]
    return fields


def _validate(fields: dict[str, Any]) -> PeerRegistration:
    text = {name: _string(fields, name) for name in _STRING_FIELDS}
    for name in ("cid", "path"):
        if not text[name]:
            raise InvalidRegistration(f"{name} must not be empty")
    for name in ("hostname", "callsystem"):
        if name in fields and not text[name]:
            raise InvalidRegistration(f"{name} must not be empty when given")
    if not _PEER_PATH.fullmatch(text["path"]) or text["path"].endswith(("/.", "/..")):
        # Other peers put it in their request line: no CR/LF, no second path or query.
        raise InvalidRegistration(f"path {text['path'][:60]!r} is not /peer/file/<name>")
    try:
        scheme_url = urlsplit(text["rawurl"])
    except ValueError:  # "http://[x": not a valid IPv6 literal
        scheme_url = urlsplit("")
    if scheme_url.scheme.lower() not in ("http", "https") or not scheme_url.netloc:
        raise InvalidRegistration(f"rawUrl {redact_url(text['rawurl'])!r} is not an http(s) URL")
    try:
        ipaddress.ip_address(text["ip"])
    except ValueError as exc:
        raise InvalidRegistration(f"ip {text['ip']!r} is not an IP address") from exc
    port = fields.get("port", 0)
    if not isinstance(port, int) or isinstance(port, bool):
        raise InvalidRegistration("port must be an integer")
    if port and not PEER_PORT_MIN <= port <= PEER_PORT_MAX:
        raise InvalidRegistration(f"port {port} is outside {PEER_PORT_MIN}-{PEER_PORT_MAX}")
    return PeerRegistration(
        supernode_ip=text["supernodeip"],
        raw_url=text["rawurl"],
        task_url=trusted_task_url(text["rawurl"], text["taskurl"]),
        cid=text["cid"],
        ip=text["ip"],
        host_name=text["hostname"],
        port=port,
        path=text["path"],
        version=text["version"],
        md5=text["md5"].lower(),
        identifier=text["identifier"],
        call_system=text["callsystem"],
        headers=tuple(_strings(fields, "headers")),
        dfdaemon=_flag(fields, "dfdaemon"),
        insecure=_flag(fields, "insecure"),
        root_cas=tuple(_base64(item) for item in _strings(fields, "rootcas")),
    )


def trusted_task_url(raw_url: str, claimed: str) -> str:
    """The task URL a registration may use: ``taskUrl`` only when it is ``rawUrl`` without some
    of its query parameters (v1's ``--filter``), else ``rawUrl`` itself.

    The task id comes from the task URL, and the CDN fetches ``rawUrl``: a registrant free to
    pair any ``taskUrl`` with its own ``rawUrl`` would attach its bytes to another URL's task.
    """
    if not claimed or claimed == raw_url:
        return raw_url
    _, _, query = raw_url.partition("?")
    kept = {p.split("=", 1)[0] for p in claimed.partition("?")[2].split("&") if p}
    dropped = [p.split("=", 1)[0] for p in query.split("&") if p.split("=", 1)[0] not in kept]
    if task_url(raw_url, dropped) == claimed:
        return claimed
    log.info("taskUrl is not rawUrl less some query parameters: keying the task on rawUrl")
    return raw_url


_STRING_FIELDS = (
    "supernodeip",
    "rawurl",
    "taskurl",
    "cid",
    "ip",
    "hostname",
    "path",
    "version",
    "md5",
    "identifier",
    "callsystem",
)


def _string(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidRegistration(f"{name} must be a string")
    return value.strip()


def _strings(fields: dict[str, Any], name: str) -> list[str]:
    value = fields.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidRegistration(f"{name} must be a list of strings")
    return value


def _flag(fields: dict[str, Any], name: str) -> bool:
    value = fields.get(name, False)
    if not isinstance(value, bool):
        raise InvalidRegistration(f"{name} must be a boolean")
    return value


def _base64(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRegistration("rootCAs entries must be base64") from exc
