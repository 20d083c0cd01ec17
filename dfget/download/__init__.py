"""One download, from settings to a verified file at the destination (or a clean failure).

``run`` (run.py) orchestrates: ``network`` joins the P2P network and starts the peer server,
``p2p`` pulls pieces, ``source`` fetches what P2P did not deliver, ``resumption`` adopts an
earlier attempt's bytes and keeps this one's, ``verify`` checks the digests, ``target`` is the
work file and its atomic publication, ``output`` the report.
"""

from dfget.download.run import run

__all__ = ["run"]
