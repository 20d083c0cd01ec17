"""Benchmark: N nodes pulling one blob through `dfget supernode` from one rate-limited origin.

Run from the repository root:

    python -m tests.bench.fanout                          # 512 MiB, N = 1,2,4,8,16, both patterns
    python -m tests.bench.fanout --size-mib 128 --nodes 1,4 --patterns local --no-curl

The origin (tests/support/origin.py) caps its total egress (default 50 MB/s, shared by all
connections) and counts requests and body bytes. For each N and supernode pattern (`local`: the
supernode's CDN fetches the origin once; `source`: peers fetch pieces from the origin, one
client per piece at a time), a fresh `dfget supernode` starts and N `dfget` downloads start
together, each with its own --home, peer server and output. Baseline in the same run: N
`curl -o` straight from the origin. A staggered case follows: node 2 starts after node 1 has
finished (within --expiretime), node 3 after node 1's peer server expired its file. `--joins`
adds: node 2 joins when node 1 has half the blob, node 3 when node 1 has finished; their rows
count only their own origin requests (each node tags them with a header), and a row between
them counts what nodes 1 and 2 took from the origin together.

Prints one markdown table: N, pattern, makespan, mean and max per-node time, origin bytes /
blob size, origin requests, bytes from peers / CDN / source, CPU seconds (dfget, peer servers,
supernode). `--json FILE` also writes the rows (tests/bench/simulate.py --validate reads it).

The supernode's scheduling decides how often the origin serves the blob. `--supernode` picks
it: `ours` (`dfget supernode`), `v1` (tests/support/v1_supernode.py: our supernode with Dragonfly
1.0.6's scheduling rules, the test double CI measures against) or `go` (a real Dragonfly 1.0.6
supernode binary given by `--go-supernode PATH` or DFGET_BENCH_GO_SUPERNODE; in the local
pattern the bench serves its CDN directory on the download port itself). `--clients go` runs a
Go dfget binary (`--go-dfget PATH` or DFGET_BENCH_GO_DFGET) instead of ours, for comparison in
the same run; Go dfget prints no per-holder accounting, so only the origin's counts show where
its bytes came from. The Go supernode listens on every interface: run the bench inside a
network namespace of its own (`unshare -n sh -c 'ip link set lo up; python ...'`).

Not a pytest module: nothing here is named test_*.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.bench import common
from tests.support.origin import Origin
from tests.support.peers import peer_server_pid

MB = 1_000_000
PRIME_LIMIT = 12 * 1024**3  # bytes; the machine has 24 GiB
PULL_TIMEOUT = 1800.0
TICK = os.sysconf("SC_CLK_TCK")
NODE_HEADER = "X-Bench-Node"


@dataclass
class Row:
    case: str
    nodes: int
    pattern: str
    makespan: float
    mean_node: float
    max_node: float
    origin_bytes: int
    origin_requests: int
    by_kind: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    ok: bool = True
    supernode_requests: float = 0.0
    """Requests the supernode got from the dfget clients, per node (ours and v1 only)."""


def process_cpu(pid: int) -> float:
    """utime + stime of a live process, in seconds (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Fanout:
    def __init__(self, root: Path, origin: Origin, url: str, data: Path, args: argparse.Namespace):
        self.root = root
        self.origin = origin
        self.url = url
        self.data = data
        self.size = data.stat().st_size
        self.args = args
        self.serial = 0

    def _dfget(self, home: Path, out: Path, node: str, client: str = "ours") -> list[str]:
        common_args = [
            "-u", self.url, "-o", str(out), "--node", node, "--home", str(home),
            "--ip", "127.0.0.1", "--alivetime", "10m", "--expiretime", self.args.expiretime,
        ]  # fmt: skip
        if client == "go":
            return [self.args.go_dfget, *common_args]
        return [*common.DFGET, *common_args, "-q", "--json"]

    def _start_supernode(
        self, home: Path, pattern: str
    ) -> tuple[subprocess.Popen[bytes], str, Callable[[], None]]:
        """The supernode of --supernode; returns it, its address and how to stop what serves
        its download port (nothing to stop for ours)."""
        kind = self.args.supernode
        if kind == "go":
            return common.start_go_supernode(home, self.args.go_supernode, pattern)
        command = common.V1_SUPERNODE if kind == "v1" else (*common.DFGET, "supernode")
        proc, node = common.start_supernode(home, "--cdn-pattern", pattern, command=command)
        return proc, node, lambda: None

    def _prime(self, n: int) -> int:
        """Bytes of memory to prime before a case (common.prime_memory): n outputs and the
        supernode's CDN copy, twice over for a margin, at most PRIME_LIMIT."""
        return min(2 * (n + 1) * self.size, PRIME_LIMIT) if self.args.prime else 0

    def _settle(self) -> None:
        """Let in-flight origin sends finish before counting from zero."""
        last = -1
        deadline = time.monotonic() + 10
        while self.origin.stats.body_bytes != last and time.monotonic() < deadline:
            last = self.origin.stats.body_bytes
            time.sleep(0.2)
        self.origin.reset_stats()

    @contextmanager
    def _case(self, pattern: str) -> Iterator[tuple[Path, str, subprocess.Popen[bytes]]]:
        """A fresh supernode for one case; yields the case's directory, the --node address and
        the supernode process. Afterwards the peer servers of every home in the case directory
        (``n*``), the supernode and what serves its download port are stopped."""
        self.serial += 1
        case_root = self.root / f"case{self.serial}"
        sn_proc, node, stop_files = self._start_supernode(case_root / "sn", pattern)
        try:
            yield case_root, node, sn_proc
        finally:
            for home in sorted(case_root.glob("n*")):
                if home.is_dir():
                    common.stop_peer_server(home)
            common.stop_process(sn_proc)
            stop_files()
            shutil.rmtree(case_root, ignore_errors=True)

    def pull_together(self, n: int, pattern: str, client: str = "ours") -> Row:
        with self._case(pattern) as (case_root, node, sn_proc):
            homes = [case_root / f"n{i}" for i in range(n)]
            outs = [case_root / f"n{i}.bin" for i in range(n)]
            common.fresh(*outs, prime=self._prime(n))
            self._settle()
            cpu0 = children_cpu()
            started = time.monotonic()
            procs = [
                subprocess.Popen(
                    self._dfget(home, out, node, client),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
                for home, out in zip(homes, outs, strict=True)
            ]
            results, ends = self._wait_all(procs, started, client)
            for result in results:
                if not result.get("success"):
                    print(f"a node failed: {json.dumps(result)[-1500:]}", file=sys.stderr)
            makespan = max(ends) - started
            requests = supernode_requests(node) / n if self.args.supernode != "go" else 0.0
            dfget_cpu = children_cpu() - cpu0
            servers = [peer_server_pid(home) for home in homes]
            server_cpu = sum(process_cpu(pid) for pid in servers if pid)
            row = Row(
                "together" if client == "ours" else "together, Go dfget", n, pattern, makespan,
                sum(ends) / n - started, max(ends) - started,
                self.origin.stats.body_bytes, len(self.origin.stats.requests),
                _by_kind(results),
                {"dfget": dfget_cpu, "servers": server_cpu, "supernode": process_cpu(sn_proc.pid)},
                all(r.get("success") for r in results) and self._same(outs), requests,
            )  # fmt: skip
            return row

    def _wait_all(
        self, procs: list[subprocess.Popen[bytes]], started: float, client: str = "ours"
    ) -> tuple[list[dict[str, Any]], list[float]]:
        ends = [0.0] * len(procs)
        results: list[dict[str, Any]] = [{} for _ in procs]
        pending = set(range(len(procs)))
        deadline = started + PULL_TIMEOUT
        while pending and time.monotonic() < deadline:
            for index in list(pending):
                if procs[index].poll() is not None:
                    ends[index] = time.monotonic()
                    out, err = procs[index].communicate()
                    if client == "go":  # no --json: its exit code is all it says
                        results[index] = {"success": procs[index].returncode == 0}
                        pending.discard(index)
                        continue
                    try:
                        results[index] = json.loads(out.decode().strip().splitlines()[-1])
                    except (ValueError, IndexError):
                        results[index] = {"success": False, "error": err.decode()[-500:]}
                    pending.discard(index)
            time.sleep(0.02)
        for index in pending:
            procs[index].kill()
            procs[index].wait()
            ends[index] = time.monotonic()
            results[index] = {"success": False, "error": "timed out"}
        return results, ends

    def _same(self, outs: list[Path]) -> bool:
        return all(common.same_bytes(self.data, out) for out in outs)

    def curl_together(self, n: int) -> Row:
        outs = [self.root / f"curl{i}.bin" for i in range(n)]
        common.fresh(*outs, prime=self._prime(n))
        self._settle()
        cpu0 = children_cpu()
        started = time.monotonic()
        procs = [subprocess.Popen(["curl", "-s", "-f", "-o", str(out), self.url]) for out in outs]
        ends = []
        for proc in procs:
            proc.wait(timeout=PULL_TIMEOUT)
            ends.append(time.monotonic())
        ok = all(p.returncode == 0 for p in procs) and self._same(outs)
        row = Row(
            "curl", n, "direct", max(ends) - started, sum(ends) / n - started,
            max(ends) - started, self.origin.stats.body_bytes,
            len(self.origin.stats.requests), {"source": self.origin.stats.body_bytes},
            {"curl": children_cpu() - cpu0}, ok,
        )  # fmt: skip
        for out in outs:
            out.unlink(missing_ok=True)
        return row

    def staggered(self, pattern: str) -> list[Row]:
        """Node 2 after node 1 finished; node 3 after node 1's peer server expired the file."""
        rows = []
        homes: list[Path] = []
        with self._case(pattern) as (case_root, node, _):
            for index in (1, 2, 3):
                if index == 3:
                    self._wait_expired(homes[0])
                home, out = case_root / f"n{index}", case_root / f"n{index}.bin"
                homes.append(home)
                common.fresh(out, prime=self._prime(1))
                self._settle()
                started = time.monotonic()
                proc = subprocess.run(
                    self._dfget(home, out, node), capture_output=True, timeout=PULL_TIMEOUT
                )
                wall = time.monotonic() - started
                result = json.loads(proc.stdout.decode().strip().splitlines()[-1])
                rows.append(
                    Row(
                        f"staggered node {index}",
                        1,
                        pattern,
                        wall,
                        wall,
                        wall,
                        self.origin.stats.body_bytes,
                        len(self.origin.stats.requests),
                        _by_kind([result]),
                        {},
                        bool(result.get("success")) and common.same_bytes(self.data, out),
                    )  # fmt: skip
                )
            return rows

    def joining(self, pattern: str, client: str) -> list[Row]:
        """Node 2 joins when node 1 has half the blob from the origin; node 3 after node 1
        finished. Each node tags its origin requests (a header dfget passes to the source in
        the source pattern), so the rows count only that node's requests and bytes."""
        label = "" if client == "ours" else ", Go dfget"
        with self._case(pattern) as (case_root, node, _):
            homes = [case_root / f"n{index}" for index in (1, 2, 3)]
            outs = [case_root / f"n{index}.bin" for index in (1, 2, 3)]

            def start(index: int) -> subprocess.Popen[bytes]:
                argv = self._dfget(homes[index - 1], outs[index - 1], node, client)
                argv += ["--header", f"{NODE_HEADER}: {index}"]
                return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

            common.fresh(*outs, prime=self._prime(3))
            self._settle()
            first = start(1)
            deadline = time.monotonic() + PULL_TIMEOUT
            while self.origin.stats.body_bytes < self.size // 2 and first.poll() is None:
                if time.monotonic() > deadline:
                    raise RuntimeError("node 1 never got half the blob")
                time.sleep(0.01)
            rows = [self._joined(start(2), "joins halfway" + label, pattern, 2, outs[1])]
            first.communicate(timeout=PULL_TIMEOUT)
            both = Row(
                "nodes 1 and 2 together" + label, 2, pattern, 0.0, 0.0, 0.0,
                self.origin.stats.body_bytes, len(self.origin.stats.requests),
            )  # fmt: skip
            rows.append(both)
            rows.append(self._joined(start(3), "joins after node 1" + label, pattern, 3, outs[2]))
            return rows

    def _joined(
        self, proc: subprocess.Popen[bytes], case: str, pattern: str, index: int, out: Path
    ) -> Row:
        started = time.monotonic()
        _, err = proc.communicate(timeout=PULL_TIMEOUT)
        wall = time.monotonic() - started
        mine = [
            r for r in list(self.origin.stats.requests)
            if {k.lower(): v for k, v in r.headers.items()}.get(NODE_HEADER.lower()) == str(index)
        ]  # fmt: skip
        nbytes = sum(_range_length(r.range, self.size) for r in mine)
        ok = proc.returncode == 0 and common.same_bytes(self.data, out)
        if not ok:
            print(err.decode(errors="replace")[-1000:], file=sys.stderr)
        return Row(case, 1, pattern, wall, wall, wall, nbytes, len(mine), {}, {}, ok)

    def _wait_expired(self, home: Path) -> None:
        """Until node 1's peer server dropped its file (expiry plus a GC pass)."""
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if not list((home / "data").glob("*.service")):
                return
            time.sleep(0.25)
        raise RuntimeError("node 1's peer server never expired its file")


def supernode_requests(node: str) -> float:
    """dfget clients' requests so far, from our supernode's /metrics."""
    import httpx

    text = httpx.get(f"http://{node}/metrics", timeout=10).text
    prefix = "dragonfly_supernode_api_requests_total{"
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
    )


def _range_length(header: str | None, size: int) -> int:
    """Bytes a request asked for: a ``bytes=a-b`` range, else the whole blob."""
    if not header or not header.startswith("bytes="):
        return size
    first, _, last = header.removeprefix("bytes=").partition("-")
    end = min(int(last), size - 1) if last else size - 1
    return end - int(first) + 1


def _by_kind(results: list[dict[str, Any]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for result in results:
        for kind, count in (result.get("bytes") or {}).items():
            total[kind] = total.get(kind, 0) + count
    return total


def report(rows: list[Row], size: int, cap: float) -> str:
    ideal = size / cap
    lines = [
        f"blob {size / common.MiB:.0f} MiB, origin capped at {cap / MB:.0f} MB/s "
        f"(one copy: {ideal:.1f} s); times in seconds",
        "",
        "| case | N | pattern | makespan | mean node | max node | origin bytes / blob "
        "| origin requests | from peers | from CDN | from source | CPU s "
        "| supernode requests / node | ok |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        kinds = row.by_kind

        def mib(kind: str, kinds: dict[str, int] = kinds) -> str:
            return f"{kinds.get(kind, 0) / common.MiB:.0f} MiB"

        lines.append(
            f"| {row.case} | {row.nodes} | {row.pattern} | {row.makespan:.1f} "
            f"| {row.mean_node:.1f} | {row.max_node:.1f} | {row.origin_bytes / size:.2f} "
            f"| {row.origin_requests} | {mib('peer')} | {mib('cdn')} | {mib('source')} "
            f"| {sum(row.cpu.values()):.1f} | {row.supernode_requests or '-':.4} "
            f"| {'yes' if row.ok else 'NO'} |"
        )
    together = [r for r in rows if r.case == "together"]
    worst = max((r.origin_bytes / size for r in together), default=0.0)
    lines += ["", f"origin bytes / blob, worst P2P case: {worst:.2f} (bar 1.05)"]
    for row in together:
        if row.nodes == 8:
            lines.append(
                f"makespan at N=8 ({row.pattern}): {row.makespan:.1f} s = "
                f"{row.makespan / ideal:.2f} x one copy (bar 1.5)"
            )
    cpus = os.cpu_count() or 1
    for row in together:
        busy = sum(row.cpu.values()) / (row.makespan * cpus)
        if busy > 0.85:
            lines.append(
                f"N={row.nodes} {row.pattern}: CPU {busy:.0%} of {cpus} cores busy "
                "- the machine, not the network, bounds this case"
            )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> str:
    common.require_tools()
    common.byte_compile()
    size = args.size_mib * common.MiB
    cap = args.cap_mbps * MB
    root = Path(tempfile.mkdtemp(prefix="dfget-bench-fanout-", dir=args.dir))
    origin = Origin(root / "origin", total_rate=int(cap)).start()
    try:
        data = root / "blob.bin"
        print(f"creating {args.size_mib} MiB of random data ...", file=sys.stderr)
        common.make_random_file(data, size)
        url = origin.add("/blob.bin", data)
        bench = Fanout(root, origin, url, data, args)
        rows: list[Row] = []
        for n in args.nodes:
            for pattern in args.patterns:
                for client in args.clients:
                    rows.append(bench.pull_together(n, pattern, client))
                    _progress(rows[-1])
            if args.curl:
                rows.append(bench.curl_together(n))
                _progress(rows[-1])
        if args.joins:
            for pattern in args.patterns:
                for client in args.clients:
                    for row in bench.joining(pattern, client):
                        rows.append(row)
                        _progress(row)
        if args.staggered:
            for pattern in args.patterns:
                for row in bench.staggered(pattern):
                    rows.append(row)
                    _progress(row)
        if args.json:
            args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
        return report(rows, size, cap)
    finally:
        origin.stop()
        shutil.rmtree(root, ignore_errors=True)


def _progress(row: Row) -> None:
    print(
        f"{row.case} N={row.nodes} {row.pattern}: makespan {row.makespan:.1f} s, "
        f"origin {row.origin_bytes / common.MiB:.0f} MiB, ok={row.ok}",
        file=sys.stderr,
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument(
        "--nodes", type=lambda t: [int(x) for x in t.split(",")], default=[1, 2, 4, 8, 16]
    )
    parser.add_argument("--patterns", type=lambda t: t.split(","), default=["local", "source"])
    parser.add_argument("--cap-mbps", type=float, default=50.0, help="origin egress cap, MB/s")
    parser.add_argument("--expiretime", default="10s", help="peer servers' --expiretime")
    parser.add_argument("--no-curl", dest="curl", action="store_false")
    parser.add_argument("--no-staggered", dest="staggered", action="store_false")
    parser.add_argument(
        "--joins", action="store_true", help="also: a node joining halfway, one after node 1"
    )
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument("--supernode", choices=["ours", "v1", "go"], default="ours")
    parser.add_argument("--clients", type=lambda t: t.split(","), default=["ours"], help="ours,go")
    parser.add_argument("--go-supernode", default=os.environ.get("DFGET_BENCH_GO_SUPERNODE"))
    parser.add_argument("--go-dfget", default=os.environ.get("DFGET_BENCH_GO_DFGET"))
    parser.add_argument("--dir", type=Path, help="where to put the data (default: $TMPDIR)")
    common.add_prime_option(parser)
    args = parser.parse_args()
    if args.supernode == "go" and not args.go_supernode:
        parser.error("--supernode go needs --go-supernode PATH (or DFGET_BENCH_GO_SUPERNODE)")
    if "go" in args.clients and not args.go_dfget:
        parser.error("--clients go needs --go-dfget PATH (or DFGET_BENCH_GO_DFGET)")
    common.print_report(lambda: run(args))


if __name__ == "__main__":
    main()
