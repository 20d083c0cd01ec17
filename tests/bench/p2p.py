"""Benchmark: a P2P pull from one peer (`dfget` through the supernode) against curl from the origin.

Run from the repository root:

    python -m tests.bench.p2p                    # 1 GiB, 5 runs each
    python -m tests.bench.p2p --size-mib 256 --runs 3 --profile /tmp/p2p.raw

A random file is served by Debian's nginx (the origin, `sendfile on`). `dfget supernode` runs
the local CDN pattern on 127.0.0.1. Peer 1 pulls the file once (the CDN fetches it from the
origin and serves it: the cold pull, timed once) and keeps serving it from its peer server.
Then, alternating, each run of `dfget` is a fresh peer (own --home and output) that must get
every byte from peer 1 (its `--json` result is checked: `bytes.peer` is the size, `bytes.cdn`
and `bytes.source` are 0, and the only peer is peer 1); its own peer server is stopped after
the run so the next fresh peer again has only peer 1 to pull from. Each curl run fetches the
file from nginx. Before every timed run the previous output is removed and `sync` flushes dirty
pages; wall time and peak RSS come from `/usr/bin/time`. Prints a markdown table of medians
and the dfget-p2p/curl wall ratio (the bar is 1.5).

`--profile FILE` adds one untimed fresh-peer pull under `py-spy record --threads -f raw` and
prints the leaf frames with the most samples.

Not a pytest module: nothing here is named test_*.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.bench import common

BAR = 1.5  # dfget-p2p / curl wall
PULL_TIMEOUT = 900.0  # one download, seconds


class Bench:
    """The temp root, the supernode and every peer home started for one benchmark."""

    def __init__(self, root: Path, url: str, size: int, prime: bool = True) -> None:
        self.root = root
        self.url = url
        self.size = size
        self.prime = 2 * size if prime else 0  # bytes for common.fresh (twice: a margin)
        self.homes: list[Path] = []
        self.supernode: subprocess.Popen[bytes] | None = None
        self.node = ""

    def start_supernode(self) -> None:
        self.supernode, self.node = common.start_supernode(self.root / "sn")

    def pull_command(self, name: str) -> tuple[list[str], Path, Path]:
        """The dfget command of peer ``name``, its home and its output file."""
        home, out = self.root / name, self.root / f"{name}.bin"
        self.homes.append(home)
        command = [
            *common.DFGET, "-u", self.url, "-o", str(out),
            "--node", self.node, "--home", str(home), "--ip", "127.0.0.1",
            "--alivetime", "10m", "--expiretime", "10m", "-q", "--json",
        ]  # fmt: skip
        return command, home, out

    def check_from(self, stdout: bytes, holder: str, kinds: set[str]) -> dict[str, Any]:
        """The --json result, which must be a success whose bytes all came from ``kinds`` and,
        for peers, only from ``holder``."""
        text = stdout.decode(errors="replace").strip()
        lines = [line for line in text.splitlines() if line.startswith("{")]  # py-spy adds some
        if not lines:
            raise RuntimeError(f"no --json result: {text[-2000:]}")
        result: dict[str, Any] = json.loads(lines[-1])
        by_kind = result["bytes"]
        used = {h["kind"] + " " + h["address"] for h in result["holders"] if h["bytes"]}
        fine = (
            result["success"]
            and sum(by_kind.get(kind, 0) for kind in kinds) == self.size
            and all(h.split(" ", 1)[0] != "peer" or h == f"peer {holder}" for h in used)
        )
        if not fine:
            raise RuntimeError(f"expected all {self.size} bytes from {sorted(kinds)}: {text}")
        return result

    def stop(self) -> None:
        for home in self.homes:
            common.stop_peer_server(home)
        if self.supernode is not None:
            common.stop_process(self.supernode, timeout=common.STOP_TIMEOUT)


def profile(bench: Bench, raw: Path, rate: int, idle: bool) -> str:
    """One fresh-peer pull under py-spy; returns the top leaf frames as text."""
    command, home, out = bench.pull_command("profiled")
    spy = ["py-spy", "record", "-o", str(raw), "-f", "raw", "--threads", "-r", str(rate)]
    common.fresh(out)
    result = subprocess.run(
        [*spy, *(["--idle"] if idle else []), "--", *command],
        capture_output=True,
        cwd=common.REPO,
        timeout=PULL_TIMEOUT,
    )
    if result.returncode != 0:
        raise RuntimeError(f"py-spy run failed: {result.stderr.decode(errors='replace')[-2000:]}")
    pulled = bench.check_from(result.stdout, common.peer_address(bench.root / "p1"), {"peer"})
    common.stop_peer_server(home)
    shutil.rmtree(home, ignore_errors=True)
    out.unlink(missing_ok=True)
    return f"(profiled pull: {pulled['duration']:.2f} s by dfget's clock)\n" + top_leaves(raw)


def top_leaves(raw: Path, count: int = 10) -> str:
    """The leaf frames with the most samples in a py-spy raw (collapsed stacks) file."""
    leaves: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if stack and count_text.isdigit():
            leaves[stack.rsplit(";", 1)[-1]] += int(count_text)
            threads[stack.split(";", 1)[0].split(": ", 1)[-1]] += int(count_text)
    total = sum(leaves.values()) or 1
    by_thread = ", ".join(f"{name} {samples}" for name, samples in threads.most_common())
    lines = [f"py-spy: {sum(leaves.values())} samples (by thread: {by_thread})", ""]
    lines += ["| samples | % | leaf frame |", "|---:|---:|---|"]
    for frame, samples in leaves.most_common(count):
        lines.append(f"| {samples} | {100 * samples / total:.1f} | `{frame}` |")
    return "\n".join(lines)


def run_benchmark(size_mib: int, runs: int, workdir: Path | None, args: argparse.Namespace) -> str:
    common.require_tools(
        (common.NGINX, "nginx-light"),
        *([("py-spy", "py-spy (pip)")] if args.profile else []),
    )
    common.byte_compile()
    bench: Bench | None = None
    with common.random_docroot(size_mib, workdir, prefix="dfget-bench-p2p-") as (root, data):
        try:
            with common.nginx(root, data.parent) as port:
                bench = Bench(
                    root, f"http://127.0.0.1:{port}/{data.name}", size_mib * common.MiB, args.prime
                )
                bench.start_supernode()
                cold = cold_pull(bench, data)
                samples = alternate(bench, data, runs)
                text = report(size_mib, runs, cold, samples)
                if args.profile:
                    text += "\n\n" + profile(bench, args.profile, args.profile_rate, args.idle)
                return text
        finally:
            if bench is not None:
                bench.stop()


def cold_pull(bench: Bench, data: Path) -> common.Sample:
    """Peer 1 pulls the file through the supernode, whose CDN fetches it from the origin."""
    command, _, out = bench.pull_command("p1")
    common.fresh(out)
    sample = common.timed(command, bench.root, capture=True, timeout=PULL_TIMEOUT)
    result = bench.check_from(sample.stdout, "", {"cdn", "source"})
    if not common.same_bytes(data, out):
        raise SystemExit("peer 1 wrote different bytes than the source")
    log(f"cold pull of peer 1: {sample.wall:.2f} s, bytes by kind {result['bytes']}")
    return sample


def alternate(bench: Bench, data: Path, runs: int) -> dict[str, list[common.Sample]]:
    """``runs`` fresh peers pulling from peer 1, alternating with curl pulling from nginx."""
    peer1 = common.peer_address(bench.root / "p1")
    samples: dict[str, list[common.Sample]] = {"dfget p2p": [], "curl": []}
    curl_out = bench.root / "curl.bin"
    for run in range(runs):
        command, home, out = bench.pull_command(f"p{run + 2}")
        common.fresh(out, prime=bench.prime)
        sample = common.timed(command, bench.root, capture=True, timeout=PULL_TIMEOUT)
        bench.check_from(sample.stdout, peer1, {"peer"})
        if run == 0 and not common.same_bytes(data, out):
            raise SystemExit("dfget p2p wrote different bytes than the source")
        common.stop_peer_server(home)  # so that the next fresh peer has only peer 1 to pull from
        shutil.rmtree(home, ignore_errors=True)
        out.unlink(missing_ok=True)
        samples["dfget p2p"].append(sample)
        common.log_run(run, runs, "dfget p2p", sample)
        common.fresh(curl_out, prime=bench.prime)
        sample = common.timed(["curl", "-s", "-f", "-o", str(curl_out), bench.url], bench.root)
        if run == 0 and not common.same_bytes(data, curl_out):
            raise SystemExit("curl wrote different bytes than the source")
        samples["curl"].append(sample)
        common.log_run(run, runs, "curl", sample)
    curl_out.unlink(missing_ok=True)
    return samples


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def report(
    size_mib: int, runs: int, cold: common.Sample, samples: dict[str, list[common.Sample]]
) -> str:
    table, walls = common.median_table(size_mib, samples)
    p2p_ratio = common.ratio(walls, "dfget p2p")
    cold_rate = size_mib / cold.wall if cold.wall else float("inf")
    lines = [
        f"{size_mib} MiB on 127.0.0.1, median of {runs} runs each: dfget pulls from one peer"
        " (through `dfget supernode`), curl from nginx (sendfile on)",
        "",
        *table,
        "",
        f"dfget-p2p/curl wall ratio: {p2p_ratio:.2f}"
        f" ({'meets' if p2p_ratio <= BAR else 'misses'} the {BAR}x bar)",
        f"cold pull of peer 1 (supernode CDN filled from nginx): {cold.wall:.2f} s"
        f" ({cold_rate:.0f} MiB/s), {cold.rss_kib / 1024:.1f} MiB peak RSS",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = common.arguments(__doc__)
    parser.add_argument("--profile", type=Path, help="py-spy raw output of one extra pull")
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples/s")
    parser.add_argument("--idle", action="store_true", help="py-spy: include idle threads")
    args = parser.parse_args(argv)
    common.print_report(lambda: run_benchmark(args.size_mib, args.runs, args.dir, args))


if __name__ == "__main__":
    main()
