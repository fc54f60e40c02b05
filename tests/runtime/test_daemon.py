"""The supervisor process's loop, run in-process with fake processes, and how commands
find, wake and start it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from batuta._util.files import flocked
from batuta.runtime import daemon
from batuta.runtime.process import create_time_of
from batuta.runtime.state import ServerRecord, locked_state, read_state
from batuta.runtime.supervise import Seams
from tests.runtime.test_supervise import World, spec


class ScriptedProc:
    """A fake server whose polls drive the supervisor's own signal handling."""

    def __init__(self, world: World, script: list[int]) -> None:
        self.pid, self.create_time, self.returncode = 4242, 1.0, None
        self.ignores_term, self.leftover = False, False
        self.script = script  # signals to send to ourselves, one per poll
        world.procs[self.pid] = self  # type: ignore[assignment]

    def poll(self) -> int | None:
        if self.script:
            os.kill(os.getpid(), self.script.pop(0))
        return self.returncode


@pytest.fixture
def handlers():
    saved = {
        s: signal.getsignal(s)
        for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)
    }
    yield saved
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_run_reloads_on_sighup_and_stops_everything_on_sigterm(tmp_path, handlers, capsys) -> None:
    world = World()
    with locked_state(tmp_path) as state:
        state.servers["s"] = ServerRecord(spec=spec())
    proc = ScriptedProc(world, [0, signal.SIGHUP, signal.SIGTERM])
    seams = Seams(
        clock=world.seams().clock, wall=world.seams().wall, spawner=lambda s, log, values, mark: proc,
        signaller=world.signal, prober=lambda url: "ready", owned=world.owned,
    )  # fmt: skip
    assert daemon.run(tmp_path, seams) == 0
    record = read_state(tmp_path).servers["s"]
    assert (record.state, record.desired, record.pid) == ("stopped", "stopped", None)
    assert (4242, signal.SIGTERM) in world.signals
    out = capsys.readouterr().out
    assert "terminating: stopping every server" in out and "nothing left to supervise" in out
    assert not (tmp_path / daemon.PID_FILE).exists()
    assert {s: signal.getsignal(s) for s in handlers} == handlers  # restored


def test_run_with_nothing_to_do_exits_at_once(tmp_path, handlers, capsys) -> None:
    assert daemon.run(tmp_path / "new") == 0
    assert "nothing left to supervise" in capsys.readouterr().out
    assert not daemon.supervisor_alive(tmp_path / "new")


def test_run_leaves_when_another_supervisor_owns_the_directory(tmp_path, handlers, capsys) -> None:
    (tmp_path / daemon.PID_FILE).write_text(
        json.dumps({"pid": os.getpid(), "create_time": create_time_of(os.getpid())})
    )
    with flocked(tmp_path / daemon.LOCK_FILE):
        assert daemon.run(tmp_path) == 0
    assert "another supervisor owns" in capsys.readouterr().out


def test_run_gives_up_on_a_lock_held_without_a_pid_file(tmp_path, handlers, monkeypatch) -> None:
    monkeypatch.setattr(daemon, "_LOCK_RETRY", 0.1)
    with flocked(tmp_path / daemon.LOCK_FILE):
        assert daemon.run(tmp_path) == 0


def test_supervisor_pid_needs_a_valid_pid_file(tmp_path) -> None:
    assert daemon.supervisor_pid(tmp_path) is None
    (tmp_path / daemon.PID_FILE).write_text("garbage")
    assert daemon.supervisor_pid(tmp_path) is None
    (tmp_path / daemon.PID_FILE).write_text(json.dumps({"pid": os.getpid(), "create_time": 1.0}))
    assert daemon.supervisor_pid(tmp_path) is None  # the pid is not the one recorded


def test_nudge_signals_a_live_supervisor(tmp_path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import signal, sys, time\n"
         "signal.signal(signal.SIGHUP, lambda *a: (print('HUP', flush=True), sys.exit(0)))\n"
         "print('up', flush=True)\ntime.sleep(30)\n"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout.readline().strip() == "up"
        with flocked(tmp_path / daemon.LOCK_FILE):  # as the supervisor holds it
            assert daemon.nudge(tmp_path) is None  # no pid file yet: it will read the state
            (tmp_path / daemon.PID_FILE).write_text(
                json.dumps({"pid": child.pid, "create_time": create_time_of(child.pid)})
            )
            assert daemon.nudge(tmp_path) == child.pid
        assert child.stdout.readline().strip() == "HUP"
        assert child.wait(timeout=5) == 0
    finally:
        child.kill()
        child.wait()


def test_the_hidden_cli_command_runs_the_supervisor(tmp_path, handlers, capsys) -> None:
    from batuta.cli.main import main

    assert main(["supervise", "--state-dir", str(tmp_path / "s")]) == 0
    assert "nothing left to supervise" in capsys.readouterr().out
    assert main(["--help"]) == 0
    assert "supervise" not in capsys.readouterr().out  # hidden


def test_the_supervisors_own_entry_runs_it(tmp_path, handlers, capsys) -> None:
    assert daemon.main(["supervise", "--state-dir", str(tmp_path / "s")]) == 0
    assert "nothing left to supervise" in capsys.readouterr().out
    assert daemon.main(["supervise"]) == 2
    assert "usage: python -m batuta.runtime supervise" in capsys.readouterr().err


def test_python_m_batuta_runtime_is_that_entry(monkeypatch, capsys) -> None:
    import runpy

    monkeypatch.setattr(sys, "argv", ["batuta.runtime", "supervise"])  # usage error: no run
    with pytest.raises(SystemExit) as info:
        runpy.run_module("batuta.runtime", run_name="__main__")
    assert info.value.code == 2
    assert "usage: python -m batuta.runtime supervise --state-dir DIR" in capsys.readouterr().err


def test_the_supervisor_boots_without_the_cli(tmp_path) -> None:
    # The command line spawn_supervisor runs, in a real process: no click, no batuta.cli.
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *daemon._BOOT, str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "nothing left to supervise" in done.stdout
    modules = {line.split("|")[-1].strip() for line in done.stderr.splitlines()[1:]}
    assert "batuta.runtime.daemon" in modules
    assert not {m for m in modules if m.startswith(("batuta.cli", "click"))}


def test_runtime_is_exported_lazily() -> None:
    import batuta.runtime as runtime
    from batuta.runtime.manager import Runtime

    assert runtime.Runtime is Runtime
    with pytest.raises(AttributeError):
        runtime.Nothing  # noqa: B018


def test_spawned_supervisor_gives_back_the_users_pythonpath(monkeypatch) -> None:
    # As `batuta supervise` finds its environment when spawn_supervisor started it.
    monkeypatch.setenv("PYTHONPATH", "/batuta/root")
    monkeypatch.setenv(daemon._USER_PATH, "null")
    daemon._user_pythonpath()
    assert "PYTHONPATH" not in os.environ and daemon._USER_PATH not in os.environ
    monkeypatch.setenv("PYTHONPATH", "/batuta/root:/user/lib")
    monkeypatch.setenv(daemon._USER_PATH, '"/user/lib"')
    daemon._user_pythonpath()
    assert os.environ["PYTHONPATH"] == "/user/lib"
    monkeypatch.setenv(daemon._USER_PATH, "garbage")
    daemon._user_pythonpath()  # unreadable: left as it is
    assert os.environ["PYTHONPATH"] == "/user/lib"
    daemon._user_pythonpath()  # not spawned by spawn_supervisor: nothing to undo
    assert os.environ["PYTHONPATH"] == "/user/lib"


def test_linger_is_read_once_and_bounded(monkeypatch) -> None:
    for raw, seconds in (("2.5", 2.5), ("garbage", 0.0), ("-1", 0.0), ("1e9", 60.0), ("", 0.0)):
        monkeypatch.setenv(daemon._LINGER_ENV, raw)
        assert daemon._linger() == seconds
        assert daemon._LINGER_ENV not in os.environ  # servers never see it
    assert daemon._linger() == 0.0  # started by nudge: the idle rule applies at once
