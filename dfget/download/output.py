"""What a download prints: the v1 style result line, the per-holder summary, or one JSON object.

Messages never share a stream with file data: with ``-o -`` they all go to stderr.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO
from urllib.parse import unquote, urlsplit

from dfget.config import Settings
from dfget.download.accounting import Accounting
from dfget.errors import DfgetError, ExitCode
from dfget.redact import redact_url

if TYPE_CHECKING:
    from dfget.protocol.supernode import RequestCount


def default_output(url: str) -> str:
    """v1: the URL's last path segment, in the current directory.

    Decoded first, then split: an encoded separator (``%2e%2e%2fup.txt``, ``%2Ftmp%2Fx``)
    cannot name a file outside the current directory.
    """
    path = unquote(urlsplit(url).path).rstrip("/")
    name = path.rsplit("/", 1)[-1]
    if not name or name in (".", "..") or "\x00" in name:
        raise ValueError(f"cannot derive a file name from {url!r}: use --output")
    return name


@dataclass
class Outcome:
    """The facts the final report is made of."""

    started: float = field(default_factory=time.monotonic)
    length: int = 0
    digests: dict[str, str] = field(default_factory=dict)
    verified: list[str] = field(default_factory=list)
    accounting: Accounting = field(default_factory=Accounting)
    reason: int = 0
    resumed_bytes: int = 0
    serving: str = ""
    supernodes: list[str] = field(default_factory=list)  # registered at, in order
    supernode_requests: RequestCount | None = None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


class Reporter:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stream: TextIO = sys.stderr if settings.to_stdout else sys.stdout
        self.notes: list[str] = []  # also in the --json document

    def note(self, message: str) -> None:
        """One line explaining a decision (fallback, supernode unreachable, ...)."""
        self.notes.append(message)
        if not self.settings.quiet:
            print(f"dfget: {message}", file=sys.stderr, flush=True)

    def success(self, outcome: Outcome) -> None:
        if self.settings.json:
            self._json(outcome, None)
            return
        if self.settings.quiet:
            return
        print(
            f"download SUCCESS cost:{outcome.elapsed:.3f}s length:{outcome.length} "
            f"reason:{outcome.reason}",
            file=self.stream,
        )
        print(outcome.accounting.summary(), file=self.stream)
        if outcome.serving:
            print(outcome.serving, file=self.stream)
        self.stream.flush()

    def failure(self, outcome: Outcome, error: DfgetError) -> None:
        if self.settings.json:
            self._json(outcome, error)
            return
        print(
            f"download FAIL({int(error.exit_code)}) cost:{outcome.elapsed:.3f}s "
            f"length:{outcome.length} reason:{outcome.reason} error:{error}",
            file=sys.stderr,
            flush=True,
        )

    def _json(self, outcome: Outcome, error: DfgetError | None) -> None:
        settings = self.settings
        by_kind = outcome.accounting.bytes_by_kind()
        document = {
            "success": error is None,
            "exit_code": int(error.exit_code if error else ExitCode.OK),
            "error": str(error) if error else None,
            "url": redact_url(settings.url),
            "output": str(settings.output),
            "length": outcome.length,
            "duration": round(outcome.elapsed, 3),
            "digests": outcome.digests,
            "verified": outcome.verified,
            "bytes": by_kind,
            "holders": outcome.accounting.as_json(),
            "source_reasons": outcome.accounting.reasons(),
            "source_assigned_pieces": outcome.accounting.assigned_to_source,
            "other_peers": outcome.accounting.other_peers(),
            "backsource_reason": outcome.reason,
            "resumed_bytes": outcome.resumed_bytes,
            "serving": outcome.serving or None,
            "supernodes": outcome.supernodes,
            "supernode_requests": (
                outcome.supernode_requests.as_dict() if outcome.supernode_requests else None
            ),
            "notes": self.notes,
        }
        print(json.dumps(document), file=self.stream, flush=True)


def validate_destination(output: Path) -> None:
    from dfget.errors import UsageError

    if output.is_dir():
        raise UsageError(f"output {output} is a directory")
