"""The ``/rate/`` grants under a host-wide upload limit."""

from __future__ import annotations


def grant(requested: int, total_limit: int, unfinished_total: int) -> int:
    """The rate granted to one download (v1 ``calculateRateLimit``).

    Without a host limit the request is granted as is. Otherwise, when the rates requested by
    all unfinished downloads exceed the limit, each gets its share of the limit, rounded up.
    """
    if total_limit <= 0 or unfinished_total <= total_limit:
        return requested
    return -(-requested * total_limit // unfinished_total)
