"""The download port: the CDN cache served as static files, nginx style.

v1 delegated this to nginx rooted at ``<home>/repo``; dfget only needs a single
``Range: bytes=S-E`` answered with 206 and the end clamped at EOF. Files go out with
``socket.sendfile``. Nothing outside the repo root is ever served. Connect-only TCP connections
(Go dfget opens one before every piece, even in the source pattern) are harmless: the base
server simply sees an empty request and closes.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote

from dfget.net.server import Handler
from dfget.protocol.ranges import RangeError, range_sides
from dfget.protocol.wire import decimal


class Unsatisfiable(RangeError):
    """A range that starts at or past EOF (416)."""


def resolve(root: Path, route: str) -> Path | None:
    """The regular file under ``root`` a URL path names, or None (no traversal, no symlink out)."""
    relative = unquote(route).lstrip("/")
    if not relative or "\x00" in relative:
        return None
    root_real = os.path.realpath(root)
    candidate = os.path.realpath(os.path.join(root_real, relative))
    if not candidate.startswith(root_real + os.sep) or not os.path.isfile(candidate):
        return None
    return Path(candidate)


def byte_range(value: str, size: int) -> tuple[int, int] | None:
    """``(start, end)`` of a single range header clamped at EOF; None means "send it all".

    Like nginx: a header that is not one well-formed ``bytes=`` range is ignored.
    """
    sides = range_sides(value)
    if sides is None:
        return None
    start_text, end_text = (side.strip() for side in sides)
    start, end = decimal(start_text), decimal(end_text)
    if not start_text:
        if end is None:
            return None
        if end == 0:
            raise Unsatisfiable(value)
        return max(0, size - end), size - 1
    if start is None or (end_text and (end is None or end < start)):
        return None
    if start >= size:
        raise Unsatisfiable(value)
    return start, min(end, size - 1) if end is not None else size - 1


def serve_file(handler: Handler, root: Path, route: str) -> None:
    """Answer a GET/HEAD for ``route`` from the files under ``root``."""
    path = resolve(root, route)
    if path is None:
        handler.reply(404, "not found")
        return
    requested = handler.header("Range")
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        try:
            selected = byte_range(requested, size) if requested else None
        except Unsatisfiable:
            handler.start_response(416, 0, extra=[("Content-Range", f"bytes */{size}")])
            return
        start, end = selected if selected is not None else (0, size - 1)
        length = max(0, end - start + 1)
        extra = [("Accept-Ranges", "bytes")]
        if selected is not None:
            extra.append(("Content-Range", f"bytes {start}-{end}/{size}"))
        handler.start_response(206 if selected is not None else 200, length, extra=extra)
        if handler.command != "HEAD" and length:
            handler.connection.sendfile(file, start, length)


def make_file_handler(root: Path) -> type[Handler]:
    """A handler class serving ``root`` (the supernode's repo) on the download port."""

    class FileHandler(Handler):
        timeout = 30.0

        def do_GET(self) -> None:
            serve_file(self, root, self.route)

        do_HEAD = do_GET

    return FileHandler
