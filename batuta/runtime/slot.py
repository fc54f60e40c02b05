"""One server as the supervisor sees it (:class:`Slot`), and what it does to the world.

:class:`Seams` are the clock, spawner, signaller, prober and ownership check the
supervisor (:mod:`batuta.runtime.supervise`) uses, injectable so that its restart,
backoff and crash-loop rules run in unit tests without processes or sleeping.
"""

from __future__ import annotations

import signal
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from batuta.runtime import logs
from batuta.runtime.health import probe
from batuta.runtime.process import (
    UNKNOWN_EXIT,
    AdoptedProcess,
    Process,
    find_marked,
    group_members,
    owned,
    signal_group,
    spawn,
    spawn_mark_prefix,
)
from batuta.runtime.spec import ServerSpec, ServerState
from batuta.runtime.state import ServerRecord

# States of a server whose process is not running (nor about to, without a new request).
IDLE_STATES = ("crashloop", "exited", "stopped", "failed", "idle")


def describe_exit(code: int | None) -> str:
    """``exit code 1`` / ``killed by SIGKILL`` / ``exit status unknown``."""
    if code is None or code == UNKNOWN_EXIT:
        return "exit status unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


@dataclass
class Seams:
    """Everything the supervisor does to the outside world (swap them in tests)."""

    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    spawner: Callable[[ServerSpec, Path, Mapping[str, str], str], Process] = spawn
    marked: Callable[[str], list[tuple[int, float, str]]] = find_marked
    signaller: Callable[[int, int], bool] = signal_group
    prober: Callable[[str], str] = probe
    owned: Callable[[int | None, float | None], bool] = owned
    adopt: Callable[[int, float], Process] = AdoptedProcess
    members: Callable[[int], dict[int, float]] = group_members  # pgid -> {pid: create time}
    say: Callable[[str], None] = logs.say  # a line of the supervisor's own log


@dataclass
class Slot:
    """The supervisor's bookkeeping for one server (one generation of its record)."""

    record: ServerRecord
    proc: Process | None = None
    state: ServerState = "starting"
    restarts: int = 0
    recent: deque[float] = field(default_factory=deque)
    failures: int = 0
    next_start: float | None = None
    started_mono: float = 0.0
    started_at: float | None = None
    ready_mono: float | None = None
    ready_at: float | None = None
    last_exit: int | None = None
    message: str = ""
    next_probe: float = 0.0
    probe_fails: int = 0
    stop_deadline: float | None = None
    killed: bool = False
    pending: ServerRecord | None = None  # a newer generation, started once this one stops
    forget: bool = False  # the record is gone: drop the slot once stopped
    adopted: bool = False  # not our child: no SIGCHLD when it exits, so poll it
    group: dict[int, float] = field(default_factory=dict)  # members seen: pid -> create time
    next_census: float = 0.0
    await_until: float | None = None  # a new request waits this long for its env values
    rotate_error: str = ""

    @property
    def spec(self) -> ServerSpec:
        return self.record.spec

    def observed(self) -> tuple[object, ...]:
        pid = self.proc.pid if self.proc else None
        return (self.state, pid, self.restarts, self.last_exit, self.message, self.ready_at)


def slot_from(rec: ServerRecord) -> Slot:
    """A slot holding what ``rec`` last recorded of its server."""
    return Slot(
        record=rec,
        state=rec.state,
        restarts=rec.restarts,
        started_at=rec.started_at,
        ready_at=rec.ready_at,
        last_exit=rec.last_exit,
        message=rec.message,
    )


def find_unrecorded(rec: ServerRecord, state_dir: Path, seams: Seams) -> ServerRecord:
    """``rec`` with the pid of its server's process found by its spawn mark, when the
    record holds none that could still run."""
    # An earlier supervisor may have died after spawning the server and before saving
    # its pid: the process carries the spawn mark, so it is found and adopted (or
    # stopped, when its generation is outdated) rather than left running unowned.
    if rec.desired in ("stopped", "idle") and rec.state in IDLE_STATES:
        return rec
    prefix = spawn_mark_prefix(state_dir, rec.name)
    for pid, create_time, mark in seams.marked(prefix):
        generation = mark.removeprefix(prefix)
        if generation.isdigit():
            seams.say(f"{rec.name}: found its process (pid {pid}) by its spawn mark")
            return replace(rec, pid=pid, create_time=create_time, pid_generation=int(generation))
    return rec


def rotate_log(slot: Slot, log: Path, say: Callable[[str], None], every: float) -> None:
    """Rotate ``slot``'s ``log`` when it is too big; a failure is said once and tried
    again ``every`` seconds (by the caller)."""
    try:
        logs.rotate_if_needed(log, slot.spec.log_max_size)
    except OSError as exc:
        # A full disk or a bad permission must not kill the supervisor: say so
        # once, and try again at the next round.
        why = f"cannot rotate {log}: {exc.strerror or exc}"
        if why != slot.rotate_error:
            slot.rotate_error = why
            say(why)
            logs.note(log, f"{why}; retrying every {every:g}s")
        if not slot.message:
            slot.message = why
        return
    if slot.rotate_error:
        if slot.message == slot.rotate_error:
            slot.message = ""
        slot.rotate_error = ""
        say(f"{log} rotates again")
