"""dfget's other commands: the peer server, the supernode, the cache status, pre-warming a
node, reading a trace. Each imports its implementation only when it runs."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from dfget.cliopts import (
    DURATION,
    RATE,
    F,
    alivetime_option,
    cache_options,
    expiretime_option,
    home_option,
    role_option,
    server_option,
)

if TYPE_CHECKING:
    from dfget.supernode.options import SupernodeOptions

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


@click.command(epilog=SERVER_EXAMPLES)
@click.option(
    "--data", type=click.Path(path_type=Path), help="Data directory (default <home>/data)."
)
@home_option(server_option, "Work home (logs, meta, data).", click.Path(path_type=Path))
@server_option("--ip", help="Bind and advertise address; empty: all interfaces.")
@server_option("--port", type=click.IntRange(0, 65535), help="Listen port; 0 picks one.")
@click.option(
    "--meta",
    type=click.Path(path_type=Path),
    help="Meta file recording the port (default <home>/meta/host.meta).",
)
@cache_options(server_option)
@expiretime_option(
    server_option, "If set, also stop serving a file this long after its last use; 0 never."
)
@alivetime_option(
    server_option,
    "If set, exit after this long without uploads even while serving; 0 never. Unset: exit "
    "after 5m idle only when nothing is served.",
)
@server_option("--totallimit", type=RATE, help="Host-wide upload limit; 0 means unlimited.")
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


def _supernode_options() -> type[SupernodeOptions]:
    # Only when the supernode runs or its help is shown: the package imports all of it.
    from dfget.supernode.options import SupernodeOptions

    return SupernodeOptions


supernode_option = role_option(_supernode_options)


def limit_option(name: str, help_text: str) -> Callable[[F], F]:
    """A supernode concurrency limit (1-1000)."""
    return supernode_option(name, type=click.IntRange(1, 1000), show_default=True, help=help_text)


@click.command(epilog=SUPERNODE_EXAMPLES)
@supernode_option("--port", type=click.IntRange(1, 65535), show_default=True, help="API port.")
@supernode_option(
    "--download-port",
    type=click.IntRange(1, 65535),
    show_default=True,
    help="Port serving the CDN's piece files.",
)
@supernode_option(
    "--listen-ip",
    show_default=True,
    help="Address to listen on ('::' for dual stack).",
)
@supernode_option(
    "--advertise-ip",
    help="IP given to peers for the CDN (default: the address each peer used).",
)
@home_option(
    supernode_option,
    "Supernode home: CDN cache under <home>/repo.",
    click.Path(path_type=Path),
)
@supernode_option(
    "--cdn-pattern",
    type=click.Choice(["local", "source"]),
    show_default=True,
    help="local: download the source once and serve pieces; source: peers use the origin.",
)
@limit_option("--up-limit", "Concurrent uploads per peer.")
@limit_option("--down-limit", "Concurrent pieces per client.")
@limit_option(
    "--cdn-limit",
    "Concurrent pieces per task that the supernode itself serves (CDN, or origin in the "
    "source pattern).",
)
@supernode_option(
    "--fetch-wait",
    type=DURATION,
    show_default=True,
    help="How long clients wait for a piece another client is fetching from the CDN or origin "
    "before fetching it too.",
)
@supernode_option(
    "--task-gc-interval",
    type=DURATION,
    show_default=True,
    help="How often idle tasks are collected.",
)
@supernode_option(
    "--task-expire",
    type=DURATION,
    show_default=True,
    help="Idle time after which a task is collected.",
)
@supernode_option(
    "--peer-gc-delay",
    type=DURATION,
    show_default=True,
    help="How long an offline peer is kept.",
)
@supernode_option(
    "--max-connections",
    type=click.IntRange(16, 65536),
    show_default=True,
    help="Open connections per port (a thread each); beyond, 503 at once.",
)
@supernode_option(
    "--max-tasks",
    type=click.IntRange(1),
    show_default=True,
    help="Tasks at once; a registration of a new one beyond is refused.",
)
@supernode_option(
    "--max-clients",
    type=click.IntRange(1),
    show_default=True,
    help="Clients per task; a registration beyond is refused.",
)
@supernode_option(
    "--max-file-length",
    type=RATE,
    show_default=True,
    help="Largest file a task may have (SIZE, as RATE); a source announcing more is refused.",
)
@supernode_option(
    "--max-cdn-bytes",
    type=RATE,
    show_default=True,
    help="Bytes the CDN stores at once (SIZE, as RATE; tasks expire when idle); a new task "
    "beyond is refused.",
)
@supernode_option(
    "--max-cdn-fetches",
    type=click.IntRange(1, 1000),
    show_default=True,
    help="Sources fetched (local pattern) or probed at once; a new task beyond is refused.",
)
@supernode_option("--seed", type=int, help="Seed the scheduler's randomness (tests).")
@click.option("--verbose", is_flag=True, help="Debug logging.")
def supernode(**values: object) -> None:
    """Run a compact Dragonfly v1 compatible supernode (scheduler and CDN)."""
    from dfget.supernode import run
    from dfget.supernode.options import SupernodeOptions

    sys.exit(run(SupernodeOptions(**values)))  # type: ignore[arg-type]


@click.command(epilog=TRACE_EXAMPLES)
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


@click.command(epilog=CACHE_EXAMPLES)
@home_option(server_option, "Work home whose peer server to ask.", click.Path(path_type=Path))
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


@click.command(
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
