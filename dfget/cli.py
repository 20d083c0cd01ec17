"""Command-line interface: parse, build settings, call one function, map errors to exit codes."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from dfget import PROTOCOL_VERSION, __version__
from dfget.cliopts import (
    DURATION,
    RATE,
    alivetime_option,
    cache_options,
    expiretime_option,
    home_option,
    settings_option,
)
from dfget.config import DEFAULT_NODE, PATTERNS, SettingsError, build_settings
from dfget.errors import DfgetError, ExitCode, exit_code_table
from dfget.subcommands import cache, prewarm, server, supernode, trace

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
@settings_option(
    "--connections",
    type=click.IntRange(1, 64),
    show_default=True,
    help="Parallel ranged connections to the source. 1: each missing range is one streaming "
    "request (a whole file: one GET, as with curl).",
)
@settings_option(
    "-p",
    "--pattern",
    type=click.Choice(PATTERNS),
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
    f"configuration file, else {DEFAULT_NODE}.",
)
@click.option(
    "--notbs", is_flag=True, help="Never fall back to the source; fail (exit 80) instead."
)
@settings_option(
    "--supernode-credentials/--no-supernode-credentials",
    show_default=True,
    help="Send Authorization, Cookie and the other credential headers to the supernode too, as "
    "v1 does: its CDN fetches the file with them. --no-supernode-credentials keeps them on this "
    "host, for a supernode in the source pattern (peers fetch from the origin themselves); a "
    "supernode that must fetch a protected file then cannot, and dfget uses the source.",
)
@click.option("--dfdaemon", is_flag=True, help="Mark the request as coming from dfdaemon.")
@settings_option("--callsystem", help="Caller name reported to the supernode.")
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Configuration file (default /etc/dragonfly/dfget.yml, then /etc/dragonfly.conf).",
)
@settings_option(
    "-s",
    "--locallimit",
    type=RATE,
    show_default=True,
    help="Rate limit of this download in bytes/s (20M, 64KB, ...); 0: unlimited (v1 silently "
    "capped at 20MB).",
)
@settings_option(
    "--minrate",
    type=RATE,
    show_default=True,
    help="Slowest acceptable rate; the default timeout is length/minrate + 10s.",
)
@settings_option(
    "--totallimit",
    type=RATE,
    show_default=True,
    help="Host-wide upload limit applied by the peer server in bytes/s; 0: unlimited.",
)
@settings_option(
    "-e",
    "--timeout",
    type=DURATION,
    show_default=True,
    help="Limit for the whole download (Go duration: 30s, 5m); 0: length/minrate + 10s.",
)
@settings_option(
    "--resume/--no-resume",
    show_default=True,
    help="Keep an interrupted download's verified bytes in <home>/partial and reuse them when "
    "the same download runs again; --no-resume starts clean and keeps nothing.",
)
@settings_option(
    "--partial-max-age",
    type=DURATION,
    show_default=True,
    help="Partial downloads older than this are deleted.",
)
@settings_option(
    "--partial-budget",
    type=RATE,
    show_default=True,
    help="Disk space partial downloads may use; the oldest go first beyond it.",
)
@settings_option(
    "--clientqueue",
    type=click.IntRange(0, 1024),
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
    settings_option,
    "Work home: meta/, data/ (served pieces) and logs/.",
    click.Path(file_okay=False, path_type=Path),
)
@settings_option("--ip", help="IP the peer server binds to and advertises (default: auto).")
@settings_option(
    "--port",
    type=click.IntRange(0, 65535),
    show_default=True,
    help="Peer server port; 0 picks one in 15000-65000.",
)
@cache_options(settings_option)
@expiretime_option(
    settings_option,
    "If set, the peer server also stops serving a file this long after its last use (v1: 3m).",
)
@alivetime_option(
    settings_option,
    "If set, the peer server exits after this long without uploads even while serving (v1: 5m).",
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


for command in (server, supernode, cache, prewarm, trace):
    cli.add_command(command)


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
