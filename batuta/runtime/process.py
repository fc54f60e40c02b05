"""Server processes: spawn one in its own session, adopt one we started earlier, and
prove ownership before signalling.

Each server leads its own session and process group (``start_new_session``), so a stop
reaches every process the server forked and a Ctrl-C in the user's terminal reaches none.
Ownership is a pid *and* its psutil create time: a pid alone may have been reused by an
unrelated process since we recorded it, and such a process is never signalled.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from batuta.runtime import logs
from batuta.runtime.spec import ServerSpec

# Exit status of a process that was not our child: the kernel told its parent, not us.
UNKNOWN_EXIT = -1000
_CREATE_TIME_SLACK = 0.05  # psutil rounds create times; equal within this many seconds


class Process(Protocol):
    """What the supervisor needs from a running server process."""

    @property
    def pid(self) -> int: ...

    @property
    def create_time(self) -> float | None: ...

    # The exit status once it ended (negative: killed by that signal), else None.
    def poll(self) -> int | None: ...


class PopenProcess:
    """A server the supervisor spawned itself (its child: exit status is known)."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self._create_time = create_time_of(popen.pid)

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def create_time(self) -> float | None:
        return self._create_time

    def poll(self) -> int | None:
        return self._popen.poll()


class AdoptedProcess:
    """A server started by an earlier supervisor (not our child: exit status unknown)."""

    def __init__(self, pid: int, create_time: float) -> None:
        self._pid = pid
        self._create_time = create_time

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def create_time(self) -> float | None:
        return self._create_time

    def poll(self) -> int | None:
        return None if owned(self._pid, self._create_time) else UNKNOWN_EXIT


_ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env_refs(text: str, values: Mapping[str, str]) -> str:
    """Replace ``${env:VAR}`` / ``${env:VAR:-default}`` with the value ``values`` holds.

    State records secrets as references; only the spawned process ever sees the value.
    ``values`` are those the requesting command handed over, never the supervisor's own
    environment.
    """
    if "${env:" not in text:
        return text

    def value(match: re.Match[str]) -> str:
        found = values.get(match.group(1))
        return found if found else (match.group(2) or "")

    return _ENV_REF.sub(value, text)


def env_refs(spec: ServerSpec) -> dict[str, bool]:
    """The variables ``spec``'s env values and argv refer to with ``${env:...}``
    (name -> whether every reference to it gives a default)."""
    out: dict[str, bool] = {}
    for text in (*spec.env.values(), *spec.argv):
        for match in _ENV_REF.finditer(text):
            name = match.group(1)
            out[name] = out.get(name, True) and match.group(2) is not None
    return out


# Set in every server's environment: which state directory, server and generation started
# it. A supervisor killed between spawning a server and saving its pid leaves a record
# without that pid; its successor finds the process by this mark (a session leader
# carrying it is ours: nothing else sets it) instead of leaving it orphaned.
SPAWN_MARK = "BATUTA_SPAWNED_BY"


def spawn_mark(state_dir: Path, name: str, generation: int) -> str:
    """The mark of generation ``generation`` of server ``name`` of ``state_dir``."""
    return f"{spawn_mark_prefix(state_dir, name)}{generation}"


def spawn_mark_prefix(state_dir: Path, name: str) -> str:
    return f"{Path(state_dir).resolve()}|{name}|"


def find_marked(prefix: str) -> list[tuple[int, float, str]]:
    """(pid, create time, mark) of each live session leader whose spawn mark starts with
    ``prefix``: the servers batuta started under it, found without their recorded pid."""
    import psutil

    found: list[tuple[int, float, str]] = []
    for proc in psutil.process_iter(["create_time"]):
        try:
            if os.getsid(proc.pid) != proc.pid or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            mark = proc.environ().get(SPAWN_MARK, "")
        except (psutil.Error, OSError):
            continue
        if mark.startswith(prefix):
            found.append((proc.pid, proc.info["create_time"], mark))
    return found


def spawn(
    spec: ServerSpec, log_path: Path, values: Mapping[str, str], mark: str = ""
) -> PopenProcess:
    """Start ``spec`` in a new session, stdout and stderr appended to ``log_path``.

    ``${env:VAR}`` references are expanded from ``values``; the rest of the environment
    is this process's own, plus ``mark`` (:data:`SPAWN_MARK`) when given.
    """
    env = {**os.environ, **{k: expand_env_refs(v, values) for k, v in spec.env.items()}}
    if mark:
        env[SPAWN_MARK] = mark
    # O_APPEND: the supervisor may truncate the file to rotate it while the child writes.
    log = logs.open_private(log_path)
    try:
        popen = subprocess.Popen(
            [expand_env_refs(a, values) for a in spec.argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        os.close(log)
    return PopenProcess(popen)


def create_time_of(pid: int) -> float | None:
    """psutil's create time of ``pid``, or None when it does not exist (or is a zombie).

    On Linux it is read from procfs the way psutil computes it (boot time plus the start
    time in clock ticks): the supervisor records its own at start-up, and importing
    psutil there would delay the first server it spawns.
    """
    try:
        return _procfs_create_time(pid)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, IndexError):
        pass  # no procfs (not Linux) or an unexpected format: ask psutil
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _procfs_create_time(pid: int) -> float | None:
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    # Fields follow the command name, which may itself hold spaces and parentheses.
    fields = stat[stat.rindex(b")") + 2 :].split()
    if fields[0] == b"Z":
        return None
    return int(fields[19]) / os.sysconf("SC_CLK_TCK") + _boot_time()


@functools.cache
def _boot_time() -> float:
    """/proc/stat's ``btime``, read once (ValueError when it has none)."""
    with open("/proc/stat", "rb") as f:
        for line in f:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    raise ValueError("/proc/stat has no btime line")


def owned(pid: int | None, create_time: float | None) -> bool:
    """Whether ``pid`` is alive and is the very process we recorded (same create time)."""
    if not pid or create_time is None:
        return False
    actual = create_time_of(pid)
    return actual is not None and abs(actual - create_time) <= _CREATE_TIME_SLACK


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to a process group; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is still alive."""
    return signal_group(pgid, 0)


def living_members(pgid: int) -> list[int]:
    """Pids of group ``pgid``'s processes that are not zombies (waiting to be reaped)."""
    import psutil

    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
        except (ProcessLookupError, PermissionError):
            continue
    return members


def group_members(pgid: int) -> dict[int, float]:
    """Living (non-zombie) processes of group ``pgid``: pid -> create time."""
    import psutil

    members: dict[int, float] = {}
    for proc in psutil.process_iter(["status", "create_time"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members[proc.pid] = proc.info["create_time"]
        except (ProcessLookupError, PermissionError):
            continue
    return members


TERM = signal.SIGTERM
KILL = signal.SIGKILL
