"""Teardown (:func:`destroy`): stop every server batuta started for a manifest (and its
gateway, first) and remove its routing table.

The manifest need not be valid (a broken edit must not keep servers running): only its
path is used, to find the state directory and to tell this manifest's servers from those
another manifest sharing the directory started. Runs under the apply lock, and returns
once the supervisor, left with nothing to run, has exited.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from batuta._util.paths import manifest_path, same_manifest, state_dir_for
from batuta.plan.diff import owned_by
from batuta.plan.observe import read_current_table
from batuta.routing.table import table_path
from batuta.runtime.gateway import GATEWAY, SHOWN
from batuta.runtime.state import apply_lock

if TYPE_CHECKING:
    from batuta.runtime import Runtime

Echo = Callable[[str], None]


@dataclass(frozen=True)
class DestroyResult:
    """What :func:`destroy` did. ``started`` is False when batuta never ran anything for
    the manifest (there is no state directory)."""

    destroyed: tuple[str, ...] = ()
    removed_table: bool = False
    started: bool = True


def destroy(
    manifest: str | os.PathLike[str] | None = None, *, echo: Echo | None = None
) -> DestroyResult:
    """Stop this manifest's servers (``echo`` hears of each before it stops) and remove
    the routing table it wrote; other manifests' servers keep running."""
    from batuta.runtime import Runtime

    say = echo or (lambda _line: None)
    file = None if manifest is None else os.fspath(manifest)
    path, state_dir = manifest_path(file)[0], state_dir_for(file)
    if not state_dir.is_dir():
        return DestroyResult(started=False)
    runtime = Runtime(state_dir)
    with apply_lock(state_dir):
        supervisor = runtime.supervisor_pid()
        statuses = runtime.status()
        names = sorted(n for n, s in statuses.items() if owned_by(s, str(path)))
        if GATEWAY in names:
            # First, and alone: it drains the answers in flight, which need the servers.
            pid = statuses[GATEWAY].pid
            say(f"{SHOWN}: Destroying..." + (f" [pid {pid}]" if pid else ""))
            runtime.stop(GATEWAY)
        servers = [n for n in names if n != GATEWAY]
        for name in servers:
            pid = statuses[name].pid
            say(f"server.{name}: Destroying..." + (f" [pid {pid}]" if pid else ""))
        if servers:
            with ThreadPoolExecutor(max_workers=min(8, len(servers))) as pool:
                list(pool.map(runtime.stop, servers))
        table, raw, _ = read_current_table(state_dir)
        removed_table = raw is not None and (table is None or same_manifest(table.manifest, path))
        if removed_table:
            table_path(state_dir).unlink(missing_ok=True)
        if not runtime.status():
            wait_supervisor_gone(runtime, supervisor)
    return DestroyResult(destroyed=tuple(names), removed_table=removed_table)


def gone(pid: int | None) -> bool:
    """Whether process ``pid`` has ended (a zombie has: only its exit status is left)."""
    import psutil

    if pid is None:
        return True
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def wait_supervisor_gone(runtime: Runtime, pid: int | None, timeout: float = 10.0) -> None:
    """The supervisor exits once it has nothing left to run: wait until its process ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (runtime.supervisor_pid() is None and gone(pid)):
        time.sleep(0.02)
