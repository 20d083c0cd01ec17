"""What the benchmark scripts share: nginx as an origin, random data, timed runs, comparisons.

nginx runs in the foreground (`daemon off`) from a temp config whose pid file, logs and temp
directories all live inside the benchmark's temp root, on a free 127.0.0.1 port, with
`sendfile on`. Commands are timed by `/usr/bin/time -f "%e %M"` (Debian package `time`), which
gives wall seconds and peak RSS in KiB.

Not a pytest module: nothing here is named test_*.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

from tests.support import peers  # noqa: E402
from tests.support.helpers import (  # noqa: E402
    DFGET,
    V1_SUPERNODE,
    free_port,
    stop_process,
    wait_port,
)

__all__ = [
    "DFGET",
    "V1_SUPERNODE",
    "MiB",
    "NGINX",
    "REPO",
    "TIME",
    "Sample",
    "arguments",
    "byte_compile",
    "free_port",
    "fresh",
    "log_run",
    "make_random_file",
    "median",
    "median_table",
    "nginx",
    "random_docroot",
    "ratio",
    "require_tools",
    "same_bytes",
    "prime_memory",
    "print_report",
    "stop_process",
    "timed",
    "wait_port",
]

NGINX = "/usr/sbin/nginx"
TIME = "/usr/bin/time"
MiB = 1024 * 1024

NGINX_CONF = """\
daemon off;
worker_processes {workers};
pid {root}/nginx.pid;
error_log {root}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {root}/access.log;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    default_type application/octet-stream;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {docroot};
    }}
}}
"""


@dataclass
class Sample:
    wall: float  # seconds
    rss_kib: int
    stdout: bytes = b""  # only when timed(..., capture=True)


def make_random_file(path: Path, size: int, *, cache: bool = False) -> None:
    """Incompressible bytes, written in 16 MiB blocks; ``cache`` reads them back into the page
    cache so that a benchmark measures serving, not the disk."""
    block = 16 * MiB
    with open(path, "wb") as fh:
        for offset in range(0, size, block):
            fh.write(os.urandom(min(block, size - offset)))
    if cache:
        with open(path, "rb") as fh:
            while fh.read(block):
                pass


@contextmanager
def nginx(
    root: Path, docroot: Path, workers: int | str = 1, timeout: float = 10.0
) -> Iterator[int]:
    """Serve ``docroot`` with Debian's nginx on a free 127.0.0.1 port; yields the port.

    ``root`` holds the config, pid file, logs and temp directories; it and ``docroot`` must be
    readable by nginx's unprivileged workers (mode 0755).
    """
    port = free_port()
    conf = root / "nginx.conf"
    conf.write_text(NGINX_CONF.format(workers=workers, root=root, port=port, docroot=docroot))
    proc = subprocess.Popen(
        [NGINX, "-p", str(root), "-e", str(root / "nginx-error.log"), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        try:
            wait_port(port, timeout=timeout)
        except TimeoutError:
            proc.terminate()
            _, err = proc.communicate(timeout=timeout)
            raise RuntimeError(f"nginx did not start: {err.decode(errors='replace')}") from None
        yield port
    finally:
        stop_process(proc, timeout=timeout)  # SIGTERM: nginx's fast shutdown


def timed(
    command: Sequence[str], scratch: Path, *, capture: bool = False, timeout: float = 3600.0
) -> Sample:
    """Run ``command`` under /usr/bin/time; its failure aborts.

    Its stdout goes nowhere unless ``capture``; the report goes to a file in ``scratch`` so it
    never mixes with the command's own output.
    """
    report = scratch / "time.out"
    result = subprocess.run(
        [TIME, "-f", "%e %M", "-o", str(report), *command],
        stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=REPO,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed ({result.returncode}): {result.stderr.decode()[-2000:]}"
            + (f"\nstdout: {result.stdout.decode(errors='replace')[-2000:]}" if capture else "")
        )
    wall, rss = report.read_text().split()[-2:]
    return Sample(float(wall), int(rss), result.stdout or b"")


def fresh(*outputs: Path, prime: int = 0) -> None:
    """Comparable starting point: no previous output, no dirty pages waiting for writeback and,
    with ``prime`` bytes, free memory that was in use a moment ago (see prime_memory)."""
    for output in outputs:
        output.unlink(missing_ok=True)
    subprocess.run(["sync"], check=True, timeout=600)
    if prime:
        prime_memory(outputs[0].parent if outputs else Path(tempfile.gettempdir()), prime)


def prime_memory(directory: Path, nbytes: int) -> None:
    """Write ``nbytes`` to a scratch file and delete it, just before a timed run.

    On this VM the guest hands free memory back to the host a few seconds after it was freed
    (virtio-balloon free page reporting); page cache written in large chunks (2 MiB folios) into
    such memory costs ~2.3 s of system time per GiB instead of ~0.2 s, and whichever tool runs
    after a pause pays it (curl's 16 KiB writes mostly dodge it, dfget's piece-sized writes do
    not). Writing and freeing a scratch file first gives every tool the same recently used
    memory, so runs compare the tools, not the hypervisor. Turned off by --no-prime.
    """
    block = bytes(4 * MiB)
    scratch = directory / ".prime-memory"
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(0, nbytes, len(block)):
            os.write(fd, block)
    finally:
        os.close(fd)
        scratch.unlink()


def same_bytes(a: Path, b: Path) -> bool:
    return subprocess.run(["cmp", "-s", str(a), str(b)], timeout=600).returncode == 0


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def require_tools(*extra: tuple[str, str]) -> None:
    """Exit with an install hint when /usr/bin/time, curl or an ``extra`` (tool, Debian
    package) is missing."""
    for tool, package in ((TIME, "time"), ("curl", "curl"), *extra):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: apt-get install {package}")


def byte_compile() -> None:
    """Write the bytecode of the dfget package, as `pip install .` does.

    The benchmarks run dfget from this checkout; where PYTHONDONTWRITEBYTECODE is set (as on
    the project's machine) nothing would ever cache it and every dfget process would compile
    its ~40 modules again: ~37 ms per start that an installed dfget does not pay.
    """
    import compileall

    if not compileall.compile_dir(REPO / "dfget", quiet=1):
        raise SystemExit("cannot byte-compile the dfget package")


@contextmanager
def random_docroot(
    size_mib: int, workdir: Path | None, prefix: str = "dfget-bench-"
) -> Iterator[tuple[Path, Path]]:
    """A temp root with ``www/blob.bin`` of random bytes; yields (root, blob), removes it all."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=workdir))
    try:
        root.chmod(0o755)  # nginx workers run as an unprivileged user
        docroot = root / "www"
        docroot.mkdir(mode=0o755)
        data = docroot / "blob.bin"
        print(f"creating {size_mib} MiB of random data in {data} ...", file=sys.stderr)
        make_random_file(data, size_mib * MiB)
        data.chmod(0o644)
        yield root, data
    finally:
        shutil.rmtree(root, ignore_errors=True)


def log_run(run: int, runs: int, name: str, sample: Sample) -> None:
    print(
        f"run {run + 1}/{runs} {name}: {sample.wall:.2f} s, {sample.rss_kib / 1024:.1f} MiB RSS",
        file=sys.stderr,
        flush=True,
    )


def median_table(
    size_mib: int, samples: dict[str, list[Sample]]
) -> tuple[list[str], dict[str, float]]:
    """A markdown table of each tool's median wall, rate and peak RSS; and the median walls."""
    lines = ["| tool | wall (s) | MiB/s | peak RSS (MiB) |", "|---|---:|---:|---:|"]
    walls = {}
    for name, values in samples.items():
        wall = median([s.wall for s in values])
        rss = median([s.rss_kib for s in values]) / 1024
        walls[name] = wall
        rate = size_mib / wall if wall else float("inf")
        lines.append(f"| {name} | {wall:.2f} | {rate:.0f} | {rss:.1f} |")
    return lines, walls


def ratio(walls: dict[str, float], tool: str, reference: str = "curl") -> float:
    return walls[tool] / walls[reference] if walls[reference] else float("inf")


def arguments(doc: str) -> argparse.ArgumentParser:
    """The options every timed-run benchmark takes: --size-mib, --runs, --dir."""
    parser = argparse.ArgumentParser(description=doc.split("\n", 1)[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="file size (default 1024)")
    parser.add_argument("--runs", type=int, default=5, help="runs per tool (default 5)")
    parser.add_argument("--dir", type=Path, help="where to put the data (default: $TMPDIR)")
    add_prime_option(parser)
    return parser


def add_prime_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-prime",
        dest="prime",
        action="store_false",
        help="do not write and free a scratch file before each timed run (see prime_memory)",
    )


def print_report(benchmark: Callable[[], str]) -> None:
    """Print the report ``benchmark`` returns; how long it took goes to stderr."""
    started = time.monotonic()
    print(benchmark())
    print(f"(benchmark took {time.monotonic() - started:.0f} s)", file=sys.stderr)


STOP_TIMEOUT = 10.0  # a process to exit after SIGTERM (then SIGKILL), seconds


def start_supernode(
    home: Path, *extra: str, command: Sequence[str] = (*DFGET, "supernode")
) -> tuple[subprocess.Popen[bytes], str]:
    """`dfget supernode` (or ``command``, which takes the same options) on free 127.0.0.1
    ports, logging to <home>/supernode.log; returns the process and its --node address once
    both ports accept connections."""
    port, download_port = free_port(), free_port()
    home.mkdir(parents=True)
    with open(home / "supernode.log", "wb") as log:
        proc = subprocess.Popen(
            [
                *command,
                "--port",
                str(port),
                "--download-port",
                str(download_port),
                "--listen-ip",
                "127.0.0.1",
                "--advertise-ip",
                "127.0.0.1",
                "--home",
                str(home),
                *extra,
            ],  # fmt: skip
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    return proc, _supernode_ready(proc, home, port, download_port)


def _supernode_ready(
    proc: subprocess.Popen[bytes], home: Path, port: int, download_port: int
) -> str:
    for each in (port, download_port):
        try:
            wait_port(each, timeout=20)
        except TimeoutError:
            stop_process(proc)
            text = (home / "supernode.log").read_text(errors="replace")
            raise RuntimeError(f"supernode did not start: {text[-2000:]}") from None
    return f"127.0.0.1:{port}"


def start_go_supernode(
    home: Path, binary: str, pattern: str
) -> tuple[subprocess.Popen[bytes], str, Callable[[], None]]:
    """A Dragonfly 1.0.6 Go supernode binary (built elsewhere, never part of this repository)
    with its home in ``home``; in the local pattern its CDN directory is served on the download
    port from this process (v1 leaves that to an nginx). Returns the process, its --node
    address and how to stop the file server."""
    import threading

    from dfget.net.server import make_server
    from dfget.supernode.fileserver import make_file_handler

    port, download_port = free_port(), free_port()
    (home / "repo").mkdir(parents=True)
    files = make_server("127.0.0.1", download_port, make_file_handler(home / "repo"))
    threading.Thread(target=files.serve_forever, args=(0.1,), daemon=True).start()

    def stop_files() -> None:
        files.shutdown()
        files.server_close()

    with open(home / "supernode.log", "wb") as log:
        proc = subprocess.Popen(
            [
                binary,
                "--home-dir",
                str(home),
                "--port",
                str(port),
                "--download-port",
                str(download_port),
                "--advertise-ip",
                "127.0.0.1",
                "--cdn-pattern",
                pattern,
                "--fail-access-interval",
                "3s",
            ],  # fmt: skip
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        return proc, _supernode_ready(proc, home, port, download_port), stop_files
    except RuntimeError:
        stop_files()
        raise


def peer_address(home: Path) -> str:
    meta = json.loads((home / "meta" / "host.meta").read_text())
    return f"127.0.0.1:{meta['servicePort']}"


def stop_peer_server(home: Path) -> None:
    """Stop the peer server of ``home``: a bench does not go on while it still serves."""
    if not peers.stop_peer_server(home, STOP_TIMEOUT):
        raise RuntimeError(f"the peer server of {home} did not exit on SIGTERM")
