"""The peer server's HTTP endpoints, byte-compatible with a v1.0.6 uploader.

Go peers send canonicalised header names (``Piecenum``, ``Ratelimit``, ``Datadir``...); the
base handler matches names case-insensitively. Answers carry only ``Content-Type``, ``Date``
and ``Content-Length`` like v1's. Where v1 answered 500 for an unknown task we answer 404.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from pathlib import Path

from dfget import PROTOCOL_VERSION
from dfget.net.server import Handler, Server, is_local_caller
from dfget.protocol.codes import CDN_SOURCE_SOURCE
from dfget.protocol.pieces import (
    TAIL,
    FramingError,
    frame_head,
    raw_request_slice,
    servable_piece_request,
    wrapped_request_slice,
)
from dfget.protocol.ranges import PieceRange, RangeError, parse_range_header
from dfget.uploader import sender
from dfget.uploader.pending import pending_path, wait_until_stored
from dfget.uploader.served_task import Unservable, task_name
from dfget.uploader.service import Uploader

log = logging.getLogger(__name__)

_INT = re.compile(r"[+-]?\d{1,18}")  # what Go's strconv.Atoi accepts (and fits in int64)
OK = "success"


class UploaderServer(Server):
    def __init__(
        self, address: tuple[str, int], uploader: Uploader, listener: socket.socket | None = None
    ) -> None:
        self.uploader = uploader
        super().__init__(address, UploaderHandler, listener)


class UploaderHandler(Handler):
    server: UploaderServer

    def do_GET(self) -> None:  # http.server naming
        route = self.route
        if route.startswith("/peer/file/"):
            self.serve_piece(route.removeprefix("/peer/file/"))
        elif route.startswith("/rate/"):
            self.grant_rate(route.removeprefix("/rate/"))
        elif route.startswith("/check/"):
            self.check_task(route.removeprefix("/check/"))
        elif route == "/client/finish":
            self.finish_task()
        elif route == "/server/ping":
            self.reply(200, OK)
        else:
            self.reply(404, "not found")

    def serve_piece(self, raw_name: str) -> None:
        uploader = self.server.uploader
        uploader.touch()
        name = task_name(raw_name)
        if name is None:
            self.reply(404, "file not found")
            return
        piece_num = _natural(self._single("pieceNum"))
        piece_size = _natural(self._single("pieceSize"))
        try:
            rng = parse_range_header(self._single("Range"))
        except RangeError:
            rng = None
        wrapped = self.header("cdnSource") != CDN_SOURCE_SOURCE
        if (
            piece_num is None
            or piece_size is None
            or rng is None
            or not servable_piece_request(piece_size, rng, wrapped)
        ):
            self.reply(400, "invalid params")
            return
        if not self._announced_piece_lands(name, piece_num):
            self.reply(404, "piece not available")
            return
        try:
            with uploader.uploading():
                fd, size = uploader.store.open(name)
                try:
                    body = _piece_body(fd, size, rng, piece_num, piece_size, wrapped)
                except RangeError:
                    self.reply(416, "range not satisfiable")
                except FramingError:
                    self.reply(400, "invalid params")
                else:
                    self._send(name, body)
                finally:
                    os.close(fd)
        except Unservable as exc:
            self.reply(exc.status, exc.message)

    def _announced_piece_lands(self, name: str, piece_num: int) -> bool:
        """A piece its download announced before storing it: hold the request until it lands
        (False: it was given up or did not come in time). Other pieces pass at once."""
        task = self.server.uploader.store.get(name)
        if task is None or task.finished:
            return True
        return wait_until_stored(pending_path(task.data_dir, name), piece_num)

    def _send(self, name: str, body: sender.Body) -> None:
        zstd = sender.wants_zstd(self.header("Accept-Encoding"))
        uploader = self.server.uploader
        deadline = uploader.upload_deadline(body.length)
        try:
            sender.send(self.connection, body, uploader.bucket, zstd, deadline)
        except OSError as exc:
            # The client left or the file shrank under us: the response is incomplete, so the
            # connection cannot carry another one.
            self.close_connection = True
            log.debug("piece of %s to %s not completed: %s", name, self.address_string(), exc)
            return
        log.debug(
            "sent %d bytes of %s at %d to %s", body.count, name, body.offset, self.address_string()
        )

    def grant_rate(self, raw_name: str) -> None:
        if not self._local_caller():  # v1 lets anyone throttle our downloads to a trickle
            self.reply(403, "forbidden")
            return
        uploader = self.server.uploader
        uploader.touch()
        text = self.header("rateLimit")
        if not _INT.fullmatch(text):
            self.reply(400, "invalid rate limit")
            return
        granted = uploader.grant(task_name(raw_name) or "", int(text))
        # Without a host limit v1 echoes the header verbatim.
        self.reply(200, str(granted) if uploader.total_limit > 0 else text)

    def check_task(self, raw_name: str) -> None:
        if not self._local_caller():
            # Only this host's dfget registers downloads: v1 lets anyone fill the task table
            # (and choose the directory files are served from).
            self.reply(403, "forbidden")
            return
        uploader = self.server.uploader
        uploader.touch()
        name = task_name(raw_name)
        if name is None:
            self.reply(400, "invalid task file name")
            return
        header = _path_header(self.header("dataDir"))
        data_dir = uploader.data_dir_for(header)
        if header and data_dir is None and Path(header).resolve() != uploader.data_dir:
            # The dfget of another work home, which found our port in its stale meta file: its
            # pieces are not in our data dir. Refused, it starts a server of its own.
            self.reply(403, "dataDir is not served by this server")
            return
        limit = self.header("totalLimit")
        if _INT.fullmatch(limit):
            uploader.set_total_limit(int(limit))
        if not uploader.store.register(name, data_dir):
            self.reply(503, "too many tasks")
            return
        self.reply(200, f"{name}@{PROTOCOL_VERSION}")

    def finish_task(self) -> None:
        query = self.query
        tfn, task_id, cid = (query.get(key, "") for key in ("taskFileName", "taskID", "cid"))
        name = task_name(tfn) if tfn else None
        if name is None or not task_id or not cid:
            self.reply(400, "invalid params")
            return
        if not self._local_caller():
            # Only the host's own dfget finishes downloads; a remote caller could otherwise
            # point our service-down reports at any address.
            self.reply(403, "forbidden")
            return
        uploader = self.server.uploader
        if not uploader.store.finish(name, task_id, cid, query.get("superNode", "")):
            log.warning("finished task %s has no service file; it will not be served", name)
            self.reply(200, OK)
            return
        self.reply(200, OK)  # the download need not wait for the hashing
        uploader.finished(name)

    def _single(self, name: str) -> str:
        """A header that must come once: a repeated one is ambiguous, so it counts as invalid
        (a proxy and this server might each act on a different copy)."""
        values = self.headers.get_all(name) or []
        return values[0].strip() if len(values) == 1 else ""

    def _local_caller(self) -> bool:
        return is_local_caller(self.client_address[0], self.connection.getsockname()[0])


def _piece_body(
    fd: int, size: int, rng: PieceRange, piece_num: int, piece_size: int, wrapped: bool
) -> sender.Body:
    """The bytes answering one piece request; RangeError means 416."""
    if not wrapped:
        served = raw_request_slice(rng, size)
        return sender.Body(fd, served.raw_start, served.data_len)
    served = wrapped_request_slice(rng, piece_num, size)
    head = frame_head(served.data_len, piece_size)
    return sender.Body(fd, served.raw_start, served.data_len, head, TAIL)


def _path_header(value: str) -> str:
    """A path sent as raw bytes (Go does not encode headers); http.server decoded it as latin-1."""
    return os.fsdecode(value.encode("latin-1"))


def _natural(text: str) -> int | None:
    """A non-negative integer header value, or None."""
    return int(text) if _INT.fullmatch(text) and not text.startswith("-") else None
