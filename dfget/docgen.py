"""The man page and the shell completions, generated from the click definitions.

``dfget gen-doc`` writes ``man/dfget.1`` and ``completions/dfget.{bash,zsh,fish}``; a test
regenerates them and fails when the committed files no longer match the CLI.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click

from dfget import PROTOCOL_VERSION, __version__
from dfget.errors import EXIT_CODE_HELP

MAN_DESCRIPTION = """\
dfget downloads a file through a Dragonfly v1 P2P network. It registers the download with a
supernode, pulls pieces in parallel from peers that already hold them (or from the supernode's
CDN), falls back to the source URL only for what the network cannot deliver, verifies the
digest, and then serves its own pieces to other peers through its peer server (dfget server)
while they fit the host's cache budget, least recently used dropped first.
.PP
The file is written to a hidden temporary file beside the destination (in P2P mode, to the peer
server's data directory), verified, synced and renamed into place: a failed, interrupted or
corrupted download never leaves partial data at the destination.
.PP
dfget is wire-compatible with Dragonfly v1.0.6 supernodes and Go dfget peers, and accepts the
flags of dfget 1.0.6, so dfdaemon can execute it for every blob."""

MAN_FILES = [
    (
        "/etc/dragonfly/dfget.yml",
        "Configuration (YAML): nodes, localLimit, minRate, totalLimit, "
        "clientQueueSize, workHome. Read when neither --config nor DFGET_CONFIG names a file.",
    ),
    ("/etc/dragonfly.conf", "Legacy configuration (INI): [node] address = ip1,ip2."),
    ("<home>/meta/host.meta", 'The peer server\'s port: {"servicePort":N}.'),
    ("<home>/data/", "Files served to other peers (<task>.service)."),
    ("<home>/logs/dfclient.log", "Download log; rotated at 40 MB, one backup."),
    ("<home>/logs/dfserver.log", "Peer server log; rotated at 40 MB, one backup."),
]

MAN_ENVIRONMENT = [
    (
        "DFGET_<OPTION>",
        "Sets the option of that name, e.g. DFGET_NODE, DFGET_LOCALLIMIT, "
        "DFGET_HOME. Flags win over the environment, which wins over the configuration file.",
    ),
    (
        "DFGET_HEADER_<NAME>",
        "Adds the request header <Name> (underscores become dashes), e.g. "
        "DFGET_HEADER_AUTHORIZATION, so tokens need not appear on the command line.",
    ),
    ("DFGET_CONFIG", "The configuration file to read."),
    ("http_proxy, https_proxy, no_proxy", "Proxies for requests to the source."),
]

MAN_EXAMPLES = [
    (
        "Pull a registry blob; the sha256 in the URL is verified:",
        "dfget -u https://registry/v2/library/app/blobs/sha256:<hex> -o layer.tar.gz \\\\\n"
        "      --header-file /run/secrets/registry-auth",
    ),
    (
        "P2P through two supernodes (peers of one blob meet at the same one):",
        "dfget -u http://origin/file.bin -o file.bin --node sn1:8002,sn2:8002=2",
    ),
    (
        "As dfdaemon runs it:",
        "dfget -u URL -o /var/lib/dfdaemon/repo/<name> "
        "--home /var/lib/dragonfly-dfdaemon/dfget \\\\\n"
        "      --ip 10.0.0.5 --port 15001 --cache-budget 20GB --dfdaemon \\\\\n"
        '      -s 20M --totallimit 20M --node sn1:8002 --header "Authorization:Bearer <token>"',
    ),
    (
        "A supernode for this machine, then two peers:",
        "dfget supernode --port 8002 --download-port 8001 &\n"
        "dfget -u http://origin/f -o a --node 127.0.0.1:8002 --home /tmp/a\n"
        "dfget -u http://origin/f -o b --node 127.0.0.1:8002 --home /tmp/b",
    ),
    (
        "Why did this node fetch from the registry?",
        "dfget -u URL -o out --trace /tmp/pull.jsonl.zst && dfget trace /tmp/pull.jsonl.zst",
    ),
]


def _roff(text: str) -> str:
    """Escape text for roff: backslashes, and leading dots or quotes."""
    escaped = text.replace("\\", "\\e").replace("-", "\\-")
    lines = []
    for line in escaped.splitlines():
        lines.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(lines)


def _options(command: click.Command, ctx: click.Context) -> Iterator[tuple[str, str]]:
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is not None:
            yield record


def _subcommands(cli: click.Group) -> list[tuple[str, click.Command]]:
    return [(name, cmd) for name, cmd in sorted(cli.commands.items()) if not cmd.hidden]


def man_page(cli: click.Group, sections: dict[str, list[str]]) -> str:
    ctx = click.Context(cli, info_name="dfget", **cli.context_settings)
    out = [
        f'.TH DFGET 1 "" "dfget {__version__}" "User Commands"',
        ".SH NAME",
        f"dfget \\- P2P file downloader compatible with Dragonfly {PROTOCOL_VERSION}",
        ".SH SYNOPSIS",
        ".B dfget",
        "\\-u \\fIURL\\fR [\\-o \\fIFILE\\fR] [\\fIOPTIONS\\fR]",
        ".br",
        ".B dfget",
        "\\fICOMMAND\\fR [\\fIOPTIONS\\fR]",
        ".SH DESCRIPTION",
        MAN_DESCRIPTION,
        ".SH OPTIONS",
    ]
    records = {p.name: p.get_help_record(ctx) for p in cli.get_params(ctx)}
    shown: set[str] = set()
    for title, names in [*sections.items(), ("Other", [n for n in records if n])]:
        rows = [records[n] for n in names if records.get(n) and n not in shown]
        shown.update(names)
        if not rows:
            continue
        out.append(f".SS {title} options")
        for flags, text in rows:  # type: ignore[misc]
            out += [".TP", f"\\fB{_roff(flags)}\\fR", _roff(text)]
    out.append(".SH COMMANDS")
    for name, command in _subcommands(cli):
        sub = click.Context(command, info_name=name, parent=ctx)
        out += [".SS", f"dfget {name}", _roff(command.help or command.short_help or "")]
        for flags, text in _options(command, sub):
            out += [".TP", f"\\fB{_roff(flags)}\\fR", _roff(text)]
    out.append(".SH EXIT STATUS")
    for code, text in EXIT_CODE_HELP.items():
        out += [".TP", f"\\fB{int(code)}\\fR", _roff(text)]
    out.append(".SH FILES")
    for path, text in MAN_FILES:
        out += [".TP", f"\\fI{_roff(path)}\\fR", _roff(text)]
    out.append(".SH ENVIRONMENT")
    for name, text in MAN_ENVIRONMENT:
        out += [".TP", f"\\fB{_roff(name)}\\fR", _roff(text)]
    out.append(".SH EXAMPLES")
    for text, example in MAN_EXAMPLES:
        out += [
            ".PP",
            _roff(text),
            ".PP",
            ".nf",
            ".RS 4",
            example.replace("-", "\\-"),
            ".RE",
            ".fi",
        ]
    out += [".SH SEE ALSO", "dfget(1) \\-\\-help, the README of the project."]
    return "\n".join(out) + "\n"


def _flags(command: click.Command) -> list[str]:
    flags: list[str] = []
    for param in command.params:
        if isinstance(param, click.Option):
            flags += [*param.opts, *param.secondary_opts]
    return sorted(flags)


def _choices(command: click.Command) -> dict[str, list[str]]:
    return {
        opt: list(param.type.choices)
        for param in command.params
        if isinstance(param, click.Option) and isinstance(param.type, click.Choice)
        for opt in param.opts
    }


def _file_options(command: click.Command) -> list[str]:
    return [
        opt
        for param in command.params
        if isinstance(param, click.Option) and isinstance(param.type, click.Path)
        for opt in param.opts
    ]


def bash_completion(cli: click.Group) -> str:
    names = [name for name, _ in _subcommands(cli)]
    cases = []
    for name, command in [("dfget", cli), *_subcommands(cli)]:
        cases.append(f'        {name}) opts="{" ".join(_flags(command))}" ;;')
    choice_cases = [
        f'        {opt}) COMPREPLY=($(compgen -W "{" ".join(values)}" -- "$cur")); return ;;'
        for opt, values in sorted({**_choices(cli)}.items())
    ]
    files = sorted({o for _, c in [("dfget", cli), *_subcommands(cli)] for o in _file_options(c)})
    return f"""# bash completion for dfget (generated by `dfget gen-doc`; do not edit)
_dfget() {{
    local cur prev cmd word opts
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    cmd=dfget
    for word in "${{COMP_WORDS[@]:1:COMP_CWORD-1}}"; do
        case "$word" in {"|".join(names)}) cmd="$word" ;; esac
    done
    case "$prev" in
{chr(10).join(choice_cases)}
        {"|".join(files)}) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    esac
    case "$cmd" in
{chr(10).join(cases)}
    esac
    if [[ "$cmd" == dfget && "$cur" != -* ]]; then
        COMPREPLY=($(compgen -W "{" ".join(names)}" -- "$cur"))
    else
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    fi
}}
complete -F _dfget dfget
"""


def _one_line(text: str | None) -> str:
    first = (text or "").strip().split("\n")[0]
    return first.replace("'", "").replace("[", "(").replace("]", ")").replace(":", " -")


def zsh_completion(cli: click.Group) -> str:
    def specs(command: click.Command) -> list[str]:
        lines = []
        for param in command.params:
            if not isinstance(param, click.Option):
                continue
            help_text = _one_line(param.help)
            value = ""
            if not param.is_flag:
                if isinstance(param.type, click.Choice):
                    value = f":value:({' '.join(param.type.choices)})"
                elif isinstance(param.type, click.Path):
                    value = ":file:_files"
                else:
                    value = f":{param.type.name.lower()}:"
            for opt in param.opts:
                lines.append(f"    '{opt}[{help_text}]{value}'")
        return lines

    subs = _subcommands(cli)
    functions = []
    for name, command in subs:
        functions.append(
            f"_dfget_{name.replace('-', '_')}() {{\n  _arguments \\\n"
            + " \\\n".join(specs(command) or ["    '--help[Show help]'"])
            + "\n}\n"
        )
    commands = "\n".join(f"    '{name}:{_one_line(cmd.help)}'" for name, cmd in subs)
    top_specs = " \\\n".join(specs(cli))
    sub_names = " ".join(name for name, _ in subs)
    return f"""#compdef dfget
# zsh completion for dfget (generated by `dfget gen-doc`; do not edit)
{"".join(functions)}
_dfget() {{
  local -a commands
  commands=(
{commands}
  )
  if (( CURRENT > 2 )) && (( ${{+functions[_dfget_${{words[2]//-/_}}]}} )); then
    shift words; (( CURRENT-- ))
    _dfget_${{words[1]//-/_}}
    return
  fi
  _arguments \\
{top_specs} \\
    '1:command:(({sub_names}))'
}}
_dfget "$@"
"""


def fish_completion(cli: click.Group) -> str:
    subs = _subcommands(cli)
    names = " ".join(name for name, _ in subs)
    lines = ["# fish completion for dfget (generated by `dfget gen-doc`; do not edit)"]
    lines.append(f"complete -c dfget -n 'not __fish_seen_subcommand_from {names}' -f -a '{names}'")
    for name, command in [("", cli), *subs]:
        condition = (
            f"__fish_seen_subcommand_from {name}"
            if name
            else f"not __fish_seen_subcommand_from {names}"
        )
        for param in command.params:
            if not isinstance(param, click.Option):
                continue
            parts = [f"complete -c dfget -n '{condition}'"]
            for opt in param.opts:
                if opt.startswith("--"):
                    parts.append(f"-l {opt[2:]}")
                else:
                    parts.append(f"-s {opt[1:]}")
            if not param.is_flag:
                parts.append("-r")
                if isinstance(param.type, click.Choice):
                    parts.append(f"-a '{' '.join(param.type.choices)}'")
                elif not isinstance(param.type, click.Path):
                    parts.append("-f")
            parts.append(f"-d '{_one_line(param.help)}'")
            lines.append(" ".join(parts))
    return "\n".join(lines) + "\n"


def write_all(cli: click.Group, sections: dict[str, list[str]], root: Path) -> list[Path]:
    outputs = {
        root / "man" / "dfget.1": man_page(cli, sections),
        root / "completions" / "dfget.bash": bash_completion(cli),
        root / "completions" / "_dfget": zsh_completion(cli),
        root / "completions" / "dfget.fish": fish_completion(cli),
    }
    for path, text in outputs.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return list(outputs)
