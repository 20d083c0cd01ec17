"""The peer server (``dfget server``): serves downloaded pieces to other peers.

The downloader imports :mod:`dfget.uploader.spawn` from here, so this package stays cheap
to import; the server itself is loaded only by :func:`serve`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dfget.uploader.options import ServerOptions


def serve(options: ServerOptions) -> int:
    """Run the peer server until a signal or idleness ends it; returns the exit code."""
    from dfget.uploader.lifecycle import serve as run

    return run(options)
