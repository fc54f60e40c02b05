"""The state directory ``.batuta/``: what batuta started, and the locks that guard it.

``state.json`` records, per server, the launch spec (no secrets: env values are the
user's own settings, never a copy of ``os.environ``), what the user wants (``desired``),
and what the supervisor observed (pid + create time, state, restarts, last exit). It is
written atomically (temp file, fsync, ``os.replace``) while holding ``state.lock``
(``fcntl.flock``), so readers never see half a file and writers never lose an update.

``apply.lock`` makes ``batuta apply`` exclusive (``down``, ``serve start`` and ``serve pull``
take it too). The flock is the truth; the pid written
inside only names the holder in the error. A lock left by a dead process is released by
the kernel, so it is simply taken over. A state directory is created with a
``.gitignore`` of ``*`` (see :func:`batuta._util.paths.ensure_state_dir`).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from batuta._util.files import atomic_write, flocked
from batuta._util.paths import ensure_state_dir
from batuta.errors import StateError
from batuta.runtime.spec import ServerSpec, ServerState, ServerStatus

STATE_FILE = "state.json"
STATE_LOCK = "state.lock"
APPLY_LOCK = "apply.lock"
FORMAT = 1

# "idle": an on-demand server, recorded but not running until a request wakes it.
Desired = Literal["running", "stopped", "idle"]


@dataclass(frozen=True)
class ServerRecord:
    """One server as state.json remembers it.

    The CLI writes ``spec``, ``desired`` and ``generation`` (bumped on every request);
    the supervisor writes the observed fields for the generation it runs.
    """

    spec: ServerSpec
    desired: Desired = "running"
    generation: int = 1
    state: ServerState = "starting"
    pid: int | None = None
    create_time: float | None = None
    pid_generation: int = 0  # the generation whose spec the recorded pid runs
    restarts: int = 0
    started_at: float | None = None
    ready_at: float | None = None
    last_exit: int | None = None
    message: str = ""
    stop_timeout: float = 10.0
    # Names the ${env:} values the requesting command handed to the supervisor (which
    # keeps them in memory only); "" when the spec refers to no variable.
    handoff: str = ""

    @property
    def name(self) -> str:
        """The server's name."""
        return self.spec.name

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = asdict(self)
        data["spec"] = self.spec.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServerRecord:
        """Inverse of :meth:`to_json`."""
        return cls(**{**data, "spec": ServerSpec.from_json(data["spec"])})

    def status(self, **overrides: Any) -> ServerStatus:
        """The record as a :class:`ServerStatus` (``overrides`` replace observed fields)."""
        status = ServerStatus(
            spec=self.spec,
            state=self.state,
            pid=self.pid,
            create_time=self.create_time,
            started_at=self.started_at,
            restarts=self.restarts,
            last_exit=self.last_exit,
            message=self.message,
        )
        return replace(status, **overrides) if overrides else status


@dataclass
class State:
    """The whole of state.json. ``extra`` keeps sections other parts of batuta own."""

    servers: dict[str, ServerRecord] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    _written: str = field(default="", repr=False, compare=False)  # last saved form

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        servers = {name: rec.to_json() for name, rec in sorted(self.servers.items())}
        return {**self.extra, "format": FORMAT, "servers": servers}


def read_state(state_dir: Path) -> State:
    """The current state (empty when there is none yet). No lock needed: writes are atomic."""
    path = Path(state_dir) / STATE_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return State()
    except OSError as exc:
        raise StateError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if data.get("format", FORMAT) != FORMAT:
            raise ValueError(f"unknown format {data.get('format')!r}")
        servers = {n: ServerRecord.from_json(r) for n, r in (data.get("servers") or {}).items()}
    except (ValueError, TypeError, KeyError) as exc:
        why = f"missing field {exc.args[0]!r}" if isinstance(exc, KeyError) else str(exc)
        raise StateError(
            f"{path} is corrupt ({why}); move it away and run again "
            "(servers it recorded keep running and are no longer tracked)"
        ) from exc
    extra = {k: v for k, v in data.items() if k not in ("format", "servers")}
    return State(servers=servers, extra=extra)


def write_state(state_dir: Path, state: State) -> None:
    """Replace state.json atomically. Callers hold :func:`locked_state` (or state.lock);
    inside it, call this to make changes visible before the block ends."""
    atomic_write(
        ensure_state_dir(state_dir) / STATE_FILE, json.dumps(state.to_json(), indent=2) + "\n"
    )
    state._written = json.dumps(state.to_json(), sort_keys=True)


@contextlib.contextmanager
def locked_state(state_dir: Path) -> Iterator[State]:
    """Read-modify-write transaction: yields the state; changes are saved on exit."""
    state_dir = ensure_state_dir(state_dir)
    with flocked(state_dir / STATE_LOCK):
        state = read_state(state_dir)
        state._written = json.dumps(state.to_json(), sort_keys=True)
        yield state
        if json.dumps(state.to_json(), sort_keys=True) != state._written:
            write_state(state_dir, state)


@contextlib.contextmanager
def apply_lock(state_dir: Path) -> Iterator[None]:
    """Make the caller the only ``batuta apply`` on ``state_dir`` until the block ends.

    Raises StateError naming the holder's pid when another process holds the lock.
    """
    path = ensure_state_dir(state_dir) / APPLY_LOCK
    with flocked(path, blocking=False) as fd:
        if fd is None:
            raise StateError(f"another batuta apply (pid {_holder(path)}) holds {path}")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)


def _holder(path: Path) -> str:
    with contextlib.suppress(OSError, ValueError):
        return str(int(path.read_text().strip()))
    return "unknown"


def desired_running(state: State) -> list[ServerRecord]:
    """Records the supervisor must keep alive (not stopped, crash-looped, exited, failed)."""
    idle = ("crashloop", "exited", "stopped", "failed", "idle")
    return [r for r in state.servers.values() if r.desired == "running" and r.state not in idle]
