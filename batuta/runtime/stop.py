"""Stopping a server: TERM its whole process group, wait, then KILL the group.

Only a process whose pid *and* create time match what we recorded is ever signalled; a
mismatch means the pid now belongs to someone else, and the record is simply forgotten.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable

from batuta.runtime.process import KILL, TERM, living_members, owned, signal_group

_KILL_WAIT = 3.0  # after SIGKILL the kernel needs a moment to tear the group down


def _signal(pid: int, sig: int, signaller: Callable[[int, int], bool]) -> None:
    # Our servers lead their own group; anything else gets only its own signal.
    try:
        is_leader = os.getpgid(pid) == pid
    except ProcessLookupError:
        is_leader = True  # gone already: the group may live on
    if is_leader:
        signaller(pid, sig)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _gone(pid: int, create_time: float) -> bool:
    # A zombie does not count: its parent (maybe the caller) collects its status.
    return not owned(pid, create_time) and not living_members(pid)


def terminate(
    pid: int | None,
    create_time: float | None,
    timeout: float = 10.0,
    *,
    signaller: Callable[[int, int], bool] = signal_group,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Stop the process group led by ``pid`` if it is ours.

    Returns True when the process was ours (it is gone now), False when ``pid`` is dead
    or belongs to another process (nothing was signalled).
    """
    if pid is None or create_time is None or not owned(pid, create_time):
        return False
    _signal(pid, TERM, signaller)
    deadline = clock() + timeout
    while clock() < deadline:
        if _gone(pid, create_time):
            return True
        sleep(0.05)
    _signal(pid, KILL, signaller)
    deadline = clock() + _KILL_WAIT
    while not _gone(pid, create_time) and clock() < deadline:
        sleep(0.02)
    return True
