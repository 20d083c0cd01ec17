"""Command-line interface: parse, build settings, call one function, map errors to exit codes."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from click.core import ParameterSource

from dfget import PROTOCOL_VERSION, __version__
from dfget.config import DEFAULT_CACHE_MIN_FREE, DEFAULT_CONNECTIONS, DEFAULT_HOME, PATTERNS
from dfget.errors import DfgetError, ExitCode, exit_code_table
from dfget.units import parse_duration, parse_rate

if TYPE_CHECKING:
    from dfget.uploader.cache import Amount

    IntParam = click.ParamType[int]
    FloatParam = click.ParamType[float]
    AmountParam = click.ParamType[Amount]
else:  # click < 8.2: ParamType is not generic
    IntParam = FloatParam = AmountParam = click.ParamType

Param = click.Parameter | None
Ctx = click.Context | None


class RateType(IntParam):
    name = "RATE"

    def convert(self, value: Any, param: Param, ctx: Ctx) -> int:
        try:
            return parse_rate(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class DurationType(FloatParam):
    name = "DURATION"

    def convert(self, value: Any, param: Param, ctx: Ctx) -> float:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if seconds < 0:
            self.fail(f"duration {value!r} must not be negative", param, ctx)
        return seconds


F = TypeVar("F", bound=Callable[..., Any])
RATE = RateType()
DURATION = DurationType()


def home_option(help_text: str, path_type: click.Path) -> Callable[[F], F]:
    return click.option(
        "--home",
        type=path_type,
        default=str(DEFAULT_HOME),
        show_default="~/.small-dragonfly",
        help=help_text,
    )


def limit_option(name: str, default: int, help_text: str) -> Callable[[F], F]:
    """A supernode concurrency limit (1-1000)."""
    return click.option(
        name, type=click.IntRange(1, 1000), default=default, show_default=True, help=help_text
    )


def expiretime_option(help_text: str) -> Callable[[F], F]:
    return click.option(
        "--expiretime",
        type=DURATION,
        default=None,
        show_default="unset: the cache budget decides",
        help=help_text,
    )


def alivetime_option(help_text: str) -> Callable[[F], F]:
    return click.option(
        "--alivetime",
        type=DURATION,
        default=None,
        show_default="unset: up while serving",
        help=help_text,
    )


class AmountType(AmountParam):
    """A size (RATE syntax, in bytes) or a percentage of the data filesystem."""

    name = "SIZE|PCT"

    def convert(self, value: Any, param: Param, ctx: Ctx) -> Amount:
        from dfget.uploader.cache import Amount

        if not isinstance(value, str):
            return value  # type: ignore[no-any-return]
        try:
            return Amount.parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


AMOUNT = AmountType()


def cache_options(f: F) -> F:
    """--cache-budget and --cache-min-free, shared by dfget (for the server it starts) and
    dfget server."""
    f = click.option(
        "--cache-min-free",
        type=AMOUNT,
        default=DEFAULT_CACHE_MIN_FREE,
        show_default=True,
        help="Free space the served files never eat into: least recently used files are "
        "dropped first to keep it.",
    )(f)
    return click.option(
        "--cache-budget",
        type=AMOUNT,
        default=None,
        show_default="10%, at most 8GB",
        help="Disk the peer server's served files may take, e.g. 20GB or 25% (of the data "
        "filesystem); beyond it the least recently used file is dropped and reported down.",
    )(f)


# Help sections of the download options, in display order.
SECTIONS = {
    "Source": [
        "url",
        "output",
        "digest",
        "md5",
        "identifier",
        "headers",
        "header_file",
        "cacerts",
        "insecure",
        "filters",
        "connections",
    ],
    "P2P": [
        "pattern",
        "nodes",
        "notbs",
        "supernode_credentials",
        "dfdaemon",
        "callsystem",
        "config",
    ],
    "Limits": ["locallimit", "minrate", "totallimit", "timeout", "clientqueue"],
    "Resume": ["resume", "partial_max_age", "partial_budget"],
    "Output": ["showbar", "quiet", "as_json", "trace", "console", "verbose"],
    "Peer server": [
        "home",
        "ip",
        "port",
        "cache_budget",
        "cache_min_free",
        "expiretime",
        "alivetime",
    ],
}

EPILOG = f"""\b
Examples:
  # A registry blob; its sha256 is verified automatically:
  dfget -u https://registry/v2/library/app/blobs/sha256:<hex> -o layer.tar.gz \\
        --header "Authorization: Bearer $TOKEN"
  # Through two supernodes:
  dfget -u http://origin/file.bin -o file.bin --node sn1:8002,sn2:8002
  # Source only, streamed to a pipe:
  dfget -u http://origin/file.bin -o - --pattern source | tar x

\b
Units: RATE is bytes per second, plain (1048576) or with B, K/KB, M/MB or G/GB (powers of 1024,
case-insensitive: 20M, 100MB, 64k). DURATION is Go syntax (300ms, 30s, 3m0s, 1h30m) or seconds.

\b
Environment: DFGET_<OPTION> sets an option (e.g. DFGET_NODE, DFGET_LOCALLIMIT); DFGET_HEADER_<NAME>
adds a header (DFGET_HEADER_AUTHORIZATION); DFGET_CONFIG names the configuration file.
Precedence: flags > environment > configuration file > defaults.

\b
Exit codes:
{exit_code_table()}
"""


SERVER_EXAMPLES = """\b
Examples:
  # Normally started by dfget itself; by hand, on a fixed port, keeping up to 20 GB:
  dfget server --home /var/lib/dragonfly --ip 10.0.0.5 --port 15001 --cache-budget 20GB
  # v1's timers as upper bounds: drop files 10 minutes after last use, exit after 1h idle:
  dfget server --home /var/lib/dragonfly --expiretime 10m --alivetime 1h
  # Limit what this host uploads to other peers:
  dfget server --home ~/.small-dragonfly --totallimit 50M
"""

SUPERNODE_EXAMPLES = """\b
Examples:
  # Local CDN: the supernode fetches each blob once and serves pieces on port 8001:
  dfget supernode --port 8002 --download-port 8001 --advertise-ip 10.0.0.1
  # Source pattern: peers fetch from the origin, one client per piece at a time:
  dfget supernode --cdn-pattern source --listen-ip :: --advertise-ip 10.0.0.1
"""

CACHE_EXAMPLES = """\b
Examples:
  dfget cache                      # the peer server of ~/.small-dragonfly
  dfget cache --home /var/lib/dragonfly --json
"""

PREWARM_EXAMPLES = """\b
Examples:
  # The first node of a rollout pulls an image's blobs before any docker pull:
  REGISTRY_PASSWORD=... dfget prewarm --registry https://registry.example.com \\
      --repo team/app --tag v1.2 --user puller --jobs 2 \\
      -- --node sn1:8002,sn2:8002 --home /var/lib/dfget --ip 10.0.0.21 --port 15001
"""

TRACE_EXAMPLES = """\b
Examples:
  dfget -u URL -o layer.tar.gz --trace /tmp/pull.jsonl.zst
  dfget trace /tmp/pull.jsonl.zst --slowest 10
"""


class SectionedGroup(click.Group):
    """A group whose own options are listed in sections (Source, P2P, Limits, ...)."""

    def get_help_option(self, ctx: click.Context) -> click.Option | None:
        # DFGET_HELP in dfdaemon's environment must not turn every download into "exit 0".
        option = super().get_help_option(ctx)
        if option is not None:
            option.allow_from_autoenv = False
        return option

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        records = {p.name: p.get_help_record(ctx) for p in self.get_params(ctx)}
        shown: set[str] = set()
        for title, names in SECTIONS.items():
            rows = [records[n] for n in names if records.get(n)]
            shown.update(names)
            if rows:
                with formatter.section(f"{title} options"):
                    formatter.write_dl(rows)  # type: ignore[arg-type]
        rest = [r for n, r in records.items() if n not in shown and r]
        if rest:
            with formatter.section("Other options"):
                formatter.write_dl(rest)
        self.format_commands(ctx, formatter)


@click.group(
    cls=SectionedGroup,
    invoke_without_command=True,
    epilog=EPILOG,
    context_settings={
        "help_option_names": ["-h", "--help"],
        "max_content_width": 100,
        "auto_envvar_prefix": "DFGET",
    },
)
@click.option("-u", "--url", help="Source URL (http or https) of the file to download.")
@click.option(
    "-o",
    "--output",
    help="Destination file; '-' writes to stdout. Default: the URL's last path segment in the "
    "current directory.",
)
@click.option(
    "--digest",
    help="Expected digest 'sha256:<hex>' or 'md5:<hex>'. OCI blob URLs (.../blobs/sha256:<hex>) "
    "are verified automatically.",
)
@click.option("-m", "--md5", help="Expected MD5 of the file (hex); also part of the task id.")
@click.option(
    "-i", "--identifier", help="Task discriminator for the supernode (ignored with --md5)."
)
@click.option(
    "--header",
    "headers",
    multiple=True,
    allow_from_autoenv=False,  # the environment has DFGET_HEADER_<NAME> instead
    help="Request header 'Name: value' (or 'Name:value') for the source; repeatable.",
)
@click.option(
    "--header-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File with one 'Name: value' header per line, so tokens stay off the command line.",
)
@click.option(
    "--cacerts",
    multiple=True,
    help="CA certificate PEM file(s) for TLS to the source, comma-separated or repeated.",
)
@click.option("--insecure", is_flag=True, help="Do not verify the source's TLS certificate.")
@click.option(
    "-f",
    "--filter",
    "filters",
    envvar="DFGET_FILTER",
    help="'&'-separated query parameter names left out of the task URL (e.g. signed-URL tokens).",
)
@click.option(
    "--connections",
    type=click.IntRange(1, 64),
    default=DEFAULT_CONNECTIONS,
    show_default=True,
    help="Parallel ranged connections to the source. 1: each missing range is one streaming "
    "request (a whole file: one GET, as with curl).",
)
@click.option(
    "-p",
    "--pattern",
    type=click.Choice(PATTERNS),
    default="p2p",
    show_default=True,
    help="p2p: peers, CDN, then source, and serve pieces; cdn: the same without serving; "
    "source: the origin only.",
)
@click.option(
    "-n",
    "--node",
    "nodes",
    multiple=True,
    envvar="DFGET_NODE",
    help="Supernodes 'host[:port][=weight],...' (last occurrence wins). Default: the "
    "configuration file, else 127.0.0.1:8002.",
)
@click.option(
    "--notbs", is_flag=True, help="Never fall back to the source; fail (exit 80) instead."
)
@click.option(
    "--supernode-credentials/--no-supernode-credentials",
    default=True,
    show_default=True,
    help="Send Authorization, Cookie and the other credential headers to the supernode too, as "
    "v1 does: its CDN fetches the file with them. --no-supernode-credentials keeps them on this "
    "host, for a supernode in the source pattern (peers fetch from the origin themselves); a "
    "supernode that must fetch a protected file then cannot, and dfget uses the source.",
)
@click.option("--dfdaemon", is_flag=True, help="Mark the request as coming from dfdaemon.")
@click.option("--callsystem", default="", help="Caller name reported to the supernode.")
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Configuration file (default /etc/dragonfly/dfget.yml, then /etc/dragonfly.conf).",
)
@click.option(
    "-s",
    "--locallimit",
    type=RATE,
    default="0",
    show_default=True,
    help="Rate limit of this download in bytes/s (20M, 64KB, ...); 0: unlimited (v1 silently "
    "capped at 20MB).",
)
@click.option(
    "--minrate",
    type=RATE,
    default="64KB",
    show_default=True,
    help="Slowest acceptable rate; the default timeout is length/minrate + 10s.",
)
@click.option(
    "--totallimit",
    type=RATE,
    default="0",
    show_default=True,
    help="Host-wide upload limit applied by the peer server in bytes/s; 0: unlimited.",
)
@click.option(
    "-e",
    "--timeout",
    type=DURATION,
    default="0",
    show_default=True,
    help="Limit for the whole download (Go duration: 30s, 5m); 0: length/minrate + 10s.",
)
@click.option(
    "--resume/--no-resume",
    default=True,
    show_default=True,
    help="Keep an interrupted download's verified bytes in <home>/partial and reuse them when "
    "the same download runs again; --no-resume starts clean and keeps nothing.",
)
@click.option(
    "--partial-max-age",
    type=DURATION,
    default="168h",
    show_default=True,
    help="Partial downloads older than this are deleted.",
)
@click.option(
    "--partial-budget",
    type=RATE,
    default="20GB",
    show_default=True,
    help="Disk space partial downloads may use; the oldest go first beyond it.",
)
@click.option(
    "--clientqueue",
    type=click.IntRange(0, 1024),
    default=6,
    show_default=True,
    help="Accepted for compatibility (v1's write-queue length); pieces are written directly.",
)
@click.option(
    "-b", "--showbar", is_flag=True, help="Show the progress bar even when not on a terminal."
)
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    envvar="DFGET_JSON",
    help="Print one JSON result object instead of text: bytes per holder, digests, why the "
    "source was used, supernode requests made.",
)
@click.option(
    "--trace",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write one JSON line per piece event to FILE (zstd-compressed if it ends in .zst).",
)
@click.option("--console", is_flag=True, help="Mirror the log to stderr.")
@click.option("--verbose", is_flag=True, help="Debug logging: one line per piece in the log.")
@home_option(
    "Work home: meta/, data/ (served pieces) and logs/.",
    click.Path(file_okay=False, path_type=Path),
)
@click.option(
    "--ip", default="", help="IP the peer server binds to and advertises (default: auto)."
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Peer server port; 0 picks one in 15000-65000.",
)
@cache_options
@expiretime_option(
    "If set, the peer server also stops serving a file this long after its last use (v1: 3m)."
)
@alivetime_option(
    "If set, the peer server exits after this long without uploads even while serving (v1: 5m)."
)
@click.version_option(
    __version__,
    "-v",
    "--version",
    message=f"dfget %(version)s (Dragonfly {PROTOCOL_VERSION})",
    allow_from_autoenv=False,  # a DFGET_VERSION variable must not hijack downloads
)
@click.pass_context
def cli(ctx: click.Context, /, **values: object) -> None:
    """Download a file through a Dragonfly v1 P2P network, falling back to the source.

    dfget registers the download with a supernode, pulls pieces from peers that already hold
    them (or the supernode's CDN), falls back to the source URL when it must, verifies the
    digest, and keeps serving its pieces to other peers while they fit the cache budget.
    """
    if ctx.invoked_subcommand is not None:
        return
    if not values["url"]:
        raise click.UsageError("missing --url", ctx)
    from dfget.settings import SettingsError, build_settings

    explicit = {
        name
        for name in values
        if ctx.get_parameter_source(name)
        in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    }
    try:
        settings = build_settings(values, explicit)
    except SettingsError as exc:
        raise click.UsageError(str(exc), ctx) from exc
    from dfget.download import run

    ctx.exit(run(settings))


@cli.command(epilog=SERVER_EXAMPLES)
@click.option(
    "--data", type=click.Path(path_type=Path), help="Data directory (default <home>/data)."
)
@home_option("Work home (logs, meta, data).", click.Path(path_type=Path))
@click.option("--ip", default="", help="Bind and advertise address; empty: all interfaces.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, help="Listen port; 0 picks one.")
@click.option(
    "--meta",
    type=click.Path(path_type=Path),
    help="Meta file recording the port (default <home>/meta/host.meta).",
)
@cache_options
@expiretime_option("If set, also stop serving a file this long after its last use; 0 never.")
@alivetime_option(
    "If set, exit after this long without uploads even while serving; 0 never. Unset: exit "
    "after 5m idle only when nothing is served."
)
@click.option(
    "--totallimit", type=RATE, default="0", help="Host-wide upload limit; 0 means unlimited."
)
@click.option("--verbose", is_flag=True, help="Debug logging.")
@click.option(
    "--listen-fd",
    type=click.IntRange(0),
    help="Serve on this inherited listening socket instead of binding --ip/--port "
    "(how dfget starts the server: it binds the port itself to register it at once).",
)
def server(**values: object) -> None:
    """Serve the pieces of completed downloads to other peers (the peer server)."""
    from dfget.uploader import serve
    from dfget.uploader.options import ServerOptions

    sys.exit(serve(ServerOptions(**values)))  # type: ignore[arg-type]


@cli.command(epilog=SUPERNODE_EXAMPLES)
@click.option(
    "--port", type=click.IntRange(1, 65535), default=8002, show_default=True, help="API port."
)
@click.option(
    "--download-port",
    type=click.IntRange(1, 65535),
    default=8001,
    show_default=True,
    help="Port serving the CDN's piece files.",
)
@click.option(
    "--listen-ip",
    default="0.0.0.0",
    show_default=True,
    help="Address to listen on ('::' for dual stack).",
)
@click.option(
    "--advertise-ip",
    default="",
    help="IP given to peers for the CDN (default: the address each peer used).",
)
@click.option(
    "--home",
    type=click.Path(path_type=Path),
    default=str(Path.home() / ".small-dragonfly" / "supernode"),
    show_default="~/.small-dragonfly/supernode",
    help="Supernode home: CDN cache under <home>/repo.",
)
@click.option(
    "--cdn-pattern",
    type=click.Choice(["local", "source"]),
    default="local",
    show_default=True,
    help="local: download the source once and serve pieces; source: peers use the origin.",
)
@limit_option("--up-limit", 5, "Concurrent uploads per peer.")
@limit_option("--down-limit", 4, "Concurrent pieces per client.")
@limit_option(
    "--cdn-limit",
    4,
    "Concurrent pieces per task that the supernode itself serves (CDN, or origin in the "
    "source pattern).",
)
@click.option(
    "--fetch-wait",
    type=DURATION,
    default="15s",
    show_default=True,
    help="How long clients wait for a piece another client is fetching from the CDN or origin "
    "before fetching it too.",
)
@click.option(
    "--task-gc-interval",
    type=DURATION,
    default="2m0s",
    show_default=True,
    help="How often idle tasks are collected.",
)
@click.option(
    "--task-expire",
    type=DURATION,
    default="3m0s",
    show_default=True,
    help="Idle time after which a task is collected.",
)
@click.option(
    "--peer-gc-delay",
    type=DURATION,
    default="3m0s",
    show_default=True,
    help="How long an offline peer is kept.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(16, 65536),
    default=4096,
    show_default=True,
    help="Open connections per port (a thread each); beyond, 503 at once.",
)
@click.option(
    "--max-tasks",
    type=click.IntRange(1),
    default=10_000,
    show_default=True,
    help="Tasks at once; a registration of a new one beyond is refused.",
)
@click.option(
    "--max-clients",
    type=click.IntRange(1),
    default=10_000,
    show_default=True,
    help="Clients per task; a registration beyond is refused.",
)
@click.option(
    "--max-file-length",
    type=RATE,
    default="64GB",
    show_default=True,
    help="Largest file a task may have (SIZE, as RATE); a source announcing more is refused.",
)
@click.option(
    "--max-cdn-bytes",
    type=RATE,
    default="256GB",
    show_default=True,
    help="Bytes the CDN stores at once (SIZE, as RATE; tasks expire when idle); a new task "
    "beyond is refused.",
)
@click.option(
    "--max-cdn-fetches",
    type=click.IntRange(1, 1000),
    default=16,
    show_default=True,
    help="Sources fetched (local pattern) or probed at once; a new task beyond is refused.",
)
@click.option("--seed", type=int, default=None, help="Seed the scheduler's randomness (tests).")
@click.option("--verbose", is_flag=True, help="Debug logging.")
def supernode(**values: object) -> None:
    """Run a compact Dragonfly v1 compatible supernode (scheduler and CDN)."""
    from dfget.supernode import run
    from dfget.supernode.options import SupernodeOptions

    sys.exit(run(SupernodeOptions(**values)))  # type: ignore[arg-type]


@cli.command(epilog=TRACE_EXAMPLES)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--slowest",
    type=click.IntRange(0, 1000),
    default=5,
    show_default=True,
    help="How many of the slowest pieces to list.",
)
def trace(file: Path, slowest: int) -> None:
    """Summarize a --trace FILE: bytes per holder, failures, why the source was used."""
    from dfget.download.trace import TraceError, read_events, summarize

    try:
        events = read_events(file)
    except TraceError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(summarize(events, slowest))


@cli.command(epilog=CACHE_EXAMPLES)
@home_option("Work home whose peer server to ask.", click.Path(path_type=Path))
@click.option(
    "--meta",
    type=click.Path(path_type=Path),
    help="Meta file of the peer server (default <home>/meta/host.meta).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def cache(home: Path, meta: Path | None, as_json: bool) -> None:
    """List what this host's peer server serves: sizes, last use, what is dropped next."""
    import json

    from dfget.uploader import records, status

    home = Path(home).expanduser()
    current = status.read((meta or home / "meta" / "host.meta").parent)
    if as_json:
        click.echo(json.dumps(current, indent=1))
    else:
        click.echo(status.render(current, kept=len(records.recorded_names(home / "data"))))


@cli.command(
    epilog=PREWARM_EXAMPLES,
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option("--registry", required=True, help="Registry base URL (http[s]://host[:port]).")
@click.option("--repo", required=True, help="Repository, e.g. library/debian.")
@click.option("--tag", required=True, help="Tag or manifest digest (sha256:...).")
@click.option("--user", help="Registry user (basic auth, or for the registry's token service).")
@click.option(
    "--password",
    envvar="REGISTRY_PASSWORD",
    help="Registry password; prefer REGISTRY_PASSWORD or --password-stdin.",
)
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.option(
    "--platform", default="linux/amd64", show_default=True, help="Entry of a manifest list."
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the blobs here (default: a temporary directory, removed at the end).",
)
@click.option(
    "--jobs", type=click.IntRange(1, 64), default=1, show_default=True, help="Blobs at once."
)
@click.option(
    "--dfget",
    "dfget_command",
    help="dfget command for each blob (default: this dfget, as python -m dfget).",
)
@click.argument("dfget_args", nargs=-1, type=click.UNPROCESSED)
def prewarm(dfget_args: tuple[str, ...], dfget_command: str | None, **values: Any) -> None:
    """Pull every blob of an image into this node's peer server, each checked against the
    manifest (size and sha256), so the other nodes of a rollout find it here.

    Arguments after -- go to every dfget call (--node, --home, --ip, ...). The registry
    credentials never reach a command line: dfget reads them from a 0600 --header-file.
    Exit status: 0 every blob good, 1 a blob failed, 2 the manifest could not be fetched.
    """
    import shlex

    from dfget.prewarm import run

    password = values.pop("password")
    if values.pop("password_stdin"):
        password = sys.stdin.readline().rstrip("\n")
    dfget = shlex.split(dfget_command) if dfget_command else [sys.executable, "-m", "dfget"]
    sys.exit(
        run(
            values.pop("registry"),
            values.pop("repo"),
            values.pop("tag"),
            password=password,
            dfget=dfget,
            extra=[arg for arg in dfget_args if arg != "--"],
            **values,
        )
    )


@cli.command("gen-doc", hidden=True)
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    show_default=True,
    help="Project root: writes man/dfget.1 and completions/.",
)
def gen_doc(root: Path) -> None:
    """Regenerate the man page and shell completions from these definitions."""
    from dfget.docgen import write_all

    for path in write_all(cli, SECTIONS, root):
        click.echo(f"wrote {path}")


@cli.command()
def version() -> None:
    """Print the version."""
    click.echo(f"dfget {__version__} (Dragonfly {PROTOCOL_VERSION})")


def main() -> None:
    # The command is synchronous. httpcore imports trio at import time when it is installed
    # (~45 ms of every run), so a process of ours hides it: httpcore then goes without. httpx
    # likewise imports its own command-line client (pygments and more, ~8 ms), never used here.
    sys.modules.setdefault("trio", None)  # type: ignore[arg-type]
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    try:
        code = cli.main(prog_name="dfget", standalone_mode=False)
    except click.exceptions.Abort:
        code = ExitCode.INTERRUPTED
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.ClickException as exc:
        exc.show()
        code = ExitCode.USAGE
    except DfgetError as exc:
        click.echo(f"dfget: {exc}", err=True)
        code = exc.exit_code
    except Exception as exc:  # a bug: one line for the user, the traceback for the log
        import logging

        log = logging.getLogger("dfget")
        where = ""
        if log.handlers:
            log.exception("internal error")
            where = "; the traceback is in the log"
        click.echo(f"dfget: internal error ({type(exc).__name__}: {exc}){where}", err=True)
        code = ExitCode.INTERNAL
    # Done: a Ctrl-C now must not kill the interpreter on its way out (it resets Python's own
    # handlers to the default while finalizing), cutting off buffered output.
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, signal.SIG_IGN)
    sys.exit(int(code or 0))
