"""Counters for ``GET /metrics`` in the Prometheus text format.

What an operator wants to see first: how many pieces (and bytes) each kind of holder served
(peer, cdn, source): the whole point of the scheduler is that ``peer`` dominates.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

PREFIX = "dragonfly_supernode_"

HELP = {
    "tasks": ("gauge", "Tasks known to the supernode."),
    "peers": ("gauge", "Registered clients, across tasks."),
    "api_requests_total": ("counter", "Requests from dfget clients, by route."),
    "registrations_total": ("counter", "POST /peer/registry answers by result."),
    "pulls_total": ("counter", "GET /peer/task answers by code."),
    "pieces_total": ("counter", "Pieces stored by clients, by kind of holder they came from."),
    "piece_bytes_total": ("counter", "Raw bytes of those pieces, by kind of holder."),
    "piece_errors_total": ("counter", "Client reports of a failed piece, by kind of holder."),
    "cdn_fetches_total": ("counter", "CDN fetches of a source, by result."),
    "cdn_source_bytes_total": ("counter", "Raw bytes the CDN fetched from sources."),
    "downloads_total": ("counter", "Downloads reported by dfget (POST /task/metrics), by result."),
}

Labels = tuple[tuple[str, str], ...]


class Metrics:
    """Thread-safe labelled counters; gauges are supplied at render time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = {}

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._counters.setdefault(name, {})
            series[key] = series.get(key, 0) + amount

    def value(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._counters.get(name, {}).get(tuple(sorted(labels.items())), 0)

    def render(self, gauges: Mapping[str, float]) -> str:
        with self._lock:
            series = {name: dict(values) for name, values in self._counters.items()}
        series.update({name: {(): value} for name, value in gauges.items()})
        lines: list[str] = []
        for name in sorted(series):
            kind, text = HELP[name]
            lines += [f"# HELP {PREFIX}{name} {text}", f"# TYPE {PREFIX}{name} {kind}"]
            for labels, value in sorted(series[name].items()):
                text = ",".join(f'{key}="{_escape(val)}"' for key, val in labels)
                selector = f"{PREFIX}{name}{{{text}}}" if labels else f"{PREFIX}{name}"
                lines.append(f"{selector} {_number(value)}")
        return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    """Exact integers (byte counts beyond 1e7 must not turn into 1.04858e+07)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
