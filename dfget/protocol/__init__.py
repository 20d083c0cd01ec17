"""The Dragonfly v1 protocol, shared by the downloader, the peer server and the supernode.

``codes`` (result codes and names), ``wire`` (numbers, queries, JSON), ``taskid``, ``pieces``
(piece arithmetic and framing), ``ranges`` (Range and Content-Range), ``messages`` (the
supernode API's requests and answers as typed, checked values), ``supernode`` (its calls) and
``peer_server`` (the peer server's small GETs). Every field that comes from the network is
checked here, where it enters.
"""
