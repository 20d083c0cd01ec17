"""The work home is private: task names, URLs, logs and unverified bytes are nobody else's.

Directories dfget creates there are 0700 and its own files 0600 (the home's existing
directories keep their mode: the operator chose it).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """``path``, created with any missing parents as 0700 directories."""
    missing = []
    parent = path
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made by another process meanwhile
            directory.mkdir(mode=DIR_MODE)
    return path


def touch_private(path: Path) -> None:
    """Create ``path`` as an empty 0600 file unless it exists (before a logger appends to it)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, FILE_MODE))
