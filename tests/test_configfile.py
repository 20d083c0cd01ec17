"""The configuration files (YAML subset, legacy INI) and how flags, environment, file and
defaults combine into Settings.

Precedence is checked on the Settings the real click command builds (``dfget.download.run``
replaced by a recorder), so ``explicit`` is computed exactly as in a real invocation. The
end-to-end effects (which supernode is asked, where the log lands) are in test_cli.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import certifi
import click
import pytest
from click.testing import CliRunner

from dfget import configfile
from dfget.cli import cli
from dfget.cliopts import FieldOption
from dfget.config import Node, Settings, check_cacerts, headers_from_env
from dfget.configfile import ConfigError, FileConfig, find, load, parse_yaml_subset
from dfget.defaults import field_default
from dfget.supernode.options import SupernodeOptions
from dfget.uploader.options import ServerOptions

URL = "http://127.0.0.1:9/dir/file.bin"

V1_YAML = """\
# /etc/dragonfly/dfget.yml as the Dragonfly docs show it
nodes:
    - 10.0.0.1
    - 10.0.0.2:8003=2
localLimit: 20M
minRate: 64K   # trailing comment
totalLimit: 100MB
clientQueueSize: 8
workHome: /var/lib/dfget
logConfig:
    maxSize: 40
    maxBackups: 1
    path: /var/log/dfget.log
"""


# --- the YAML subset --------------------------------------------------------------------------


def test_yaml_subset_reads_the_v1_example() -> None:
    assert parse_yaml_subset(V1_YAML) == {
        "nodes": ["10.0.0.1", "10.0.0.2:8003=2"],
        "localLimit": "20M",
        "minRate": "64K",
        "totalLimit": "100MB",
        "clientQueueSize": "8",
        "workHome": "/var/lib/dfget",
        "logConfig": {"maxSize": "40", "maxBackups": "1", "path": "/var/log/dfget.log"},
    }


@pytest.mark.parametrize(
    "text",
    [
        "nodes:\n  - a\n  - 'b:8003'\n",
        "nodes:\n- a\n- b:8003\n",  # list items at the key's own indentation
        'nodes: [a, "b:8003"]\n',
        "---\nnodes:\n  -   a   # first\n  - b:8003\n",
        "nodes:\r\n  - a\r\n  - b:8003\r\n",
    ],
    ids=["indented", "same-indent", "flow", "document-marker-and-comments", "crlf"],
)
def test_yaml_subset_node_lists(text: str) -> None:
    assert parse_yaml_subset(text)["nodes"] == ["a", "b:8003"]


def test_yaml_subset_quotes_and_hashes() -> None:
    values = parse_yaml_subset("workHome: '/data/#1' # comment\nlocalLimit: \"20M\"\nx: a#b\n")
    assert values == {"workHome": "/data/#1", "localLimit": "20M", "x": "a#b"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("  - a\n", "line 1"),
        ("nodes: a\n  - b\n", "line 2: list item under a scalar key"),
        ("nodes\n", "line 1: expected 'key: value'"),
        ("logConfig:\n  maxSize\n", "line 2"),
    ],
)
def test_yaml_subset_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_yaml_subset(text)


# --- files ----------------------------------------------------------------------------------------


def test_load_v1_yaml(tmp_path: Path) -> None:
    path = tmp_path / "dfget.yml"
    path.write_text(V1_YAML)
    assert load(path) == FileConfig(
        path=path,
        nodes=(Node("10.0.0.1"), Node("10.0.0.2", 8003, 2)),
        locallimit=20 * 1024**2,
        minrate=64 * 1024,
        totallimit=100 * 1024**2,
        clientqueue=8,
        home=Path("/var/lib/dfget"),
    )


def test_load_yaml_with_bom_nulls_and_home_tilde(tmp_path: Path) -> None:
    path = tmp_path / "dfget.yaml"
    path.write_bytes(
        "\ufeffnodes: 10.0.0.1,10.0.0.2\nlocalLimit: ~\nminRate:\nworkHome: ~/df\n".encode()
    )
    config = load(path)
    assert config.nodes == (Node("10.0.0.1"), Node("10.0.0.2"))
    assert config.locallimit is None and config.minrate is None
    assert config.home == Path.home() / "df"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("localLimit: fast\n", "localLimit"),
        ("minRate: 1.5M\n", "minRate"),
        ("totalLimit: -1\n", "totalLimit"),
        ("clientQueueSize: six\n", "clientQueueSize"),
        ("clientQueueSize: -1\n", "clientQueueSize"),
        ("nodes:\n  - host:port\n", "nodes"),
        ("localLimit:\n  - 1M\n", "localLimit"),
    ],
)
def test_bad_yaml_values_name_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "dfget.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load(path)
    assert str(path) in str(error.value) and f"{key}:" in str(error.value)


def test_load_legacy_ini(tmp_path: Path) -> None:
    path = tmp_path / "dragonfly.conf"
    path.write_text("[node]\naddress = 10.0.0.1, 10.0.0.2:8003=3\n\n[other]\nx = 1\n")
    assert load(path) == FileConfig(path=path, nodes=(Node("10.0.0.1"), Node("10.0.0.2", 8003, 3)))
    empty = tmp_path / "other.ini"
    empty.write_text("[other]\nx = 1\n")
    assert load(empty).nodes == ()


@pytest.mark.parametrize("text", ["address = a\n", "[node]\naddress = a:notaport\n"])
def test_bad_ini(tmp_path: Path, text: str) -> None:
    path = tmp_path / "dragonfly.conf"
    path.write_text(text)
    with pytest.raises(ConfigError, match=str(path)):
        load(path)


def test_find_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    yml, ini = tmp_path / "dfget.yml", tmp_path / "dragonfly.conf"
    monkeypatch.setattr(configfile, "DEFAULT_CANDIDATES", (yml, ini))
    monkeypatch.delenv("DFGET_CONFIG", raising=False)
    assert find(None) == FileConfig()  # neither exists
    ini.write_text("[node]\naddress = 10.0.0.9\n")
    assert find(None).path == ini
    yml.write_text("nodes: [10.0.0.8]\n")
    assert find(None).path == yml
    yml.write_text("nodes: [bad:port]\n")  # v1: the first candidate that loads is used
    assert find(None).path == ini

    chosen = tmp_path / "chosen.yml"
    chosen.write_text("localLimit: 1M\n")
    monkeypatch.setenv("DFGET_CONFIG", str(chosen))
    assert find(None).path == chosen
    assert find(str(ini)).path == ini  # --config beats DFGET_CONFIG
    with pytest.raises(ConfigError, match="cannot read"):
        find(str(tmp_path / "missing.yml"))  # a named file must load


# --- settings: flags > environment > file > defaults ----------------------------------------------

Parse = Callable[..., Settings]


@pytest.fixture
def settings_of(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Parse]:
    """``settings_of(*flags, env={...}, config=text)``: the Settings `dfget -u URL` would run
    with; the configuration file is a temporary one (never /etc/dragonfly)."""
    for key in list(os.environ):
        if key.startswith("DFGET_"):
            monkeypatch.delenv(key)
    captured: list[Settings] = []

    def run(settings: Settings) -> int:
        captured.append(settings)
        return 0

    monkeypatch.setattr("dfget.download.run", run)

    def parse(*args: str, env: dict[str, str] | None = None, config: str = "") -> Settings:
        path = tmp_path / "dfget.yml"
        path.write_text(config)
        full_env = {"DFGET_CONFIG": str(path), **(env or {})}
        result = CliRunner().invoke(cli, ["-u", URL, *args], env=full_env)
        assert result.exit_code == 0, result.output
        assert captured, result.output
        return captured.pop()

    yield parse


def test_defaults(settings_of: Parse) -> None:
    s = settings_of()
    assert (s.locallimit, s.minrate, s.totallimit, s.clientqueue) == (0, 64 * 1024, 0, 6)
    assert (s.timeout, s.expiretime, s.alivetime, s.port, s.ip) == (0, None, None, 0, "")
    assert (s.cache_budget, str(s.cache_min_free)) == (None, "1GB")
    assert s.nodes == ()  # the download uses 127.0.0.1:8002
    assert s.home == Path.home() / ".small-dragonfly"
    assert s.output == Path("file.bin").absolute() and s.pattern == "p2p"


def test_options_not_given_leave_the_settings_defaults(settings_of: Parse) -> None:
    assert settings_of() == Settings(url=URL, output=Path("file.bin").absolute())


@pytest.mark.parametrize(
    ("command", "role"),
    [("dfget", Settings), ("server", ServerOptions), ("cache", ServerOptions)]
    + [("supernode", SupernodeOptions)],
)
def test_option_defaults_are_the_dataclass_defaults(command: str, role: type[Any]) -> None:
    """A default is written once, as a field default of the role's dataclass: every option
    filling a field with a default of its own reads it from there, --help included."""
    group_ctx = click.Context(cli, info_name="dfget", **cli.context_settings)
    chosen = cli if command == "dfget" else cli.commands[command]
    ctx = group_ctx if chosen is cli else click.Context(chosen, info_name=command, parent=group_ctx)
    names = {f.name for f in fields(role)}
    read = []
    for param in chosen.get_params(ctx):
        if not isinstance(param, click.Option) or param.name not in names:
            continue
        if isinstance(param, FieldOption):
            default = param.type_cast_value(ctx, param.get_default(ctx))
            assert default == field_default(role, param.name), param.name
            read.append(param.name)
        elif param.is_flag:
            assert field_default(role, param.name) is False, param.name
        else:  # no default of its own: the builder leaves the field's
            assert param.get_default(ctx) in (None, (), getattr(click.core, "UNSET", None))
    assert read


FILE = "nodes: [10.0.0.1]\nlocalLimit: 10M\nminRate: 1M\ntotalLimit: 30M\nclientQueueSize: 9\n"


def test_file_fills_what_flags_and_environment_leave(settings_of: Parse, tmp_path: Path) -> None:
    s = settings_of(config=FILE + f"workHome: {tmp_path / 'work'}\n")
    assert s.nodes == (Node("10.0.0.1"),)
    assert (s.locallimit, s.minrate, s.totallimit, s.clientqueue) == (
        10 * 1024**2,
        1024**2,
        30 * 1024**2,
        9,
    )
    assert s.home == tmp_path / "work"


def test_environment_beats_file(settings_of: Parse, tmp_path: Path) -> None:
    env = {
        "DFGET_NODE": "10.0.0.2:8003",
        "DFGET_LOCALLIMIT": "5M",
        "DFGET_MINRATE": "2M",
        "DFGET_TOTALLIMIT": "0",
        "DFGET_CLIENTQUEUE": "3",
        "DFGET_HOME": str(tmp_path / "env-home"),
    }
    s = settings_of(env=env, config=FILE + "workHome: /nonexistent/work\n")
    assert s.nodes == (Node("10.0.0.2", 8003),)
    assert (s.locallimit, s.minrate, s.totallimit, s.clientqueue) == (
        5 * 1024**2,
        2 * 1024**2,
        0,
        3,
    )
    assert s.home == tmp_path / "env-home"


def test_flags_beat_environment_and_file(settings_of: Parse, tmp_path: Path) -> None:
    env = {"DFGET_NODE": "10.0.0.2", "DFGET_LOCALLIMIT": "5M", "DFGET_HOME": "/nonexistent"}
    s = settings_of(
        "--node", "10.0.0.3", "-s", "1M", "--totallimit", "2M", "--home", str(tmp_path / "h"),
        env=env,
        config=FILE,
    )  # fmt: skip
    assert s.nodes == (Node("10.0.0.3"),)
    assert (s.locallimit, s.totallimit) == (1024**2, 2 * 1024**2)
    assert s.home == tmp_path / "h"


@pytest.mark.parametrize(
    ("flag", "field"),
    [("-s", "locallimit"), ("--totallimit", "totallimit"), ("--clientqueue", "clientqueue")],
)
def test_explicit_zero_on_the_command_line_is_honoured(
    settings_of: Parse, flag: str, field: str
) -> None:
    """v1 could not force 0 over the file; we can (-s 0 really means unlimited)."""
    assert getattr(settings_of(flag, "0", config=FILE), field) == 0
    assert getattr(settings_of(env={f"DFGET_{field.upper()}": "0"}, config=FILE), field) == 0


@pytest.mark.parametrize(
    ("flag", "value", "field"),
    [("--minrate", "64KB", "minrate"), ("--clientqueue", "6", "clientqueue")],
)
def test_a_flag_equal_to_the_default_still_beats_the_file(
    settings_of: Parse, flag: str, value: str, field: str
) -> None:
    default = field_default(Settings, field)
    assert getattr(settings_of(config=FILE), field) != default
    assert getattr(settings_of(flag, value, config=FILE), field) == default
    assert (
        getattr(settings_of(env={f"DFGET_{field.upper()}": value}, config=FILE), field) == default
    )


def test_last_node_flag_wins(settings_of: Parse) -> None:
    s = settings_of("-n", "10.0.0.1", "--node", "10.0.0.2=3,[::1]:8004", config=FILE)
    assert s.nodes == (Node("10.0.0.2", weight=3), Node("::1", 8004))


def test_legacy_ini_through_dfget_config(settings_of: Parse, tmp_path: Path) -> None:
    ini = tmp_path / "dragonfly.conf"
    ini.write_text("[node]\naddress = 10.0.0.7,10.0.0.8\n")
    s = settings_of(env={"DFGET_CONFIG": str(ini)})
    assert s.nodes == (Node("10.0.0.7"), Node("10.0.0.8"))
    other = tmp_path / "other.yml"
    other.write_text("nodes: [10.0.0.9]\n")
    assert settings_of("--config", str(other), env={"DFGET_CONFIG": str(ini)}).nodes == (
        Node("10.0.0.9"),
    )


def test_env_option_names_follow_the_flags(settings_of: Parse) -> None:
    """DFGET_<FLAG>: the flag's name, not click's internal parameter name."""
    s = settings_of(
        env={
            "DFGET_FILTER": "sig&exp",
            "DFGET_JSON": "1",
            "DFGET_PATTERN": "cdn",
            "DFGET_MD5": "AB",
        }
    )
    assert s.filters == ("sig", "exp") and s.json and s.pattern == "cdn" and s.md5 == "ab"


def test_headers_from_flags_file_and_environment(settings_of: Parse, tmp_path: Path) -> None:
    header_file = tmp_path / "headers"
    header_file.write_text("# registry credentials\nAuthorization: Bearer t0k3n\n\nX-A: 1\n")
    s = settings_of(
        "--header", "X-B:2",
        "--header-file", str(header_file),
        env={"DFGET_HEADER_X_AUTH_TOKEN": "s3cr3t", "DFGET_HEADER_FILE": str(header_file)},
    )  # fmt: skip
    assert s.headers == ("X-B:2", "Authorization: Bearer t0k3n", "X-A: 1", "X-Auth-Token: s3cr3t")
    # DFGET_HEADER_FILE alone is the --header-file option, not a header called "File".
    s = settings_of(env={"DFGET_HEADER_FILE": str(header_file)})
    assert s.headers == ("Authorization: Bearer t0k3n", "X-A: 1")


def test_headers_from_env_names() -> None:
    env = {"DFGET_HEADER_AUTHORIZATION": "Basic x", "DFGET_HEADER_": "no name", "DFGET_NODE": "a"}
    assert headers_from_env(env) == ["Authorization: Basic x"]


@pytest.mark.parametrize(
    ("flag", "value", "field", "expected"),
    [
        ("-s", "20M", "locallimit", 20 * 1024**2),
        ("-s", "20m", "locallimit", 20 * 1024**2),
        ("--locallimit", "100MB", "locallimit", 100 * 1024**2),
        ("--locallimit", "64KB", "locallimit", 64 * 1024),
        ("--locallimit", "64k", "locallimit", 64 * 1024),
        ("--locallimit", "1G", "locallimit", 1024**3),
        ("--locallimit", "512B", "locallimit", 512),
        ("--locallimit", "1048576", "locallimit", 1048576),
        ("--minrate", "64KB", "minrate", 65536),
        ("--totallimit", "20M", "totallimit", 20 * 1024**2),
        ("-e", "30s", "timeout", 30.0),
        ("--timeout", "5m", "timeout", 300.0),
        ("--timeout", "90", "timeout", 90.0),
        ("--expiretime", "3m0s", "expiretime", 180.0),
        ("--expiretime", "1h30m", "expiretime", 5400.0),
        ("--alivetime", "300ms", "alivetime", 0.3),
        ("--alivetime", "2.5s", "alivetime", 2.5),
    ],
)
def test_rate_and_duration_units(
    settings_of: Parse, flag: str, value: str, field: str, expected: float
) -> None:
    assert getattr(settings_of(flag, value), field) == pytest.approx(expected)


def test_cacerts_are_checked_and_named(tmp_path: Path) -> None:
    bundle = certifi.where()
    check_cacerts([bundle, bundle])
    with pytest.raises(ValueError, match="--cacerts 'missing.pem': no such file"):
        check_cacerts([bundle, "missing.pem"])
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ValueError, match="--cacerts .*junk.pem.*not a PEM CA file"):
        check_cacerts([str(junk)])
