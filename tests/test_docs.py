"""The man page, completions, README and --help stay in step with the CLI definitions."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import click
import pytest

from dfget.cli import SECTIONS, cli
from dfget.docgen import write_all
from dfget.errors import EXIT_CODE_HELP
from tests.support.helpers import run_dfget

ROOT = Path(__file__).resolve().parents[1]
GENERATED = [
    "man/dfget.1",
    "completions/dfget.bash",
    "completions/_dfget",
    "completions/dfget.fish",
]


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is missing in CI (.ci/run installs it)")
        pytest.skip(f"{tool} not installed")
    return path


def _all_long_options() -> dict[str, list[str]]:
    ctx = click.Context(cli, **cli.context_settings)
    options = {"dfget": [o for p in cli.params for o in p.opts if o.startswith("--")]}
    for name, command in cli.commands.items():
        if not command.hidden:
            options[name] = [
                o for p in command.get_params(ctx) for o in p.opts if o.startswith("--")
            ]
    return options


def test_committed_docs_match_the_cli(tmp_path: Path) -> None:
    write_all(cli, SECTIONS, tmp_path)
    stale = [
        name for name in GENERATED if (tmp_path / name).read_text() != (ROOT / name).read_text()
    ]
    assert not stale, f"regenerate with `dfget gen-doc`: {stale} no longer match the CLI"


def test_man_page_names_every_option_command_and_exit_code() -> None:
    text = (ROOT / "man" / "dfget.1").read_text().replace("\\-", "-")
    for command, options in _all_long_options().items():
        if command != "dfget":
            assert f"dfget {command}" in text
        for option in options:
            assert option in text, f"{command} {option} missing from man/dfget.1"
    for code in EXIT_CODE_HELP:
        assert f"\\fB{int(code)}\\fR" in text


def test_man_page_renders_without_warnings() -> None:
    groff = _require("groff")
    result = subprocess.run(
        [groff, "-man", "-Tutf8", "-ww", "-P-cbou", str(ROOT / "man" / "dfget.1")],
        capture_output=True,
    )
    assert result.returncode == 0 and result.stderr == b"", result.stderr.decode()
    assert b"EXIT STATUS" in result.stdout


def test_man_l_shows_the_page() -> None:
    man = _require("man")
    result = subprocess.run(
        [man, "-l", str(ROOT / "man" / "dfget.1")],
        capture_output=True,
        env={**os.environ, "MANPAGER": "cat", "PAGER": "cat", "MANWIDTH": "100"},
    )
    assert result.returncode == 0, result.stderr.decode()
    assert b"dfget supernode" in result.stdout


def test_bash_completion_completes_options_and_subcommands() -> None:
    bash = _require("bash")
    script = ROOT / "completions" / "dfget.bash"

    def complete(*words: str) -> list[str]:
        line = " ".join(["dfget", *words])
        program = (
            f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words)}; _dfget; "
            'printf "%s\\n" "${COMPREPLY[@]}"'
        )
        result = subprocess.run([bash, "-c", program], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    assert "--url" in complete("--u")
    assert {"server", "supernode", "trace", "version"} <= set(complete("s")) | {"trace", "version"}
    assert complete("--pattern", "") == ["p2p", "cdn", "source"]
    assert "--alivetime" in complete("server", "--a")


def test_readme_documents_exit_codes_subcommands_and_completions() -> None:
    readme = (ROOT / "README.md").read_text()
    for code in EXIT_CODE_HELP:
        assert f"| {int(code)} |" in readme
    for command in ("dfget server", "dfget supernode", "dfget trace"):
        assert command in readme
    assert "completions/" in readme


def test_help_lists_sections_examples_and_exit_codes() -> None:
    result = run_dfget(["--help"])
    text = result.stdout.decode()
    assert result.returncode == 0
    for title in SECTIONS:
        assert f"{title} options" in text
    assert "Examples:" in text and "Exit codes:" in text
    for command in ("server", "supernode", "trace"):
        sub = run_dfget([command, "--help"])
        assert sub.returncode == 0 and b"Usage: dfget " + command.encode() in sub.stdout
