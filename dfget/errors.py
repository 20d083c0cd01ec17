"""One exception hierarchy, one exit-code table.

Every failure a user can see maps to exactly one exit code below 256. dfdaemon treats 0 as
success and 100 as "authentication required"; everything else is a failure whose code says why.

Every exception dfget raises on purpose derives from :class:`DfgetError`. The categories are
here; modules define the specific ones they raise beside their code:

- ``UsageError``: flags, configuration, a trace file (``SettingsError``, ``ConfigError``...).
- ``LocalIOError``, ``DownloadTimeout``, ``DigestMismatchError``, ``Interrupted``.
- ``NetworkError``: the network failed us (``SupernodeError``).
- ``ProtocolError``: a peer, supernode or source sent something the protocol does not allow,
  and it was refused where it entered (``FramingError``, ``RangeError``, ``WireError``...).
- ``SourceHTTPError``: the source answered with an unusable status (``NotFoundError``,
  ``AuthRequiredError``), and ``SupernodeAuthError``.
- ``Refused``: a server of ours declines a request it received (a supernode over its bounds,
  a conflicting task, a peer server asked for what it does not serve), answered with an error
  status rather than raised to the user.
- Flow between a download's paths: ``P2PFallback`` (P2P cannot deliver, the source takes over),
  ``P2PFailedError`` (and ``--notbs`` forbids that), ``Cancelled`` (a path is abandoned).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    USAGE = 1
    INTERNAL = 70
    LOCAL_IO = 77
    P2P_FAILED = 80
    SOURCE_HTTP = 81
    NOT_FOUND = 82
    NETWORK = 83
    DIGEST_MISMATCH = 84
    TIMEOUT = 85
    AUTH_REQUIRED = 100
    INTERRUPTED = 130
    TERMINATED = 143


EXIT_CODE_HELP = {
    ExitCode.OK: "success: the file is at the destination and its digest verified",
    ExitCode.USAGE: "usage error: bad flag, URL, output path or configuration",
    ExitCode.INTERNAL: (
        "internal error: a bug in dfget, logged in full; the destination was not touched"
    ),
    ExitCode.LOCAL_IO: (
        "local I/O error: cannot create, write or rename files (disk full, permissions)"
    ),
    ExitCode.P2P_FAILED: "P2P download failed and --notbs forbids falling back to the source",
    ExitCode.SOURCE_HTTP: "the source answered with an HTTP error status",
    ExitCode.NOT_FOUND: "the source answered 404/410: no such file",
    ExitCode.NETWORK: "network error: connection refused, reset or truncated after retries",
    ExitCode.DIGEST_MISMATCH: "the downloaded data does not match the expected digest",
    ExitCode.TIMEOUT: "the download did not finish within --timeout",
    ExitCode.AUTH_REQUIRED: "authentication required or refused by the source (HTTP 401/403/407)",
    ExitCode.INTERRUPTED: "interrupted by SIGINT (Ctrl-C)",
    ExitCode.TERMINATED: "terminated by SIGTERM",
}


def exit_code_table() -> str:
    """The table as shown in --help and the man page."""
    return "\n".join(f"{int(code):>5}  {text}" for code, text in EXIT_CODE_HELP.items())


class DfgetError(Exception):
    """Base of every error dfget reports to the user."""

    exit_code: ExitCode = ExitCode.NETWORK


class UsageError(DfgetError):
    exit_code = ExitCode.USAGE


class LocalIOError(DfgetError):
    exit_code = ExitCode.LOCAL_IO


class NetworkError(DfgetError):
    exit_code = ExitCode.NETWORK


class DownloadTimeout(DfgetError):
    exit_code = ExitCode.TIMEOUT


class ProtocolError(DfgetError):
    """What a peer, supernode or source sent breaks the protocol; it is refused."""

    exit_code = ExitCode.NETWORK


class Refused(DfgetError):
    """A server of ours declines a request (answered with an error status, not raised to the
    user)."""


class SourceHTTPError(DfgetError):
    """The origin answered with a status we cannot use."""

    exit_code = ExitCode.SOURCE_HTTP

    def __init__(self, url: str, status: int, detail: str = "") -> None:
        self.url = url
        self.status = status
        message = f"{url}: HTTP {status}"
        super().__init__(f"{message} ({detail})" if detail else message)


class NotFoundError(SourceHTTPError):
    exit_code = ExitCode.NOT_FOUND


class AuthRequiredError(SourceHTTPError):
    exit_code = ExitCode.AUTH_REQUIRED


class SupernodeAuthError(DfgetError):
    """The supernode says the source needs credentials (code 608)."""

    exit_code = ExitCode.AUTH_REQUIRED


def source_http_error(url: str, status: int, detail: str = "") -> SourceHTTPError:
    """The error class for an origin status: auth, not found or generic."""
    if status in (401, 403, 407):
        return AuthRequiredError(url, status, detail)
    if status in (404, 410):
        return NotFoundError(url, status, detail)
    return SourceHTTPError(url, status, detail)


class DigestMismatchError(DfgetError):
    exit_code = ExitCode.DIGEST_MISMATCH

    def __init__(self, algorithm: str, expected: str, actual: str, suspects: str = "") -> None:
        self.algorithm = algorithm
        self.expected = expected
        self.actual = actual
        message = (
            f"{algorithm} digest mismatch: expected {algorithm}:{expected}, "
            f"got {algorithm}:{actual}"
        )
        super().__init__(f"{message}; suspect: {suspects}" if suspects else message)

    def blaming(self, suspects: str) -> DigestMismatchError:
        """The same mismatch, naming where the suspect bytes came from."""
        return DigestMismatchError(self.algorithm, self.expected, self.actual, suspects)


class P2PFailedError(DfgetError):
    """P2P did not complete and falling back to the source is not allowed (--notbs)."""

    exit_code = ExitCode.P2P_FAILED


class P2PFallback(DfgetError):
    """P2P cannot (or can no longer) deliver; the caller fetches what is missing elsewhere.
    ``reason`` is v1's back-source reason (protocol/codes.py)."""

    exit_code = ExitCode.P2P_FAILED

    def __init__(self, reason: int, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Cancelled(DfgetError):
    """Raised inside a fetch thread when its path of the download is being abandoned."""


class Interrupted(DfgetError):
    """SIGINT or SIGTERM arrived; the partial download has been cleaned up."""

    def __init__(self, signum: int) -> None:
        import signal

        self.signum = signum
        self.exit_code = ExitCode.TERMINATED if signum == signal.SIGTERM else ExitCode.INTERRUPTED
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
