"""Command-line interface: parse, build settings, call one function, map errors to exit codes."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from dfget import PROTOCOL_VERSION, __version__
from dfget.config import (
    DEFAULT_ALIVETIME,
    DEFAULT_CONNECTIONS,
    DEFAULT_EXPIRETIME,
    DEFAULT_HOME,
    PATTERNS,
    Settings,
    parse_nodes,
)
from dfget.errors import DfgetError, ExitCode, exit_code_table
from dfget.units import format_duration, parse_duration, parse_rate


class RateType(click.ParamType):
    name = "RATE"

    def convert(self, value, param, ctx):  # type: ignore[no-untyped-def]
        try:
            return parse_rate(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class DurationType(click.ParamType):
    name = "DURATION"

    def convert(self, value, param, ctx):  # type: ignore[no-untyped-def]
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


RATE = RateType()
DURATION = DurationType()

EPILOG = f"""\b
Examples:
  dfget -u https://registry/v2/library/app/blobs/sha256:<hex> -o layer.tar.gz
  dfget -u http://origin/file.bin -o file.bin --node sn1:8002,sn2:8002
  dfget -u http://origin/file.bin -o - --pattern source | tar x

\b
Exit codes:
{exit_code_table()}
"""


@click.group(
    invoke_without_command=True,
    epilog=EPILOG,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
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
@click.option("-i", "--identifier", help="Task discriminator for the supernode (ignored with --md5).")
@click.option(
    "--header",
    "headers",
    multiple=True,
    help="Extra request header 'Name: value' for the source (repeatable).",
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
    help="'&'-separated query parameter names left out of the task URL (e.g. signed-URL tokens).",
)
@click.option(
    "-p",
    "--pattern",
    type=click.Choice(PATTERNS),
    default="p2p",
    show_default=True,
    help="p2p: peers, CDN, then source; cdn: like p2p but serve nothing; source: origin only.",
)
@click.option(
    "-n",
    "--node",
    "nodes",
    multiple=True,
    help="Supernodes 'host[:port][=weight],...'. Default: 127.0.0.1:8002.",
)
@click.option("--notbs", is_flag=True, help="Never fall back to the source; fail instead.")
@click.option("--dfdaemon", is_flag=True, help="Mark the request as coming from dfdaemon.")
@click.option("--callsystem", default="", help="Caller name reported to the supernode.")
@click.option(
    "-s",
    "--locallimit",
    type=RATE,
    default="0",
    help="Download rate limit of this download, e.g. 20M; 0 means unlimited (v1 capped at 20MB).",
)
@click.option(
    "--minrate",
    type=RATE,
    default="64KB",
    show_default=True,
    help="Minimum expected rate, used to derive the default timeout.",
)
@click.option(
    "--totallimit",
    type=RATE,
    default="0",
    help="Host-wide upload limit applied by the peer server; 0 means unlimited.",
)
@click.option(
    "-e",
    "--timeout",
    type=DURATION,
    default="0",
    help="Timeout of the whole download (Go duration, e.g. 5m). 0: length/minrate + 10s.",
)
@click.option(
    "--connections",
    type=click.IntRange(1, 64),
    default=DEFAULT_CONNECTIONS,
    show_default=True,
    help="Parallel ranged connections to the source.",
)
@click.option(
    "--clientqueue",
    type=click.IntRange(0, 1024),
    default=6,
    show_default=True,
    help="Pieces that may wait for the writer.",
)
@click.option(
    "--home",
    type=click.Path(path_type=Path),
    default=str(DEFAULT_HOME),
    show_default=True,
    help="Work home: meta, data and logs.",
)
@click.option("--ip", default="", help="IP the peer server binds to and advertises.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, help="Peer server port (0: auto).")
@click.option(
    "--expiretime",
    type=DURATION,
    default=format_duration(DEFAULT_EXPIRETIME),
    show_default=True,
    help="How long the peer server keeps serving a file after its last use.",
)
@click.option(
    "--alivetime",
    type=DURATION,
    default=format_duration(DEFAULT_ALIVETIME),
    show_default=True,
    help="Peer server idle lifetime.",
)
@click.option("-b", "--showbar", is_flag=True, help="Show a progress bar even when not on a terminal.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON result object on stdout.")
@click.option("--console", is_flag=True, help="Mirror the log to stderr.")
@click.option("--verbose", is_flag=True, help="Debug logging, one line per piece.")
@click.version_option(
    __version__, "-v", "--version", message=f"dfget %(version)s (Dragonfly {PROTOCOL_VERSION})"
)
@click.pass_context
def cli(ctx: click.Context, **values: object) -> None:
    """Download a file through a Dragonfly v1 P2P network, falling back to the source.

    dfget registers the download with a supernode, pulls pieces from peers that already hold
    them (or the supernode's CDN), falls back to the source URL when it must, verifies the
    digest, and keeps serving its pieces to other peers for a while.
    """
    if ctx.invoked_subcommand is not None:
        return
    if not values["url"]:
        raise click.UsageError("missing --url", ctx)
    settings = build_settings(values)
    from dfget.download import run

    ctx.exit(run(settings))


def build_settings(values: dict) -> Settings:  # type: ignore[type-arg]
    from dfget.download.output import default_output

    url = str(values["url"])
    if not url.lower().startswith(("http://", "https://")):
        raise click.BadParameter(f"{url!r}: only http and https URLs are supported", param_hint="--url")
    output = values["output"] or default_output(url)
    try:
        nodes = parse_nodes(values["nodes"]) if values["nodes"] else ()
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--node") from exc
    md5 = str(values["md5"] or "").lower()
    filters = tuple(f for f in str(values["filters"] or "").split("&") if f)
    cacerts = tuple(c for item in values["cacerts"] for c in str(item).split(",") if c)  # type: ignore[attr-defined]
    return Settings(
        url=url,
        output=Path(output) if output == "-" else Path(output).absolute(),
        nodes=nodes,
        nodes_explicit=bool(nodes),
        pattern=str(values["pattern"]),
        headers=tuple(values["headers"]),  # type: ignore[arg-type]
        md5=md5,
        identifier=str(values["identifier"] or ""),
        digest=str(values["digest"] or ""),
        callsystem=str(values["callsystem"]),
        filters=filters,
        cacerts=cacerts,
        insecure=bool(values["insecure"]),
        notbs=bool(values["notbs"]),
        dfdaemon=bool(values["dfdaemon"]),
        locallimit=int(values["locallimit"]),  # type: ignore[call-overload]
        minrate=int(values["minrate"]),  # type: ignore[call-overload]
        totallimit=int(values["totallimit"]),  # type: ignore[call-overload]
        timeout=float(values["timeout"]),  # type: ignore[arg-type]
        connections=int(values["connections"]),  # type: ignore[call-overload]
        clientqueue=int(values["clientqueue"]),  # type: ignore[call-overload]
        home=Path(values["home"]).expanduser(),  # type: ignore[arg-type]
        ip=str(values["ip"]),
        port=int(values["port"]),  # type: ignore[call-overload]
        expiretime=float(values["expiretime"]),  # type: ignore[arg-type]
        alivetime=float(values["alivetime"]),  # type: ignore[arg-type]
        showbar=bool(values["showbar"]),
        quiet=bool(values["quiet"]),
        json=bool(values["as_json"]),
        console=bool(values["console"]),
        verbose=bool(values["verbose"]),
    )


@cli.command()
@click.option("--data", type=click.Path(path_type=Path), help="Data directory (default <home>/data).")
@click.option(
    "--home",
    type=click.Path(path_type=Path),
    default=str(DEFAULT_HOME),
    show_default=True,
    help="Work home (logs, meta, data).",
)
@click.option("--ip", default="", help="Bind and advertise address; empty: all interfaces.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, help="Listen port; 0 picks one.")
@click.option(
    "--meta",
    type=click.Path(path_type=Path),
    help="Meta file recording the port (default <home>/meta/host.meta).",
)
@click.option(
    "--expiretime",
    type=DURATION,
    default=format_duration(DEFAULT_EXPIRETIME),
    show_default=True,
    help="Stop serving a file this long after its last use.",
)
@click.option(
    "--alivetime",
    type=DURATION,
    default=format_duration(DEFAULT_ALIVETIME),
    show_default=True,
    help="Exit after this long without upload activity; 0 never.",
)
@click.option(
    "--totallimit", type=RATE, default="0", help="Host-wide upload limit; 0 means unlimited."
)
@click.option("--verbose", is_flag=True, help="Debug logging.")
def server(**values: object) -> None:
    """Serve the pieces of completed downloads to other peers (the peer server)."""
    from dfget.uploader import serve
    from dfget.uploader.options import ServerOptions

    sys.exit(serve(ServerOptions(**values)))  # type: ignore[arg-type]


@cli.command()
@click.option("--port", type=click.IntRange(1, 65535), default=8002, show_default=True, help="API port.")
@click.option(
    "--download-port",
    type=click.IntRange(1, 65535),
    default=8001,
    show_default=True,
    help="Port serving the CDN's piece files.",
)
@click.option("--listen-ip", default="0.0.0.0", show_default=True, help="Address to listen on ('::' for dual stack).")
@click.option("--advertise-ip", default="", help="IP given to peers for the CDN (default: the address each peer used).")
@click.option(
    "--home",
    type=click.Path(path_type=Path),
    default=str(Path.home() / ".small-dragonfly" / "supernode"),
    show_default=True,
    help="Supernode home: CDN cache under <home>/repo.",
)
@click.option(
    "--cdn-pattern",
    type=click.Choice(["local", "source"]),
    default="local",
    show_default=True,
    help="local: download the source once and serve pieces; source: peers use the origin.",
)
@click.option("--up-limit", type=click.IntRange(1, 1000), default=5, show_default=True, help="Concurrent uploads per peer.")
@click.option("--down-limit", type=click.IntRange(1, 1000), default=4, show_default=True, help="Concurrent pieces per client.")
@click.option("--task-gc-interval", type=DURATION, default="2m0s", show_default=True, help="How often idle tasks are collected.")
@click.option("--task-expire", type=DURATION, default="3m0s", show_default=True, help="Idle time after which a task is collected.")
@click.option("--peer-gc-delay", type=DURATION, default="3m0s", show_default=True, help="How long an offline peer is kept.")
@click.option("--seed", type=int, default=None, help="Seed the scheduler's randomness (tests).")
@click.option("--verbose", is_flag=True, help="Debug logging.")
def supernode(**values: object) -> None:
    """Run a compact Dragonfly v1 compatible supernode (scheduler and CDN)."""
    from dfget.supernode import run
    from dfget.supernode.options import SupernodeOptions

    sys.exit(run(SupernodeOptions(**values)))  # type: ignore[arg-type]


@cli.command()
def version() -> None:
    """Print the version."""
    click.echo(f"dfget {__version__} (Dragonfly {PROTOCOL_VERSION})")


def main() -> None:
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
    sys.exit(int(code or 0))
