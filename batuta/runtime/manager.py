"""The runtime as the rest of batuta sees it: start, stop and observe local servers.

:class:`Runtime` never runs a server itself: it records the request in state.json (a new
*generation* of the server's record) and wakes the state directory's supervisor, which
owns every process (see ``daemon.py``). ``start`` then waits until the supervisor reports
the server ready, and cleans up after itself when it does not come up.

A spec's ``${env:VAR}`` references are resolved here, from this command's environment
(a variable that is not set is an error before anything starts), and handed to the
supervisor over its private socket (``handoff.py``): never written to disk, and never
taken from the supervisor's own environment.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from batuta.errors import ModelSourceError, RuntimeStartError, StateError
from batuta.runtime import daemon, handoff, logs, ollama
from batuta.runtime.gateway import is_gateway
from batuta.runtime.ports import holder, port_free
from batuta.runtime.process import env_refs, owned
from batuta.runtime.slot import describe_exit
from batuta.runtime.spec import ServerSpec, ServerStatus
from batuta.runtime.state import ServerRecord, State, locked_state, read_state, write_state
from batuta.runtime.stop import terminate

if TYPE_CHECKING:
    from batuta.runtime.ollama import Progress

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_LIVE = ("starting", "ready", "unhealthy", "stopping")
_ENDED = ("exited", "crashloop", "stopped", "failed")
_POLL = 0.01  # how often a waiting command reads state.json: part of every start
_STOP_GRACE = 5.0  # beyond a stop's own timeout, for the supervisor to notice and report


class Runtime:
    """Local servers of one state directory (``.batuta/``)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)

    # --- starting ---------------------------------------------------------------------

    def start(
        self,
        spec: ServerSpec,
        *,
        wait: bool = True,
        timeout: float | None = None,
        progress: Progress | None = None,
    ) -> ServerStatus:
        """Run ``spec`` (replacing a same-named server whose config differs).

        With ``wait`` returns once the server is ready; when it is not (it exits, or
        ``timeout`` / ``spec.ready_timeout`` passes) stops it and raises
        RuntimeStartError carrying the last lines of its log. An Ollama server then
        pulls its model (``progress`` sees the pull).
        """
        if not _NAME.match(spec.name) and not is_gateway(spec):
            raise RuntimeStartError(f"invalid server name {spec.name!r}")
        values = _env_values(spec)
        token = secrets.token_hex(16) if values is not None else ""
        with locked_state(self.state_dir) as state:
            current = state.servers.get(spec.name)
            _refuse_manifest_name(spec.name, spec.origin, current)
            if _reusable(current, spec):
                assert current is not None
                generation, baseline = current.generation, current.restarts
                token = ""  # it runs already, with the values it was started with
            else:
                self._check_port(state, spec, current)
                generation, baseline = self._request(state, spec, current, token), 0
            write_state(self.state_dir, state)  # visible before the supervisor wakes
            daemon.nudge(self.state_dir)
        handed = (token, values) if token and values is not None else None
        if handed is not None:
            self._hand_over(spec, *handed)
        if not wait:
            return self._record(spec.name).status()
        status = self._wait_ready(spec, generation, baseline, timeout or spec.ready_timeout, handed)
        if spec.backend == "ollama" and spec.model_path:
            self._ollama_model(spec, progress)
        return status

    def check_adhoc_name(self, name: str) -> None:
        """Raise StateError when ``name`` is taken by a manifest's server: an ad-hoc start
        must not replace it (``start`` checks again under the lock)."""
        _refuse_manifest_name(name, "adhoc", read_state(self.state_dir).servers.get(name))

    def _ollama_model(self, spec: ServerSpec, progress: Progress | None) -> None:
        # `ollama serve` starts empty-handed: the model comes through its own /api/pull.
        parts = urlsplit(spec.health_url)
        base = f"{parts.scheme}://{parts.netloc}"
        try:
            if ollama.find_model(base, spec.model_path) is None:
                ollama.pull(base, spec.model_path, progress)
        except ModelSourceError as exc:
            self.stop(spec.name)
            raise RuntimeStartError(f"server {spec.name!r} (ollama): {exc}") from exc

    def _check_port(self, state: State, spec: ServerSpec, current: ServerRecord | None) -> None:
        for other in state.servers.values():
            if other.name != spec.name and other.spec.port == spec.port and _active(other):
                raise RuntimeStartError(
                    f"port {spec.port} is already used by server {other.name!r} "
                    f"({other.spec.backend}); stop it first or choose another port"
                )
        keeps_port = current is not None and _alive(current) and current.spec.port == spec.port
        if not keeps_port and not port_free(spec.host, spec.port):
            who = holder(spec.port)
            raise RuntimeStartError(
                f"port {spec.port} on {spec.host} is already in use"
                + (f" by {who}" if who else "")
                + "; choose another port (--port) or stop what listens there"
            )

    def _hand_over(self, spec: ServerSpec, token: str, values: dict[str, str]) -> None:
        # In short attempts: a supervisor that died meanwhile is replaced, and the
        # replacement (which waits for the values) gets them.
        deadline = time.monotonic() + handoff.HANDOFF_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            try:
                handoff.send(self.state_dir, token, values, timeout=max(0.05, min(2.0, left)))
                return
            except RuntimeStartError as exc:
                if time.monotonic() >= deadline:
                    self.stop(spec.name)
                    raise RuntimeStartError(f"server {spec.name!r} not started: {exc}") from exc
            self._ensure_supervisor()

    def _request(
        self, state: State, spec: ServerSpec, current: ServerRecord | None, token: str
    ) -> int:
        generation = (current.generation if current else 0) + 1
        record = ServerRecord(spec=spec, generation=generation, handoff=token)
        if current is not None and _alive(current):
            # Keep the old pid on record until the supervisor has stopped it.
            record = replace(
                record,
                pid=current.pid,
                create_time=current.create_time,
                pid_generation=current.pid_generation,
            )
        state.servers[spec.name] = record
        return generation

    def _wait_ready(
        self,
        spec: ServerSpec,
        generation: int,
        baseline: int,
        timeout: float,
        handed: tuple[str, dict[str, str]] | None,
    ) -> ServerStatus:
        deadline = time.monotonic() + timeout
        next_check = time.monotonic() + 1.0
        while True:
            record = read_state(self.state_dir).servers.get(spec.name)
            if record is None or record.generation != generation:
                raise RuntimeStartError(
                    f"server {spec.name!r} was replaced or removed by another command "
                    "while it started"
                )
            if record.state == "ready" and record.pid_generation == generation:
                return record.status()
            if record.state == "failed":
                self._fail(spec, record.message)
            if record.state in _ENDED or record.restarts > baseline:
                self._fail(spec, f"exited while starting ({describe_exit(record.last_exit)})")
            if time.monotonic() >= deadline:
                self._fail(spec, f"not ready after {timeout:g}s")
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + 1.0
                if self._ensure_supervisor() and handed is not None:
                    self._hand_over(spec, *handed)  # the new supervisor needs them too
            time.sleep(_POLL)

    def _fail(self, spec: ServerSpec, why: str) -> None:
        tail = logs.tail(self.log_path(spec.name))
        self.stop(spec.name)
        raise RuntimeStartError(
            f"server {spec.name!r} ({spec.backend}) {why}; log: {self.log_path(spec.name)}",
            tail,
        )

    def _ensure_supervisor(self) -> bool:
        # A supervisor that died (killed) while work is pending is replaced. Observers
        # (status, plan) call this too: they hand nothing over, so a replacement cannot
        # restart a server that needs ${env:} values (it reports it failed instead).
        with locked_state(self.state_dir):
            if not daemon.supervisor_alive(self.state_dir):
                daemon.nudge(self.state_dir)
                return True
        return False

    # --- stopping ---------------------------------------------------------------------

    def stop(self, name: str, timeout: float = 10.0) -> bool:
        """Stop server ``name`` (TERM its group, KILL after ``timeout``) and forget it.

        Returns False when no such server is on record.
        """
        return bool(self._stop_many([name], timeout))

    def stop_all(self, origin: str | None = None) -> list[str]:
        """Stop every server (only those of ``origin`` "manifest"/"adhoc" when given)."""
        names = [
            name
            for name, rec in read_state(self.state_dir).servers.items()
            if origin is None or rec.spec.origin == origin
        ]
        return self._stop_many(names, 10.0)

    def _stop_many(self, names: list[str], timeout: float) -> list[str]:
        requested: dict[str, ServerRecord] = {}
        with locked_state(self.state_dir) as state:
            for name in names:
                rec = state.servers.get(name)
                if rec is None:
                    continue
                rec = replace(
                    rec, desired="stopped", generation=rec.generation + 1, stop_timeout=timeout
                )
                state.servers[name] = requested[name] = rec
            supervised = daemon.supervisor_alive(self.state_dir)
            if requested and supervised:
                write_state(self.state_dir, state)  # visible before the supervisor wakes
                daemon.nudge(self.state_dir)
        if supervised:
            self._await_stopped(requested, timeout + _STOP_GRACE)
        for rec in requested.values():
            # No supervisor (or it did not manage in time): stop directly, if still ours.
            terminate(rec.pid, rec.create_time, timeout)
        with locked_state(self.state_dir) as state:
            for name, rec in requested.items():
                latest = state.servers.get(name)
                if latest is not None and latest.generation == rec.generation:
                    del state.servers[name]
        return list(requested)

    def _await_stopped(self, requested: dict[str, ServerRecord], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        waiting = dict(requested)
        while waiting and time.monotonic() < deadline:
            servers = read_state(self.state_dir).servers
            for name, rec in list(waiting.items()):
                now = servers.get(name)
                if now is None or now.generation != rec.generation or now.state == "stopped":
                    del waiting[name]
            if waiting and not daemon.supervisor_alive(self.state_dir):
                return
            if waiting:
                time.sleep(_POLL)

    # --- observing --------------------------------------------------------------------

    def status(self) -> dict[str, ServerStatus]:
        """Every recorded server, reconciled with the live process table.

        A recorded pid that is gone (or now belongs to another process) shows as
        ``exited``. Servers waiting for a supervisor that died get a new one.
        """
        state = read_state(self.state_dir)
        out: dict[str, ServerStatus] = {}
        pending = False
        for name, rec in sorted(state.servers.items()):
            pending |= _active(rec)
            if rec.state in _LIVE and rec.pid is not None and not owned(rec.pid, rec.create_time):
                message = f"process {rec.pid} is gone" + (
                    f" ({rec.message})" if rec.message else ""
                )
                out[name] = rec.status(state="exited", pid=None, message=message)
            else:
                out[name] = rec.status()
        if pending and not daemon.supervisor_alive(self.state_dir):
            self._ensure_supervisor()
        return out

    def log_path(self, name: str) -> Path:
        """Where server ``name`` writes its output."""
        return logs.log_path(self.state_dir, name)

    def supervisor_pid(self) -> int | None:
        """The pid of the supervisor of this state directory, when one runs."""
        return daemon.supervisor_pid(self.state_dir)

    def _record(self, name: str) -> ServerRecord:
        record = read_state(self.state_dir).servers.get(name)
        if record is None:
            raise StateError(f"server {name!r} is not on record in {self.state_dir}")
        return record


def _env_values(spec: ServerSpec) -> dict[str, str] | None:
    """This command's values of the variables ``spec`` refers to (None: it refers to
    none). Raises RuntimeStartError, before anything starts, naming unset variables."""
    refs = env_refs(spec)
    if not refs:
        return None
    missing = sorted(
        name for name, has_default in refs.items() if not has_default and name not in os.environ
    )
    if missing:
        listed = ", ".join(missing)
        raise RuntimeStartError(
            f"server {spec.name!r} refers to ${{env:{missing[0]}}}, but {listed} "
            f"{'is' if len(missing) == 1 else 'are'} not set in this environment: "
            "set it and run again"
        )
    return {name: os.environ[name] for name in refs if name in os.environ}


def _refuse_manifest_name(name: str, origin: str, current: ServerRecord | None) -> None:
    # An ad-hoc start replacing a manifest's server would leave that manifest's plan
    # unable to run (the name is no longer its own) and `down` unable to stop it.
    if origin == "adhoc" and current is not None and current.spec.origin == "manifest":
        raise StateError(
            f"server name {name!r} belongs to the manifest {current.spec.manifest}: "
            "choose another --name (`batuta down` stops that manifest's servers)"
        )


def _alive(rec: ServerRecord) -> bool:
    return owned(rec.pid, rec.create_time)


def _active(rec: ServerRecord) -> bool:
    """Whether the record runs or is meant to (so its port is taken)."""
    return _alive(rec) or (rec.desired == "running" and rec.state in ("starting", "ready"))


def _reusable(current: ServerRecord | None, spec: ServerSpec) -> bool:
    return (
        current is not None
        and current.desired == "running"
        and current.state in ("starting", "ready", "unhealthy")
        and current.spec.config_hash == spec.config_hash
        and _alive(current)
    )
