"""Benchmark: `dfget --pattern source` against curl, both fetching one file from nginx on loopback.

Run from the repository root:

    python tests/bench/source.py              # 1 GiB, 5 runs each
    python tests/bench/source.py --size-mib 256 --runs 3

Each run starts from a comparable page-cache state: the previous output is removed and `sync`
flushes dirty pages before the timed command. Wall time and peak RSS come from
`/usr/bin/time -f "%e %M"` (Debian package `time`). nginx (Debian `nginx-light` or `nginx`) serves
with `sendfile on`; without it the test origin (tests/origin.py) stands in, which is slower and
makes the comparison less meaningful. Prints a markdown table of medians.

Not a pytest module: nothing here is named test_*.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: make `tests` importable
    sys.path.insert(0, str(REPO))

from tests.bench.common import (  # noqa: E402
    DFGET,
    NGINX,
    MiB,
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
def serve_with_nginx(root: Path, docroot: Path) -> Iterator[str]:
    with nginx(root, docroot) as port:
        yield f"http://127.0.0.1:{port}"


@contextmanager
def serve_with_origin(root: Path, data: Path) -> Iterator[str]:
    from tests.origin import Origin

    origin = Origin(root / "origin").start()
    try:
        origin.add("/" + data.name, data)
        yield origin.base
    finally:
        origin.stop()


def run_benchmark(size_mib: int, runs: int, workdir: Path | None, prime: bool = True) -> str:
    require_tools()
    byte_compile()
    with random_docroot(size_mib, workdir) as (root, data):
        use_nginx = Path(NGINX).exists()
        server = serve_with_nginx(root, data.parent) if use_nginx else serve_with_origin(root, data)
        with server as base:
            url = f"{base}/{data.name}"
            out = root / "out.bin"
            home = root / "home"
            commands = {
                "dfget": [
                    *DFGET,
                    *("--pattern", "source", "-q", "--home", str(home)),
                    *("-u", url, "-o", str(out)),
                ],
                "curl": ["curl", "-s", "-f", "-o", str(out), url],
            }
            samples: dict[str, list[Sample]] = {name: [] for name in commands}
            for run in range(runs):
                for name, command in commands.items():
                    fresh(out, prime=2 * size_mib * MiB if prime else 0)
                    sample = timed(command, root)
                    samples[name].append(sample)
                    log_run(run, runs, name, sample)
                    if run == 0 and not same_bytes(data, out):
                        raise SystemExit(f"{name} wrote different bytes than the source")
            fresh(out)
            version = [timed([*DFGET, "--version"], root).wall for _ in range(10)]
        return report(size_mib, runs, use_nginx, samples, version)


def report(
    size_mib: int,
    runs: int,
    nginx: bool,
    samples: dict[str, list[Sample]],
    version: list[float],
) -> str:
    server = "nginx (sendfile on)" if nginx else "tests/origin.py (nginx not found)"
    table, walls = median_table(size_mib, samples)
    lines = [
        f"{size_mib} MiB from {server} on 127.0.0.1, median of {runs} runs each",
        "",
        *table,
        "",
        f"dfget/curl wall ratio: {ratio(walls, 'dfget'):.2f}",
        f"dfget peak RSS (max of runs): {max(s.rss_kib for s in samples['dfget']) / 1024:.1f} MiB",
        f"`dfget --version` median wall over {len(version)} runs: {median(version):.3f} s",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    args = arguments(__doc__).parse_args(argv)
    print_report(lambda: run_benchmark(args.size_mib, args.runs, args.dir, args.prime))


if __name__ == "__main__":
    main()
