"""What a real server's environment holds: ``${env:}`` values from the command that asked
for it (across restarts and supervisor respawns), the user's PYTHONPATH, private logs."""

from __future__ import annotations

import json
import os
import signal
import stat
import urllib.request
from pathlib import Path

import pytest

from batuta.errors import RuntimeStartError
from batuta.runtime import daemon, handoff
from batuta.runtime.manager import Runtime
from batuta.runtime.state import read_state
from tests.runtime.conftest import tiny_spec
from tests.runtime.test_manager import wait_for

SECRET = "sk-e2e-0123456789-first"
ROTATED = "sk-e2e-9876543210-second"


def env_of(port: int, name: str) -> str | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/env/{name}", timeout=5) as reply:
        value = json.loads(reply.read())["value"]
    assert value is None or isinstance(value, str)
    return value


def kill_supervisor(runtime: Runtime) -> None:
    pid = runtime.supervisor_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)  # our child: started by this test's Runtime


def no_secret_on_disk(state_dir: Path, *secrets: str) -> None:
    for file in state_dir.rglob("*"):
        if file.is_file() and not file.name.endswith(".log"):
            text = file.read_text(errors="replace")
            assert all(s not in text for s in secrets), file


def test_restarts_keep_the_value_and_a_respawned_supervisor_never_blanks_it(
    runtime: Runtime, free_port: int, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TINY_SECRET", SECRET)
    spec = tiny_spec("a", free_port, env={"TINY_TOKEN": "${env:TINY_SECRET}"})
    first = runtime.start(spec)
    assert env_of(free_port, "TINY_TOKEN") == SECRET
    assert read_state(state_dir).servers["a"].spec.env == {"TINY_TOKEN": "${env:TINY_SECRET}"}

    # A crash while the supervisor that got the value lives: the same value comes back,
    # even though the command's environment has changed since.
    monkeypatch.setenv("TINY_SECRET", ROTATED)
    assert first.pid is not None
    os.kill(first.pid, signal.SIGKILL)
    second = wait_for(
        lambda: (s := runtime.status()["a"]).state == "ready" and s.pid != first.pid and s
    )
    assert env_of(free_port, "TINY_TOKEN") == SECRET

    # The supervisor dies; `batuta status` from a shell without the variable brings a new
    # one, which adopts the server. The server then crashes: it has no value to give it.
    kill_supervisor(runtime)
    monkeypatch.delenv("TINY_SECRET")
    assert runtime.status()["a"].pid == second.pid
    wait_for(runtime.supervisor_pid)
    assert second.pid is not None
    os.kill(second.pid, signal.SIGKILL)
    failed = wait_for(lambda: (s := runtime.status()["a"]).state == "failed" and s, timeout=15)
    assert failed.pid is None
    assert "TINY_SECRET" in failed.message and "batuta apply" in failed.message
    assert "needs the value of TINY_SECRET" in runtime.log_path("a").read_text()
    with pytest.raises(OSError):
        env_of(free_port, "TINY_TOKEN")  # not restarted with an empty value: not at all

    # Running the command again from a shell where it is set starts it with that value.
    monkeypatch.setenv("TINY_SECRET", ROTATED)
    runtime.start(spec)
    assert env_of(free_port, "TINY_TOKEN") == ROTATED
    no_secret_on_disk(state_dir, SECRET, ROTATED)


def test_a_variable_missing_from_the_command_is_an_error_before_anything_starts(
    runtime: Runtime, free_port: int, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TINY_UNSET", raising=False)
    spec = tiny_spec("a", free_port, "--say=${env:TINY_UNSET}")
    with pytest.raises(RuntimeStartError, match=r"TINY_UNSET is not set in this environment"):
        runtime.start(spec)
    assert read_state(state_dir).servers == {} and runtime.supervisor_pid() is None


def test_a_default_stands_in_for_an_unset_variable(
    runtime: Runtime, free_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TINY_UNSET", raising=False)
    runtime.start(tiny_spec("a", free_port, env={"TINY_TOKEN": "${env:TINY_UNSET:-dflt}"}))
    assert env_of(free_port, "TINY_TOKEN") == "dflt"


@pytest.mark.parametrize("user_path", [None, "/nonexistent/user/site-packages"])
def test_servers_get_the_users_pythonpath_not_batutas(
    runtime: Runtime, free_port: int, monkeypatch: pytest.MonkeyPatch, user_path: str | None
) -> None:
    if user_path is None:
        monkeypatch.delenv("PYTHONPATH", raising=False)
    else:
        monkeypatch.setenv("PYTHONPATH", user_path)
    runtime.start(tiny_spec("a", free_port))
    assert env_of(free_port, "PYTHONPATH") == user_path
    assert env_of(free_port, "_BATUTA_USER_PYTHONPATH") is None


def test_logs_are_private(runtime: Runtime, free_port: int, state_dir: Path) -> None:
    old = os.umask(0o022)
    try:
        runtime.start(tiny_spec("a", free_port))
    finally:
        os.umask(old)
    for path in (runtime.log_path("a"), state_dir / daemon.LOG_FILE):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(runtime.log_path("a").parent.stat().st_mode) == 0o700


def test_a_supervisor_that_cannot_listen_fails_the_start_cleanly(
    runtime: Runtime, free_port: int, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TINY_SECRET", SECRET)
    monkeypatch.setattr(handoff, "HANDOFF_TIMEOUT", 1.0)
    (state_dir / handoff.SOCKET).mkdir(parents=True)  # the socket's path is taken
    spec = tiny_spec("a", free_port, env={"TINY_TOKEN": "${env:TINY_SECRET}"})
    with pytest.raises(RuntimeStartError) as info:
        runtime.start(spec)
    assert "cannot hand the values of TINY_SECRET to the supervisor" in str(info.value)
    assert SECRET not in str(info.value)
    assert read_state(state_dir).servers == {}
    assert "cannot listen for commands" in (state_dir / daemon.LOG_FILE).read_text()


def test_a_supervisor_replaced_during_the_start_gets_the_values_again(
    runtime: Runtime, free_port: int, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    monkeypatch.setenv("TINY_SECRET", SECRET)

    def kill_supervisor_once_the_server_runs() -> None:
        wait_for(lambda: (r := read_state(state_dir).servers.get("a")) and r.pid)
        kill_supervisor(runtime)

    killer = threading.Thread(target=kill_supervisor_once_the_server_runs)
    killer.start()
    spec = tiny_spec("a", free_port, "--delay", "1.5", env={"TINY_TOKEN": "${env:TINY_SECRET}"})
    first = runtime.start(spec)  # replaces the supervisor, and hands the values over again
    killer.join()
    assert first.state == "ready" and env_of(free_port, "TINY_TOKEN") == SECRET
    assert first.pid is not None
    os.kill(first.pid, signal.SIGKILL)  # the replacement can restart it: it has them
    wait_for(lambda: (s := runtime.status()["a"]).state == "ready" and s.pid != first.pid)
    assert env_of(free_port, "TINY_TOKEN") == SECRET
