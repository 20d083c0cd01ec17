"""What a peer server serves, for operators: ``<meta dir>/cache.json`` and ``dfget cache``.

The server rewrites the file (atomically) after every collection pass and every finished
download: the files it serves in the order they would be dropped (least recently used first),
their sizes and last uses, the downloads still running, and the budget it keeps. ``dfget
cache`` prints it; the file is trusted only if the server that wrote it still runs.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from dfget.units import format_duration, human_bytes
from dfget.uploader.cache import Limits
from dfget.uploader.store import TaskStore

STATUS_FILE = "cache.json"


def write(meta_dir: Path, store: TaskStore, limits: Limits | None, port: int) -> None:
    now = store.clock()
    finished, running = [], []
    for task in store.tasks():
        try:
            size = os.stat(task.path, follow_symlinks=False).st_size
        except OSError:
            continue
        entry = {"name": task.name, "size": size, "last_use": round(task.last_access, 3)}
        if task.finished:
            finished.append({**entry, "task_id": task.task_id, "supernode": task.supernode})
        else:
            running.append(entry)
    finished.sort(key=lambda entry: (entry["last_use"], entry["name"]))
    status: dict[str, Any] = {
        "pid": os.getpid(),
        "port": port,
        "written": round(now, 3),
        "expiretime": store.expiretime or None,
        "budget": limits.budget if limits else None,
        "min_free": limits.min_free if limits else None,
        "free": limits.free if limits else None,
        "used": sum(entry["size"] for entry in finished),
        "served": finished,
        "downloading": running,
    }
    path = meta_dir / STATUS_FILE
    temp = meta_dir / f".{STATUS_FILE}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        temp.write_text(json.dumps(status, indent=1) + "\n")
        os.chmod(temp, 0o600)
        os.replace(temp, path)
    except OSError:
        temp.unlink(missing_ok=True)
        raise


def read(meta_dir: Path) -> dict[str, Any] | None:
    """The status of the running server of ``meta_dir``; None when no server runs there."""
    try:
        status = json.loads((meta_dir / STATUS_FILE).read_text())
        pid = int(status["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return status if _server_runs(pid) else None


def render(status: dict[str, Any] | None, kept: int = 0, now: float | None = None) -> str:
    """The status as an operator reads it; ``kept``: recorded files on disk (when no server
    runs, the next one proves and serves them again)."""
    if status is None:
        line = "no peer server is running for this home: nothing is served"
        if kept:
            line += f"; {kept} verified file(s) are kept for the next one to prove and serve"
        return line
    now = time.time() if now is None else now
    lines = [
        f"peer server pid {status['pid']} on port {status['port']}: serving "
        f"{len(status['served'])} file(s), {human_bytes(status['used'])} of a "
        f"{human_bytes(status['budget'] or 0)} budget; {human_bytes(status['free'] or 0)} free "
        f"on disk, keeping {human_bytes(status['min_free'] or 0)}"
    ]
    if status.get("expiretime"):
        lines.append(f"files also expire {format_duration(status['expiretime'])} after last use")
    if status["served"]:
        lines.append(f"{'SIZE':>10}  {'LAST USE':>12}  NAME (dropped first at the top)")
    for index, entry in enumerate(status["served"]):
        ago = format_duration(round(max(now - entry["last_use"], 0.0)))
        marker = "  <- dropped next" if index == 0 else ""
        lines.append(
            f"{human_bytes(entry['size']):>10}  {ago + ' ago':>12}  {entry['name']}{marker}"
        )
    for entry in status["downloading"]:
        lines.append(f"{human_bytes(entry['size']):>10}  {'downloading':>12}  {entry['name']}")
    return "\n".join(lines)


def _server_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"
