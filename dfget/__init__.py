"""dfget: a Dragonfly v1 compatible P2P downloader, peer server and compact supernode.

Importing the package is kept cheap on purpose: scripts (and dfdaemon) run `dfget` once per blob,
so heavy modules (httpx, tqdm, zstandard) are imported only where they are used.
"""

__version__ = "0.1.0"

# The version spoken on the wire. Go peers compare `/check/` answers and the supernode records
# it; we present ourselves as the protocol release we are compatible with.
PROTOCOL_VERSION = "1.0.6"
