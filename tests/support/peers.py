"""dfget peers for end-to-end tests: each run with its own --home, output and peer server."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path

from dfget.errors import ExitCode
from tests.support.helpers import run_dfget


class Peers:
    """dfget runs with their own --home and --port; their peer servers stopped at teardown."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.homes: list[Path] = []

    def home(self, name: str) -> Path:
        home = self.root / name
        self.homes.append(home)
        return home

    def args(self, name: str, url: str, node: str, *extra: str, timers: bool = True) -> list[str]:
        """dfget's arguments; ``timers``: its peer server exits after 60 s idle (bounded if a
        teardown misses it) instead of following the cache budget rule."""
        home = self.home(name)
        return [
            "-u", url, "-o", str(self.root / "out" / f"{name}.bin"),
            "--node", node, "--home", str(home), "--ip", "127.0.0.1", "--json",
            *(("--expiretime", "60s", "--alivetime", "60s") if timers else ()), *extra,
        ]  # fmt: skip

    def run(
        self, name: str, url: str, node: str, *extra: str, timers: bool = True
    ) -> dict[str, object]:
        result = run_dfget(self.args(name, url, node, *extra, timers=timers), timeout=120)
        assert result.returncode == ExitCode.OK, result.stderr.decode()[-2000:]
        return json.loads(result.stdout)

    def output(self, name: str) -> bytes:
        return (self.root / "out" / f"{name}.bin").read_bytes()

    def server_pid(self, name: str) -> int:
        return int((self.root / name / "meta" / "server.pid").read_text())

    def stop_servers(self) -> None:
        for home in self.homes:
            pid_file = home / "meta" / "server.pid"
            if pid_file.exists():
                with contextlib.suppress(ValueError, ProcessLookupError):
                    os.kill(int(pid_file.read_text()), signal.SIGTERM)


def by_kind(result: dict[str, object]) -> dict[str, int]:
    return result["bytes"]  # type: ignore[return-value]
