"""The supervisor's logic: keep the servers of one state directory as state.json wants.

One :class:`Supervisor` owns every server of a state directory. :meth:`Supervisor.load`
reconciles with state.json (new generations start, ``desired: stopped`` stops, a record
that disappeared is stopped and forgotten); :meth:`Supervisor.tick` reaps exits, applies
the restart policy, probes readiness, enforces stop deadlines and rotates logs, then
saves what it observed. The clock, spawner, signaller, prober and ownership check are
injectable (:class:`Seams`) so restart, backoff and crash-loop rules run in unit tests
without processes or sleeping; ``daemon.py`` wraps this in the real process.

Restart policy: ``always`` restarts after any exit, ``on-failure`` after a non-zero
exit or a signal, ``never`` leaves the server ``exited``. Restarts back off from 0.5 s,
doubling to 30 s; the backoff resets once a server has been ready for 60 s. A sixth
crash within 60 s of five restarts is a crash loop: restarting stops and the state is
``crashloop``; the message names the last exit and the log file (state.json never holds
log text: a server may print its secrets).

``${env:VAR}`` references in a spec are expanded only from the values the requesting
command handed over (:meth:`Supervisor.receive`; see :mod:`batuta.runtime.env_values`).
One server's bookkeeping is a :class:`~batuta.runtime.slot.Slot`.

A corrupt state.json or a failing log rotation is reported and survived: the last good
desired state stays in memory, and the rotation is retried at the next round.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from batuta.errors import StateError
from batuta.runtime import logs
from batuta.runtime.env_values import EnvValues
from batuta.runtime.ondemand_supervise import OnDemandRules
from batuta.runtime.process import (
    KILL,
    TERM,
    UNKNOWN_EXIT,
    spawn_mark,
)
from batuta.runtime.slot import (
    IDLE_STATES,
    Seams,
    Slot,
    describe_exit,
    find_unrecorded,
    rotate_log,
    slot_from,
)
from batuta.runtime.state import ServerRecord, locked_state, read_state

__all__ = ["Seams", "Supervisor", "describe_exit"]

BACKOFF_START = 0.5
BACKOFF_MAX = 30.0
HEALTHY_RESET = 60.0
CRASHLOOP_RESTARTS = 5
CRASHLOOP_WINDOW = 60.0
# Readiness poll while a server loads: half of it is added to every start on average (a
# small model is ready in a quarter of a second), and a probe of a server that does not
# listen yet is one refused connect.
PROBE_STARTING = 0.01
PROBE_SLOW_START = 0.1  # ... after the first few seconds (a large model loads for minutes)
PROBE_READY = 2.0
UNHEALTHY_AFTER = 3  # consecutive failed probes before a ready server is unhealthy
POLL_ADOPTED = 0.5  # adopted processes send no SIGCHLD: poll them
ROTATE_EVERY = 2.0
IDLE_TICK = 5.0
CENSUS_EVERY = 1.0  # how often a running server's process group members are recorded
HANDOFF_WAIT = 30.0  # how long a new request waits for its ${env:} values


class Supervisor:
    """Keeps the servers recorded in ``state_dir`` running, restarting and stopping them."""

    def __init__(self, state_dir: Path, seams: Seams | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.seams = seams or Seams()
        self.slots: dict[str, Slot] = {}
        self._saved: dict[str, tuple[object, ...]] = {}
        self._next_rotate = 0.0
        self.env_values = EnvValues(self.seams.say)
        self._state_error = ""
        # Until state.json has been read once, a record's server may have been spawned by
        # an earlier supervisor (found by its spawn mark); a record that appears later was
        # written while this one held the lock, so only this one can have started it.
        self._read_once = False
        self.on_demand = OnDemandRules(self.state_dir, self.seams.wall, self._say)

    def receive(self, token: str, values: Mapping[str, str]) -> None:
        """The ``${env:}`` values a command handed over for the request ``token``
        (kept in memory only; a server waiting for them starts at once)."""
        self.env_values.put(token, values)
        now = self.seams.clock()
        for slot in self.slots.values():
            if slot.record.handoff == token and slot.next_start is not None:
                slot.next_start = min(slot.next_start, now)

    # --- reconciling with state.json -------------------------------------------------

    def load(self, save: bool = True) -> None:
        """Reconcile the running servers with state.json (``save``: write back at once;
        pass False while already holding the state lock)."""
        now = self.seams.clock()
        try:
            records = read_state(self.state_dir).servers
        except StateError as exc:
            self._state_unreadable(str(exc))
            return
        self._state_readable()
        scan, self._read_once = not self._read_once, True
        for name, rec in records.items():
            slot = self.slots.get(name)
            if slot is None:
                self._adopt_or_start(rec, now, scan)
            elif rec.generation != slot.record.generation:
                if slot.proc is not None:
                    slot.pending = rec
                    self._begin_stop(slot, now)
                else:
                    self._install(rec, now)
        for name, slot in list(self.slots.items()):
            if name not in records:
                slot.forget, slot.pending = True, None
                if slot.proc is not None:
                    self._begin_stop(slot, now)
                else:
                    del self.slots[name]
        if save:
            self._save()

    def _state_unreadable(self, why: str) -> None:
        # Keep supervising what we know (the last good desired state) instead of dying
        # and being respawned into the same error.
        if why == self._state_error:
            return
        self._state_error = why
        self.seams.say(f"{why}; keeping the last good desired state until it is readable")
        for slot in self.slots.values():
            logs.note(self._log(slot), "state.json is unreadable; supervising as before")

    def _state_readable(self) -> None:
        if self._state_error:
            self._state_error = ""
            self.seams.say("state.json is readable again")

    def _adopt_or_start(self, rec: ServerRecord, now: float, scan: bool = True) -> None:
        # A supervisor that starts finds what an earlier one left: live processes are
        # adopted (pid + create time prove they are ours), dead ones count as exits.
        current = rec.pid_generation == rec.generation  # the pid runs this record's spec
        if not (
            rec.pid is not None
            and rec.create_time is not None
            and self.seams.owned(rec.pid, rec.create_time)
        ):
            # Each scan reads every process's environment: ~10 ms before a new server starts.
            rec = find_unrecorded(rec, self.state_dir, self.seams) if scan else rec
            current = rec.pid_generation == rec.generation
        if (
            rec.pid is not None
            and rec.create_time is not None
            and self.seams.owned(rec.pid, rec.create_time)
        ):
            slot = slot_from(rec if current else replace(rec, generation=rec.pid_generation))
            slot.proc = self.seams.adopt(rec.pid, rec.create_time)
            slot.adopted = True
            slot.state = rec.state if rec.state in ("starting", "ready", "unhealthy") else "ready"
            slot.started_mono = now
            slot.ready_mono = now if slot.state == "ready" else None
            slot.next_probe = now
            self.slots[rec.name] = slot
            if not current or rec.desired == "stopped":
                slot.pending = rec
                self._begin_stop(slot, now)
            return
        slot = self._install(rec, now, fresh=False)
        if (
            current
            and rec.desired == "running"
            and rec.pid is not None
            and rec.state not in IDLE_STATES
        ):
            # It died while nobody watched: an exit of unknown status.
            self._exited(slot, UNKNOWN_EXIT, now)

    def _install(self, rec: ServerRecord, now: float, fresh: bool = True) -> Slot:
        """Make ``rec`` the slot of its server. A ``fresh`` record is a new request and
        starts now; otherwise (a supervisor booting) only records still waiting start."""
        slot = slot_from(rec)
        self.slots[rec.name] = slot
        if rec.desired in ("stopped", "idle"):
            slot.state = rec.desired
        elif fresh or (
            rec.state not in IDLE_STATES
            and (rec.pid is None or rec.pid_generation != rec.generation)
        ):
            slot.state, slot.next_start = "starting", now
            # A request's first start may wait for the values its command hands over.
            slot.await_until = now + HANDOFF_WAIT if rec.handoff else None
        return slot

    # --- one pass of the loop ---------------------------------------------------------

    def tick(self) -> float:
        """Do everything that is due; returns how many seconds until something is due."""
        now = self.seams.clock()
        for slot in list(self.slots.values()):
            self._check(slot, now)
        if now >= self._next_rotate:
            self._next_rotate = now + ROTATE_EVERY
            for slot in self.slots.values():
                if slot.proc is not None:
                    rotate_log(slot, self._log(slot), self.seams.say, ROTATE_EVERY)
        self.env_values.keep_for(self.slots.values())
        self._save()
        return self._next_due(now)

    def _check(self, slot: Slot, now: float) -> None:
        if slot.proc is not None:
            code = slot.proc.poll()
            if code is not None:
                pid = slot.proc.pid
                slot.proc = None
                self._kill_leftovers(slot, pid)
                self._exited(slot, code, now)
                return
            if now >= slot.next_census:
                # While the leader lives its group id cannot be reused: what is in the
                # group now is ours, and proves the group ours after the leader exits.
                slot.next_census = now + CENSUS_EVERY
                slot.group.update(self.seams.members(slot.proc.pid))
            if self.on_demand.idle_out(slot):
                self._begin_stop(slot, now)
                return
            if slot.state == "stopping":
                deadline = slot.stop_deadline
                if deadline is not None and now >= deadline and not slot.killed:
                    logs.note(self._log(slot), "did not stop in time: SIGKILL")
                    self.seams.signaller(slot.proc.pid, KILL)
                    slot.killed = True
            elif now >= slot.next_probe:
                self._probe(slot, now)
        elif slot.next_start is not None and now >= slot.next_start:
            self._start(slot, now)

    def _start(self, slot: Slot, now: float) -> None:
        spec = slot.spec
        slot.next_start = None
        values = self.env_values.for_start(slot, now, self._log(slot))
        if values is None:
            return
        slot.await_until = None  # restarts use these very values, never wait for others
        logs.note(self._log(slot), f"starting: {shlex.join(spec.argv)}")
        try:
            mark = spawn_mark(self.state_dir, spec.name, slot.record.generation)
            proc = self.seams.spawner(spec, self._log(slot), values, mark)
        except OSError as exc:
            slot.message = f"cannot run {spec.argv[0]}: {exc.strerror or exc}"
            logs.note(self._log(slot), slot.message)
            self._exited(slot, 127, now)
            return
        slot.proc, slot.adopted = proc, False
        slot.group, slot.next_census = {}, now
        slot.state = "starting"
        slot.started_mono = now
        slot.started_at = self.seams.wall()
        slot.ready_mono = None
        slot.next_probe = now
        slot.probe_fails = 0

    def _probe(self, slot: Slot, now: float) -> None:
        health = self.seams.prober(slot.spec.health_url)
        if health == "ready":
            slot.probe_fails = 0
            slot.next_probe = now + PROBE_READY
            if slot.state != "ready":
                slot.state, slot.message = "ready", ""
                slot.ready_mono, slot.ready_at = now, self.seams.wall()
                logs.note(self._log(slot), f"ready at {slot.spec.url}")
            return
        if slot.state == "starting":
            waited = now - slot.started_mono
            slot.next_probe = now + (PROBE_STARTING if waited < 5 else PROBE_SLOW_START)
            if waited > slot.spec.ready_timeout:
                slot.state = "unhealthy"
                slot.message = f"not ready after {slot.spec.ready_timeout:g}s ({health})"
                logs.note(self._log(slot), slot.message)
            return
        slot.probe_fails += 1
        slot.next_probe = now + 0.5
        if slot.state == "ready" and slot.probe_fails >= UNHEALTHY_AFTER:
            slot.state = "unhealthy"
            slot.message = f"readiness check says {health}"
            logs.note(self._log(slot), f"unhealthy: {slot.message}")

    def _exited(self, slot: Slot, code: int, now: float) -> None:
        slot.last_exit = None if code == UNKNOWN_EXIT else code
        what = describe_exit(code)
        if slot.state == "stopping":
            logs.note(self._log(slot), f"stopped ({what})")
            self._stopped(slot, now)
            return
        policy = slot.spec.restart
        if policy == "never" or (policy == "on-failure" and code == 0):
            slot.state, slot.message = "exited", what
            logs.note(self._log(slot), f"exited ({what}); restart: {policy}")
            return
        if slot.ready_mono is not None and now - slot.ready_mono >= HEALTHY_RESET:
            slot.failures = 0
        while slot.recent and slot.recent[0] <= now - CRASHLOOP_WINDOW:
            slot.recent.popleft()
        if len(slot.recent) >= CRASHLOOP_RESTARTS:
            slot.state = "crashloop"
            # The log's own lines stay in the log: a server may print its secrets.
            slot.message = (
                f"crash loop: {len(slot.recent)} restarts within {CRASHLOOP_WINDOW:g}s, "
                f"last {what}; see {self._log(slot)}"
            )
            logs.note(self._log(slot), f"{what}; crash loop, not restarting")
            return
        slot.failures += 1
        delay = min(BACKOFF_START * 2 ** (slot.failures - 1), BACKOFF_MAX)
        slot.recent.append(now)
        slot.restarts += 1
        slot.state, slot.next_start = "starting", now + delay
        slot.message = f"{what}; restarting in {delay:g}s"
        logs.note(self._log(slot), slot.message)

    # --- stopping ---------------------------------------------------------------------

    def _begin_stop(self, slot: Slot, now: float) -> None:
        slot.next_start = None
        if slot.proc is None:
            self._stopped(slot, now)
            return
        if slot.state == "stopping":
            return
        if not self.seams.owned(slot.proc.pid, slot.proc.create_time):
            # The pid is no longer the process we started: never signal it, forget it.
            logs.note(self._log(slot), f"pid {slot.proc.pid} is no longer ours; forgetting it")
            slot.proc = None
            self._stopped(slot, now)
            return
        slot.state = "stopping"
        slot.killed = False
        self.on_demand.stopping(slot)
        timeout = (slot.pending or slot.record).stop_timeout
        slot.stop_deadline = now + timeout
        logs.note(self._log(slot), "stopping: SIGTERM to the process group")
        self.seams.signaller(slot.proc.pid, TERM)

    def _stopped(self, slot: Slot, now: float) -> None:
        slot.state, slot.stop_deadline = "stopped", None
        name = slot.spec.name
        self.on_demand.stopped(slot)
        if slot.forget:
            del self.slots[name]
        elif slot.pending is not None:
            self._install(slot.pending, now)
        elif slot.record.desired == "idle":
            slot.state = "idle"

    def _kill_leftovers(self, slot: Slot, pgid: int) -> None:
        # The leader is gone; anything it forked into its group goes with it. Once every
        # member is gone the kernel may hand the id to an unrelated group, so the group
        # is signalled only while a member we recorded (pid + create time) still lives:
        # then the id cannot have been reused, and the server's own session holds it.
        members, slot.group = slot.group, {}
        if any(self.seams.owned(pid, ct) for pid, ct in members.items() if pid != pgid):
            self.seams.signaller(pgid, KILL)

    def shutdown(self) -> None:
        """Stop every server (the supervisor itself was asked to terminate)."""
        now = self.seams.clock()
        for slot in list(self.slots.values()):
            if slot.proc is None and slot.next_start is None:
                continue  # keep crash loops and exits on record as they are
            slot.pending = replace(slot.record, desired="stopped")
            self._begin_stop(slot, now)
        self._save(desired_stopped=True)

    # --- reporting --------------------------------------------------------------------

    def idle(self) -> bool:
        """Nothing runs, nothing is scheduled: the supervisor may exit."""
        return all(
            s.proc is None and s.next_start is None and not self.on_demand.keeps_supervisor(s)
            for s in self.slots.values()
        )

    def _next_due(self, now: float) -> float:
        due = [now + IDLE_TICK]
        for slot in self.slots.values():
            if slot.next_start is not None:
                due.append(slot.next_start)
            if slot.proc is None:
                continue
            if slot.state == "stopping":
                # Poll for the exit (adopted processes send no SIGCHLD) and the deadline.
                due.append(now + 0.05)
            else:
                due.append(slot.next_probe)
                if (check := self.on_demand.next_check(slot, now)) is not None:
                    due.append(check)
                if slot.adopted:
                    due.append(now + POLL_ADOPTED)
        return max(0.0, min(due) - now)

    def _say(self, message: str) -> None:
        self.seams.say(message)

    def _log(self, slot: Slot) -> Path:
        return logs.log_path(self.state_dir, slot.spec.name)

    def _save(self, desired_stopped: bool = False) -> None:
        changed = {n: s.observed() for n, s in self.slots.items()}
        if changed == self._saved and not desired_stopped:
            return
        try:
            with locked_state(self.state_dir) as state:
                for name, slot in self.slots.items():
                    rec = state.servers.get(name)
                    if rec is None or rec.generation != slot.record.generation:
                        continue
                    proc = slot.proc
                    # An idle stop is the supervisor's own decision: it records it.
                    idled = slot.record.desired == "idle" and rec.desired == "running"
                    state.servers[name] = replace(
                        rec,
                        desired="stopped" if desired_stopped else "idle" if idled else rec.desired,
                        state=slot.state,
                        pid=proc.pid if proc else None,
                        create_time=proc.create_time if proc else None,
                        pid_generation=slot.record.generation if proc else rec.pid_generation,
                        restarts=slot.restarts,
                        started_at=slot.started_at,
                        ready_at=slot.ready_at,
                        last_exit=slot.last_exit,
                        message=slot.message,
                    )
        except (StateError, OSError) as exc:
            # Unreadable (corrupt) or unwritable: report, keep what we observed, retry.
            self._state_unreadable(
                str(exc)
                if isinstance(exc, StateError)
                else (f"cannot write state.json: {exc.strerror or exc}")
            )
            return
        self._state_readable()
        self._saved = changed
