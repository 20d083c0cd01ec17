"""Log files in v1's layout and line format.

``<home>/logs/dfclient.log`` (downloads) and ``dfserver.log`` (peer server), size-rotated
(40 MB, one backup), lines like ``2026-11-29 01:12:34.567 INFO sign:4242 : message``.
Request headers are never logged wholesale: user headers may carry credentials.
"""

from __future__ import annotations

import io
import logging
import logging.handlers
import os
import sys
from pathlib import Path

from dfget.private import private_dir, touch_private

MAX_BYTES = 40 * 1024 * 1024
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


class SharedRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log that several processes append to: dfdaemon runs one dfget per blob, all
    writing ``dfclient.log``. When another process has rotated the file, reopen it rather than
    rotate again (which would throw away the backup that process just made)."""

    def _open(self) -> io.TextIOWrapper:  # logging API
        """The log file, created 0600 (rotation makes a new one)."""
        touch_private(Path(self.baseFilename))
        return super()._open()

    def shouldRollover(self, record: logging.LogRecord) -> bool:  # logging API
        stream = self.stream
        if stream is not None and not _same_file(self.baseFilename, stream.fileno()):
            stream.close()
            self.stream = self._open()
        return bool(super().shouldRollover(record))


def _same_file(path: str, fd: int) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except OSError:
        return False


def setup(home: Path, verbose: bool, file_name: str, sign: str = "", console: bool = False) -> None:
    """Send the ``dfget`` loggers to ``<home>/logs/<file_name>`` (stderr if that fails)."""
    line = f"%(asctime)s.%(msecs)03d %(levelname).4s sign:{sign or '%(process)d'} : %(message)s"
    formatter = logging.Formatter(line, DATE_FORMAT)
    handlers: list[logging.Handler] = []
    try:
        logs = private_dir(home / "logs")
        touch_private(logs / file_name)
        handlers.append(
            SharedRotatingFileHandler(
                logs / file_name, maxBytes=MAX_BYTES, backupCount=1, encoding="utf-8"
            )
        )
    except OSError as exc:
        print(f"dfget: cannot open the log in {home / 'logs'}: {exc}", file=sys.stderr)
        console = True
    if console:
        handlers.append(logging.StreamHandler(sys.stderr))
    root = logging.getLogger("dfget")
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
