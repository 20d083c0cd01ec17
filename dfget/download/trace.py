"""``--trace FILE``: one JSON line per piece event, and the summary ``dfget trace FILE`` prints.

The tool an operator reaches for when asking "why did node 2 hit the registry?": every piece
says which holder served it, how many bytes, how long it took and whether it failed.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import IO, Any

from dfget.errors import UsageError

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class Trace:
    """Thread-safe JSON-lines writer; zstd-compressed when the name ends in ``.zst``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._raw = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._out: IO[bytes] = self._raw
        if path.suffix == ".zst":
            import zstandard

            self._out = zstandard.ZstdCompressor().stream_writer(self._raw)
        self._t0 = time.monotonic()

    def event(self, name: str, /, **fields: Any) -> None:
        record = {"t": round(time.monotonic() - self._t0, 4), "event": name, **fields}
        line = json.dumps(record, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            self._out.write(line)

    def close(self) -> None:
        with self._lock:
            self._out.close()
            if self._out is not self._raw:
                self._raw.close()


class TraceError(UsageError, ValueError):
    """A file that is not a readable trace."""


def read_events(path: Path) -> list[dict[str, Any]]:
    """The events of a trace; a last line cut short (dfget killed mid-write) is dropped."""
    try:
        data = path.read_bytes()
        if path.suffix == ".zst" or data[:4] == ZSTD_MAGIC:
            import zstandard

            try:
                data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
            except zstandard.ZstdError as exc:
                raise TraceError(f"{path}: not a zstd-compressed trace ({exc})") from exc
    except OSError as exc:
        raise TraceError(f"cannot read {path}: {exc.strerror or exc}") from exc
    lines = data.splitlines()
    events = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            if number == len(lines) and not data.endswith(b"\n"):
                break
            raise TraceError(f"{path}: line {number} is not a JSON trace event") from None
        if not isinstance(event, dict):
            raise TraceError(f"{path}: line {number} is not a JSON trace event")
        events.append(event)
    return events


def summarize(events: list[dict[str, Any]], slowest: int = 5) -> str:
    """Per-holder totals, failures, why the source was used, and the slowest pieces."""
    holders: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    pieces = [e for e in events if e.get("event") == "piece"]
    for e in pieces:
        stats = holders[f"{e.get('kind')} {e.get('holder')}"]
        if e.get("ok"):
            stats["pieces"] += 1
            stats["bytes"] += e.get("bytes", 0)
            stats["ms"] += e.get("ms", 0)
        else:
            stats["failures"] += 1
    lines = [f"{len(pieces)} piece events"]
    for holder, stats in sorted(holders.items(), key=lambda item: -item[1]["bytes"]):
        mib = stats["bytes"] / 1048576
        per_piece = stats["ms"] / max(stats["pieces"], 1)
        lines.append(
            f"  {holder}: {int(stats['pieces'])} pieces, {mib:.1f} MiB, "
            f"{int(stats['failures'])} failures, {per_piece:.0f} ms/piece"
        )
    reasons = [e.get("reason") for e in events if e.get("event") == "source"]
    if reasons:
        lines.append("source used because: " + "; ".join(str(r) for r in dict.fromkeys(reasons)))
    ok = sorted((e for e in pieces if e.get("ok")), key=lambda e: -e.get("ms", 0))[:slowest]
    if ok:
        lines.append("slowest pieces:")
        lines += [
            f"  {_what(e)} from {e.get('kind')} {e.get('holder')}: {e.get('ms')} ms" for e in ok
        ]
    failed = [e for e in pieces if not e.get("ok")]
    if failed:
        lines.append("failures:")
        lines += [
            f"  {_what(e)} from {e.get('kind')} {e.get('holder')}: {e.get('error')}"
            for e in failed[:20]
        ]
    return "\n".join(lines)


def _what(event: dict[str, Any]) -> str:
    piece = event.get("piece")
    prefix = f"piece {piece} " if piece is not None else ""
    return f"{prefix}range {event.get('range')}"
