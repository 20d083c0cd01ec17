"""Benchmark: `dfget --pattern source` against curl, fetching one file from nginx and from a
plain Python origin on loopback.

Run from the repository root:

    python -m tests.bench.source              # 1 GiB, 5 runs each, both servers
    python -m tests.bench.source --size-mib 256 --runs 5 --servers nginx,python

Each run starts from a comparable page-cache state: the previous output is removed and `sync`
flushes dirty pages before the timed command. Wall time and peak RSS come from
`/usr/bin/time -f "%e %M"` (Debian package `time`). nginx (Debian `nginx-light` or `nginx`) serves
with `sendfile on`; `python` is the test origin (tests/support/origin.py, a thread per
connection).
For each server it prints a markdown table of medians, the dfget/curl ratio and how many
requests each dfget run made (nginx's access log, the origin's own count): a whole-file
download must be one request, as with curl.

Not a pytest module: nothing here is named test_*.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

from tests.bench.common import (  # noqa: E402
    DFGET,
    NGINX,
    Sample,
    arguments,
    byte_compile,
    fresh,
    log_run,
    median,
    median_table,
    nginx,
    print_report,
    random_docroot,
    ratio,
    require_tools,
    same_bytes,
    timed,
)


@contextmanager
def serve_with_nginx(root: Path, docroot: Path) -> Iterator[tuple[str, Callable[[], int]]]:
    """nginx on a free port; yields its base URL and a count of the requests it logged."""
    log = root / "access.log"

    def count() -> int:
        return len(log.read_bytes().splitlines()) if log.exists() else 0

    with nginx(root, docroot) as port:
        yield f"http://127.0.0.1:{port}", count


@contextmanager
def serve_with_origin(root: Path, data: Path) -> Iterator[tuple[str, Callable[[], int]]]:
    """tests/support/origin.py; yields its base URL and a count of the requests it got."""
    from tests.support.origin import Origin

    origin = Origin(root / "origin").start()
    try:
        origin.add("/" + data.name, data)
        yield origin.base, lambda: len(origin.stats.requests)
    finally:
        origin.stop()


def run_benchmark(
    size_mib: int, runs: int, workdir: Path | None, servers: list[str], prime: bool = True
) -> str:
    require_tools()
    byte_compile()
    reports = []
    with random_docroot(size_mib, workdir) as (root, data):
        for server_name in servers:
            if server_name == "nginx":
                server = serve_with_nginx(root, data.parent)
            else:
                server = serve_with_origin(root, data)
            with server as (base, count):
                samples, requests = _timed_runs(
                    root, data, f"{base}/{data.name}", runs, prime, count
                )
                reports.append(report(size_mib, runs, server_name, samples, requests))
        fresh(root / "out.bin")
        version = [timed([*DFGET, "--version"], root).wall for _ in range(10)]
    reports.append(
        f"`dfget --version` median wall over {len(version)} runs: {median(version):.3f} s"
    )
    return "\n\n".join(reports)


def _timed_runs(
    root: Path, data: Path, url: str, runs: int, prime: bool, count: Callable[[], int]
) -> tuple[dict[str, list[Sample]], list[int]]:
    out = root / "out.bin"
    commands = {
        "dfget": [
            *DFGET,
            *("--pattern", "source", "-q", "--home", str(root / "home")),
            *("-u", url, "-o", str(out)),
        ],
        "curl": ["curl", "-s", "-f", "-o", str(out), url],
    }
    samples: dict[str, list[Sample]] = {name: [] for name in commands}
    requests: list[int] = []
    for run in range(runs):
        for name, command in commands.items():
            fresh(out, prime=2 * data.stat().st_size if prime else 0)
            before = count()
            sample = timed(command, root)
            if name == "dfget":
                requests.append(count() - before)
            samples[name].append(sample)
            log_run(run, runs, name, sample)
            if run == 0 and not same_bytes(data, out):
                raise SystemExit(f"{name} wrote different bytes than the source")
    return samples, requests


def report(
    size_mib: int,
    runs: int,
    server: str,
    samples: dict[str, list[Sample]],
    requests: list[int],
) -> str:
    label = "nginx (sendfile on)" if server == "nginx" else "tests/support/origin.py"
    table, walls = median_table(size_mib, samples)
    lines = [
        f"{size_mib} MiB from {label} on 127.0.0.1, median of {runs} runs each",
        "",
        *table,
        "",
        f"dfget/curl wall ratio: {ratio(walls, 'dfget'):.2f}",
        f"requests per dfget run: {', '.join(map(str, requests))}",
        f"dfget peak RSS (max of runs): {max(s.rss_kib for s in samples['dfget']) / 1024:.1f} MiB",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = arguments(__doc__)
    parser.add_argument(
        "--servers",
        type=lambda text: text.split(","),
        default=["nginx", "python"] if Path(NGINX).exists() else ["python"],
        help="nginx,python (default: both; python alone without nginx)",
    )
    args = parser.parse_args(argv)
    print_report(
        lambda: run_benchmark(args.size_mib, args.runs, args.dir, args.servers, args.prime)
    )


if __name__ == "__main__":
    main()
