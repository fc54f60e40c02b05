"""The supervisor process: one per state directory, outliving the command that started it.

Files in the state directory:

- ``supervisor.lock``: flock held for the supervisor's whole life (the liveness truth);
- ``supervisor.pid``: ``{"pid", "create_time"}`` so commands can signal it safely;
- ``supervisor.log``: its own output (0600);
- ``supervisor.sock``: where commands hand over ``${env:}`` values (see ``handoff.py``).

Commands talk to it through state.json: they change a server's record under the state
lock (new generation, ``desired``) and send SIGHUP; the supervisor re-reads state.json
(also whenever its mtime changes, so a lost signal costs at most one tick) and writes
back what it observes. The supervisor exits by itself once nothing runs or waits to be
restarted; it decides so while holding the state lock, so a command that adds a server
at the same moment either wakes it in time or finds it gone and starts a new one.

A command that is about to request a start (``batuta serve start``) may start the
supervisor ahead of its request (:func:`warm_up`), so that the supervisor's own start-up
runs while the command imports and resolves what it needs. A supervisor started that way
waits :data:`LINGER` seconds for work before the idle rule applies.

The supervisor is started with batuta's own location prepended to ``PYTHONPATH`` (so it
imports this very batuta); it takes that addition back out of its environment as it
starts, so the servers it runs get the user's ``PYTHONPATH`` (or none), not batuta's.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from batuta._util.files import atomic_write, flocked
from batuta._util.paths import ensure_state_dir
from batuta.runtime import logs

if TYPE_CHECKING:
    from batuta.runtime import handoff
    from batuta.runtime.supervise import Seams, Supervisor

# What only the supervisor itself runs (the loop, the hand-off listener, the process
# table) is imported there: a command that merely starts or wakes one, first thing at its
# own start-up (warm_up), does not pay for it.

PID_FILE = "supervisor.pid"
LOCK_FILE = "supervisor.lock"
LOG_FILE = "supervisor.log"
_LOCK_RETRY = 2.0  # a command may hold the lock for an instant to test liveness
_USER_PATH = "_BATUTA_USER_PYTHONPATH"  # the user's PYTHONPATH before spawn_supervisor's
_LINGER_ENV = "_BATUTA_SUPERVISOR_LINGER"  # set by warm_up: seconds to wait for a request
LINGER = 3.0  # a command's own start-up and model resolution take well under this

# The supervisor's own entry (batuta/runtime/__main__.py): it boots without the CLI. The
# word "supervise" names the process in `ps`.
_BOOT = ("-m", "batuta.runtime", "supervise", "--state-dir")
_children: list[subprocess.Popen[bytes]] = []
_warming: dict[Path, subprocess.Popen[bytes]] = {}  # started by warm_up, per state directory


def supervisor_alive(state_dir: Path) -> bool:
    """Whether a supervisor holds ``state_dir``'s supervisor lock right now."""
    with flocked(Path(state_dir) / LOCK_FILE, blocking=False) as fd:
        return fd is None


def supervisor_pid(state_dir: Path) -> int | None:
    """The running supervisor's pid (verified by create time), or None."""
    try:
        data = json.loads((Path(state_dir) / PID_FILE).read_text())
        pid, create_time = int(data["pid"]), float(data["create_time"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    from batuta.runtime.process import owned

    return pid if owned(pid, create_time) else None


def nudge(state_dir: Path) -> int | None:
    """Make the supervisor re-read state.json, starting one if none runs.

    Call while holding the state lock so the supervisor cannot decide to exit in
    between. Returns the pid signalled, or None when a new supervisor was started
    (it reads state.json as it starts).
    """
    _reap()
    state_dir = Path(state_dir)
    _await_warm(state_dir)
    if supervisor_alive(state_dir):
        pid = supervisor_pid(state_dir)
        if pid is not None:
            os.kill(pid, signal.SIGHUP)
        # No valid pid file yet: it is starting and will read state.json after writing it.
        return pid
    spawn_supervisor(state_dir)
    return None


def warm_up(state_dir: Path) -> bool:
    """Start ``state_dir``'s supervisor now, ahead of a request this command is about to
    make, unless one runs. It waits :data:`LINGER` seconds for work before exiting idle;
    the request then only wakes it (:func:`nudge`). True when one was started."""
    _reap()
    state_dir = ensure_state_dir(Path(state_dir))
    warming = _warming.get(state_dir.resolve())
    # One this process started already (the console script's, before click) may not hold
    # its lock yet: a second would only find it taken and leave.
    if (warming is not None and warming.poll() is None) or supervisor_alive(state_dir):
        return False
    _warming[state_dir.resolve()] = spawn_supervisor(state_dir, linger=LINGER)
    return True


def _await_warm(state_dir: Path) -> None:
    # A supervisor this process started ahead of its request may still be booting: wait
    # until it holds its lock (or has left) instead of starting a second one, which would
    # only take CPU from it and leave again.
    popen = _warming.pop(state_dir.resolve(), None)
    deadline = time.monotonic() + _LOCK_RETRY
    while popen is not None and popen.poll() is None and time.monotonic() < deadline:
        if supervisor_alive(state_dir):
            return
        time.sleep(0.005)


def spawn_supervisor(state_dir: Path, linger: float = 0.0) -> subprocess.Popen[bytes]:
    """Start ``python -m batuta.runtime supervise --state-dir DIR`` detached (own session,
    no terminal); with ``linger`` it waits that many seconds for work before the idle rule applies."""
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.pop(_LINGER_ENV, None)
    if linger > 0:
        env[_LINGER_ENV] = repr(linger)
    # The supervisor must import this very batuta, whatever its working directory; it
    # removes the addition again (see _user_pythonpath) before it starts any server.
    root = str(Path(__file__).resolve().parents[2])
    env[_USER_PATH] = json.dumps(env.get("PYTHONPATH"))  # null when unset
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    log = logs.open_private(state_dir / LOG_FILE)
    try:
        popen = subprocess.Popen(
            [sys.executable, *_BOOT, str(state_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=state_dir,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        os.close(log)
    _children.append(popen)
    return popen


def _reap() -> None:
    # Supervisors we started are our children: collect the ones that exited.
    _children[:] = [p for p in _children if p.poll() is None]


def _say(message: str) -> None:
    logs.say(message)


def _linger() -> float:
    """Seconds to wait for work (from warm_up), taken out of the environment that the
    servers inherit."""
    raw = os.environ.pop(_LINGER_ENV, "")
    try:
        return max(0.0, min(float(raw), 60.0)) if raw else 0.0
    except ValueError:
        return 0.0


def _user_pythonpath() -> None:
    """Put PYTHONPATH back as the user had it before spawn_supervisor added batuta's
    location (this process has imported what it needs), so servers inherit theirs."""
    saved = os.environ.pop(_USER_PATH, None)
    if saved is None:
        return  # not started by spawn_supervisor: nothing was added
    try:
        user = json.loads(saved)
    except ValueError:
        return
    if isinstance(user, str):
        os.environ["PYTHONPATH"] = user
    else:
        os.environ.pop("PYTHONPATH", None)


def _acquire_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    deadline = time.monotonic() + _LOCK_RETRY
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if supervisor_pid(path.parent) is not None or time.monotonic() > deadline:
                os.close(fd)
                return None
            time.sleep(0.01)


def main(argv: list[str]) -> int:
    """``supervise --state-dir DIR``: run the supervisor of DIR (exit code 2 on bad usage)."""
    if len(argv) != 3 or argv[:2] != ["supervise", "--state-dir"] or not argv[2]:
        print("usage: python -m batuta.runtime supervise --state-dir DIR", file=sys.stderr)
        return 2
    return run(Path(argv[2]))


def run(state_dir: Path, seams: Seams | None = None) -> int:
    """The supervisor process's main loop. Returns its exit code."""
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    _user_pythonpath()
    idle_from = time.monotonic() + _linger()
    flags = {"reload": False, "term": False}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        flags["reload" if signum == signal.SIGHUP else "term"] = True

    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    previous_fd = signal.set_wakeup_fd(wake_w)
    # Handlers before the lock: a command may signal us as soon as it sees the lock held.
    handlers = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    for sig in _SIGNALS:
        signal.signal(sig, on_signal if sig != signal.SIGCHLD else _wake_only)
    try:
        return _serve(state_dir, seams, flags, wake_r, idle_from)
    finally:
        signal.set_wakeup_fd(previous_fd)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        os.close(wake_r)
        os.close(wake_w)


_SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)


def _wake_only(signum: int, frame: FrameType | None) -> None:
    """SIGCHLD: nothing to do but wake the loop (through the wakeup fd) to reap."""


def _serve(
    state_dir: Path, seams: Seams | None, flags: dict[str, bool], wake_r: int, idle_from: float
) -> int:
    from batuta.errors import StateError
    from batuta.runtime import handoff
    from batuta.runtime.process import create_time_of
    from batuta.runtime.state import STATE_FILE
    from batuta.runtime.supervise import Supervisor

    lock_fd = _acquire_lock(state_dir / LOCK_FILE)
    if lock_fd is None:
        _say("another supervisor owns this state directory; exiting")
        return 0
    pid = os.getpid()
    atomic_write(state_dir / PID_FILE, json.dumps({"pid": pid, "create_time": create_time_of(pid)}))
    _say(f"supervising {state_dir}")
    supervisor = Supervisor(state_dir, seams)
    try:
        listener = handoff.Listener(state_dir)
    except (OSError, StateError) as exc:
        # Servers that need no ${env:} values can still be run; those that do fail loudly.
        _say(f"cannot listen for commands: {exc}")
        listener = None
    state_path = state_dir / STATE_FILE
    seen = _mtime(state_path)
    supervisor.load()
    shutting_down = False
    try:
        while True:
            if flags["term"] and not shutting_down:
                _say("terminating: stopping every server")
                shutting_down = True
                supervisor.shutdown()
            mtime = _mtime(state_path)
            if (flags["reload"] or mtime != seen) and not shutting_down:
                flags["reload"], seen = False, mtime
                supervisor.load()
            timeout = supervisor.tick()
            if supervisor.idle():
                waiting = idle_from - time.monotonic()  # started ahead of a request
                if waiting > 0:
                    timeout = min(timeout, waiting)
                elif _exit_if_idle(state_dir, supervisor, lock_fd, listener):
                    _say("nothing left to supervise; exiting")
                    return 0
            if handoff.wait(wake_r, listener, timeout) and listener is not None:
                listener.serve(supervisor.receive)
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 512)
    finally:
        if listener is not None:
            listener.close()
        with contextlib.suppress(OSError):
            os.close(lock_fd)


def _exit_if_idle(
    state_dir: Path, supervisor: Supervisor, lock_fd: int, listener: handoff.Listener | None
) -> bool:
    # Decide under the state lock, and let go of the supervisor lock before the state
    # lock: a command that then adds a server sees no supervisor and starts a new one.
    # The socket goes first: it belongs to whoever holds the supervisor lock.
    from batuta.runtime.state import STATE_LOCK

    with flocked(state_dir / STATE_LOCK):
        supervisor.load(save=False)
        if not supervisor.idle():
            return False
        with contextlib.suppress(FileNotFoundError):
            (state_dir / PID_FILE).unlink()
        if listener is not None:
            listener.close()
        fcntl.flock(lock_fd, fcntl.LOCK_UN)
        return True


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0
