"""HTTP plumbing shared by the three roles: the lean client that moves piece and source bytes
(``client``), the small threaded server (``server``), listening sockets, the token bucket, and
one-shot GETs for the small control calls."""
