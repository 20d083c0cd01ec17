"""Starting the kernel's write-back of finished data early (Linux ``sync_file_range``).

A download ends with an fsync (a crash must never leave a renamed file without its data).
Without help that fsync finds the whole file dirty and waits for all of it, while the CPUs
idle. Asking the kernel to start writing each stretch right after it was written overlaps that
I/O with the transfer, and the final fsync finds little left to wait for; starting it only for
the completed prefix gained less. ``python -m tests.bench.source`` and ``tests.bench.p2p``
measure the effect (their runs include the final fsync).
"""

from __future__ import annotations

from typing import Any

_SYNC_FILE_RANGE_WRITE = 2  # start write-out of dirty pages, wait for nothing
_sync_file_range: Any = None


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to begin writing ``[offset, offset + length)`` of ``fd`` to disk.

    A hint: does nothing where the call does not exist, and its errors are left to the fsync.
    """
    global _sync_file_range
    if _sync_file_range is None:
        _sync_file_range = _load()
    if _sync_file_range:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def _load() -> Any:
    try:
        import ctypes

        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return False
    function.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function
