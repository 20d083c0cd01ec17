"""dfget peers for end-to-end tests: each run with its own --home (so its own peer server) and
its output in one directory; the peer servers they spawn are stopped at teardown."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path

from dfget.errors import ExitCode
from tests.support.helpers import eventually, run_dfget

STOP_TIMEOUT = 10.0
"""How long a peer server gets to exit after SIGTERM, seconds."""


class Peers:
    """dfget runs under ``root``: the home ``name`` is ``root/name``, outputs go to ``root/out``
    (``<home>.bin`` unless named). ``stop()`` stops the peer server of every home used."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.out = root / "out"
        self.homes: list[Path] = []

    def home(self, name: str) -> Path:
        """The home ``name``, whose peer server ``stop()`` will stop."""
        home = self.root / name
        if home not in self.homes:
            self.homes.append(home)
        return home

    def args(
        self, home: str, url: str, *extra: str, out: str | None = None, timers: bool = True
    ) -> list[str]:
        """dfget's arguments, ``extra`` last; ``out``: the output's name in ``self.out``.
        ``timers``: the peer server exits after 60 s idle (bounded if a teardown misses it)
        instead of following the cache budget rule."""
        return [
            "-u", url, "-o", str(self.out / (out or f"{home}.bin")),
            "--home", str(self.home(home)), "--ip", "127.0.0.1",
            *(("--expiretime", "60s", "--alivetime", "60s") if timers else ()), *extra,
        ]  # fmt: skip

    def run(
        self, home: str, url: str, *extra: str, out: str | None = None, timers: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        return run_dfget(self.args(home, url, *extra, out=out, timers=timers), timeout=120)

    def json(
        self, home: str, url: str, *extra: str, out: str | None = None, timers: bool = True
    ) -> dict[str, object]:
        """A run with ``--json`` that must succeed; its report."""
        result = self.run(home, url, "--json", *extra, out=out, timers=timers)
        assert result.returncode == ExitCode.OK, result.stderr.decode()[-3000:]
        report: dict[str, object] = json.loads(result.stdout)
        return report

    def output(self, home: str) -> bytes:
        """The default output of ``home``'s runs."""
        return (self.out / f"{home}.bin").read_bytes()

    def server_pid(self, home: str) -> int:
        pid = peer_server_pid(self.root / home)
        assert pid is not None, f"{home} has no peer server"
        return pid

    def server_port(self, home: str) -> int:
        return int(json.loads((self.root / home / "meta" / "host.meta").read_text())["servicePort"])

    def stop(self) -> None:
        """Stop every peer server the runs started; one that outlives SIGTERM is killed, so no
        test leaves a process behind (the test that hit it fails on its own assertions)."""
        for home in self.homes:
            if not stop_peer_server(home):
                pid = peer_server_pid(home)
                if pid is not None:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)


def peer_server_pid(home: Path) -> int | None:
    """The pid in ``home``'s meta/server.pid (None without one)."""
    try:
        return int((home / "meta" / "server.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def stop_peer_server(home: Path, timeout: float = STOP_TIMEOUT) -> bool:
    """SIGTERM the peer server of ``home`` (meta/server.pid) and wait at most ``timeout``
    seconds for it to exit; whether it is gone (also when there was none)."""
    pid = peer_server_pid(home)
    if pid is None:
        return True
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:  # gone, or the pid is now another user's process
        return True
    return eventually(lambda: not alive(pid), timeout=timeout)


def alive(pid: int) -> bool:
    """Running (not exited, not a zombie waiting for its parent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def by_kind(result: dict[str, object]) -> dict[str, int]:
    return result["bytes"]  # type: ignore[return-value]
