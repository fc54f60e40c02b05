"""Runtime with real processes: a real supervisor runs tiny real servers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from batuta.errors import RuntimeStartError, StateError
from batuta.runtime import daemon
from batuta.runtime.gateway import GATEWAY
from batuta.runtime.manager import Runtime
from batuta.runtime.process import create_time_of, find_marked, owned, spawn_mark_prefix
from batuta.runtime.state import ServerRecord, locked_state, read_state
from tests.runtime.conftest import tiny_spec


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def test_start_status_stop(runtime: Runtime, free_port: int, state_dir: Path) -> None:
    status = runtime.start(tiny_spec("a", free_port, "--loading", "0.3"))
    assert status.state == "ready" and status.pid and owned(status.pid, status.create_time)
    assert runtime.status()["a"].state == "ready"
    supervisor = runtime.supervisor_pid()
    assert supervisor and psutil.Process(supervisor).ppid() == os.getpid()
    server = psutil.Process(status.pid)
    assert server.ppid() == supervisor and os.getpgid(status.pid) == status.pid
    assert "tiny server starting" in runtime.log_path("a").read_text()
    assert runtime.stop("a") is True
    assert not server.is_running() or server.status() == psutil.STATUS_ZOMBIE
    assert "a" not in read_state(state_dir).servers
    wait_for(lambda: runtime.supervisor_pid() is None)  # it leaves once idle
    assert runtime.stop("a") is False


def test_start_is_idempotent_and_replaces_on_change(runtime: Runtime, free_port: int) -> None:
    first = runtime.start(tiny_spec("a", free_port))
    assert runtime.start(tiny_spec("a", free_port)).pid == first.pid
    changed = runtime.start(tiny_spec("a", free_port, "--say", "second version"))
    assert changed.pid != first.pid and not owned(first.pid, first.create_time)
    assert "second version" in runtime.log_path("a").read_text()


def test_killed_server_is_restarted_by_the_supervisor(runtime: Runtime, free_port: int) -> None:
    first = runtime.start(tiny_spec("a", free_port))
    os.kill(first.pid, signal.SIGKILL)
    status = wait_for(
        lambda: (s := runtime.status()["a"]).state == "ready" and s.pid != first.pid and s
    )
    assert status.restarts == 1 and status.last_exit == -9
    assert "killed by SIGKILL; restarting in 0.5s" in runtime.log_path("a").read_text()


def test_failed_start_raises_with_the_log_and_leaves_nothing(
    runtime: Runtime, free_port: int, state_dir: Path
) -> None:
    spec = tiny_spec("bad", free_port, "--exit-after", "0", "--exit-code", "3")
    with pytest.raises(RuntimeStartError) as info:
        runtime.start(spec)
    text = str(info.value)
    assert "server 'bad' (llamacpp) exited while starting (exit code 3)" in text
    assert "crashing with 3" in info.value.log_tail and "--- last log lines ---" in text
    assert "bad" not in read_state(state_dir).servers


def test_start_timeout(runtime: Runtime, free_port: int, state_dir: Path) -> None:
    with pytest.raises(RuntimeStartError, match=r"not ready after 0\.5s"):
        runtime.start(tiny_spec("slow", free_port, "--delay", "30"), timeout=0.5)
    assert read_state(state_dir).servers == {}


def test_port_in_use_is_refused_before_launching(
    runtime: Runtime, free_port: int, state_dir: Path
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port))
        s.listen()
        with pytest.raises(RuntimeStartError) as info:
            runtime.start(tiny_spec("a", free_port))
    assert f"port {free_port} on 127.0.0.1 is already in use by pid {os.getpid()}" in str(
        info.value
    )
    assert read_state(state_dir).servers == {} and runtime.supervisor_pid() is None


def test_port_taken_by_another_server(runtime: Runtime, free_port: int) -> None:
    runtime.start(tiny_spec("a", free_port))
    with pytest.raises(RuntimeStartError, match="already used by server 'a'"):
        runtime.start(tiny_spec("b", free_port))


def test_invalid_name(runtime: Runtime, free_port: int) -> None:
    with pytest.raises(RuntimeStartError, match="invalid server name"):
        runtime.start(tiny_spec("../evil", free_port))


def test_the_gateways_name_is_for_a_manifests_gateway_only(
    runtime: Runtime, free_port: int
) -> None:
    # An ad-hoc server may not take the one name no manifest server can have.
    with pytest.raises(RuntimeStartError, match="invalid server name '_gateway'"):
        runtime.start(tiny_spec(GATEWAY, free_port))
    assert read_state(runtime.state_dir).servers == {}


def test_start_without_waiting(runtime: Runtime, free_port: int) -> None:
    status = runtime.start(tiny_spec("a", free_port, "--delay", "0.5"), wait=False)
    assert status.state == "starting"
    wait_for(lambda: runtime.status()["a"].state == "ready")


def test_stop_all_by_origin(runtime: Runtime, free_port: int) -> None:
    from tests.conftest import _free_port

    runtime.start(tiny_spec("m", free_port, origin="manifest"), wait=False)
    runtime.start(tiny_spec("h", _free_port(), origin="adhoc"))
    assert runtime.stop_all(origin="manifest") == ["m"]
    assert list(runtime.status()) == ["h"]
    assert runtime.stop_all() == ["h"]


def test_unknown_record_for_wait(runtime: Runtime) -> None:
    with pytest.raises(StateError, match="not on record"):
        runtime._record("nope")


def _sleeper() -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout.readline().strip() == "up"
    return proc


def test_a_pid_with_another_create_time_is_never_signalled(
    runtime: Runtime, free_port: int, state_dir: Path
) -> None:
    runtime.start(tiny_spec("a", free_port))  # a supervisor is running
    victim = _sleeper()
    try:
        with locked_state(state_dir) as state:
            state.servers["impostor"] = ServerRecord(
                spec=tiny_spec("impostor", 1, restart="never"), state="ready", pid=victim.pid,
                create_time=(create_time_of(victim.pid) or 0) - 50, pid_generation=1,
            )  # fmt: skip
        assert runtime.status()["impostor"].state == "exited"
        assert runtime.stop("impostor") is True
        time.sleep(0.3)
        assert victim.poll() is None  # never signalled
        assert "impostor" not in runtime.status()
    finally:
        victim.kill()
        victim.wait()


def test_direct_stop_without_a_supervisor(runtime: Runtime, state_dir: Path) -> None:
    victim = _sleeper()
    with locked_state(state_dir) as state:
        state.servers["orphan"] = ServerRecord(
            spec=tiny_spec("orphan", 1), desired="stopped", state="stopped", pid=victim.pid,
            create_time=create_time_of(victim.pid), pid_generation=1,
        )  # fmt: skip
    assert runtime.stop("orphan", timeout=2) is True
    assert victim.wait(timeout=2) == -signal.SIGTERM


def test_dead_pid_shows_as_exited_and_a_new_supervisor_takes_over(
    runtime: Runtime, state_dir: Path, free_port: int
) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with locked_state(state_dir) as state:
        state.servers["gone"] = ServerRecord(
            spec=tiny_spec("gone", free_port, restart="never"), state="ready", pid=dead.pid,
            create_time=123.0, pid_generation=1,
        )  # fmt: skip
    status = runtime.status()["gone"]
    assert (
        status.state == "exited"
        and status.pid is None
        and f"process {dead.pid} is gone" in status.message
    )
    # status() started a supervisor for the record; it applied restart: never.
    wait_for(lambda: read_state(state_dir).servers["gone"].state == "exited")


def test_supervisor_killed_then_replaced_adopts_the_server(
    runtime: Runtime, free_port: int, state_dir: Path
) -> None:
    first = runtime.start(tiny_spec("a", free_port))
    old = runtime.supervisor_pid()
    assert old
    os.kill(old, signal.SIGKILL)
    os.waitpid(old, 0)
    assert owned(first.pid, first.create_time)  # the server outlives its supervisor
    status = runtime.status()["a"]  # ... and the next command brings a supervisor back
    assert status.pid == first.pid
    new = wait_for(runtime.supervisor_pid)
    assert new != old
    os.kill(first.pid, signal.SIGKILL)  # the adopted server is still supervised
    wait_for(lambda: (s := runtime.status()["a"]).state == "ready" and s.pid != first.pid)
    assert read_state(state_dir).servers["a"].last_exit is None  # not our child: unknown


def test_supervisor_sigterm_stops_everything(
    runtime: Runtime, free_port: int, state_dir: Path
) -> None:
    first = runtime.start(tiny_spec("a", free_port))
    supervisor = runtime.supervisor_pid()
    os.kill(supervisor, signal.SIGTERM)
    os.waitpid(supervisor, 0)
    assert not owned(first.pid, first.create_time)
    record = read_state(state_dir).servers["a"]
    assert (record.state, record.desired, record.pid) == ("stopped", "stopped", None)


def test_a_second_supervisor_for_the_same_directory_leaves(
    runtime: Runtime, free_port: int, state_dir: Path
) -> None:
    runtime.start(tiny_spec("a", free_port))
    extra = daemon.spawn_supervisor(state_dir)
    assert extra.wait(timeout=10) == 0
    assert (
        "another supervisor owns this state directory" in (state_dir / "supervisor.log").read_text()
    )


def test_replace_while_supervisor_is_down(
    runtime: Runtime, free_port: int, state_dir: Path
) -> None:
    first = runtime.start(tiny_spec("a", free_port))
    supervisor = runtime.supervisor_pid()
    os.kill(supervisor, signal.SIGKILL)
    os.waitpid(supervisor, 0)
    second = runtime.start(tiny_spec("a", free_port, "--say", "v2"))
    assert second.pid != first.pid and not owned(first.pid, first.create_time)
    assert read_state(state_dir).servers["a"].pid_generation == 2


def test_state_dir_spec_round_trip(runtime: Runtime, free_port: int, state_dir: Path) -> None:
    spec = tiny_spec("a", free_port, env={"TINY_MODE": "1"})
    runtime.start(spec)
    assert read_state(state_dir).servers["a"].spec == spec
    assert replace(spec, env={}).config_hash != spec.config_hash


def test_a_supervisor_dying_during_the_wait_is_replaced(runtime: Runtime, free_port: int) -> None:
    import threading

    def kill_supervisor() -> None:
        pid = wait_for(runtime.supervisor_pid)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)

    killer = threading.Thread(target=kill_supervisor)
    killer.start()
    status = runtime.start(tiny_spec("a", free_port, "--delay", "1.5"))
    killer.join()
    assert status.state == "ready" and runtime.supervisor_pid()
    # Whenever the supervisor died (even between spawning the server and saving its pid),
    # one server process runs, and it is the recorded one: none was left orphaned.
    marked = find_marked(spawn_mark_prefix(runtime.state_dir, "a"))
    assert [pid for pid, _, _ in marked] == [status.pid]


def test_a_corrupt_state_file_does_not_kill_the_supervisor(
    runtime: Runtime, free_port: int, state_dir: Path
) -> None:
    import urllib.request

    first = runtime.start(tiny_spec("a", free_port))
    supervisor = runtime.supervisor_pid()
    good = (state_dir / "state.json").read_text()
    (state_dir / "state.json").write_text("{ half a file")
    log = state_dir / "supervisor.log"
    wait_for(lambda: "is corrupt" in log.read_text())
    assert first.pid is not None
    os.kill(first.pid, signal.SIGKILL)  # ... and it keeps supervising what it knew

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{free_port}/health", timeout=1):
                return True
        except OSError:
            return False

    wait_for(answers, timeout=15)
    assert runtime.supervisor_pid() == supervisor
    (state_dir / "state.json").write_text(good)  # put right again: the new pid is saved
    record = wait_for(lambda: (r := read_state(state_dir).servers["a"]).pid != first.pid and r)
    assert owned(record.pid, record.create_time) and record.restarts == 1
    assert "state.json is readable again" in log.read_text()


def test_a_warmed_up_supervisor_takes_the_request_that_follows(
    runtime: Runtime, free_port: int, state_dir: Path
) -> None:
    assert daemon.warm_up(state_dir) is True  # a new state directory: one is started
    assert (state_dir / ".gitignore").is_file()  # made as every state directory is
    warm = wait_for(runtime.supervisor_pid)
    assert daemon.warm_up(state_dir) is False  # one runs: nothing more is started
    status = runtime.start(tiny_spec("a", free_port))
    assert status.state == "ready"
    assert runtime.supervisor_pid() == warm == psutil.Process(status.pid).ppid()
    # The server does not inherit the supervisor's instruction to wait.
    assert daemon._LINGER_ENV not in psutil.Process(status.pid).environ()
    runtime.stop("a")
    wait_for(lambda: runtime.supervisor_pid() is None)


def test_a_warmed_up_supervisor_without_a_request_leaves_by_itself(
    runtime: Runtime, state_dir: Path, monkeypatch
) -> None:
    monkeypatch.setattr(daemon, "LINGER", 1.0)
    began = time.monotonic()
    daemon.warm_up(state_dir)
    wait_for(runtime.supervisor_pid)
    assert daemon.supervisor_alive(state_dir)
    wait_for(lambda: not daemon.supervisor_alive(state_dir))
    assert time.monotonic() - began >= 1.0  # it waited for a request first
    assert "nothing left to supervise" in (state_dir / daemon.LOG_FILE).read_text()


def test_a_request_right_after_the_warm_up_waits_for_that_supervisor(
    runtime: Runtime, free_port: int, state_dir: Path
) -> None:
    # The supervisor is still booting when the request comes: no second one is started
    # (it would find the first one's lock taken, say so in the log, and leave).
    daemon.warm_up(state_dir)
    status = runtime.start(tiny_spec("a", free_port))
    assert status.state == "ready"
    assert runtime.supervisor_pid() == psutil.Process(status.pid).ppid()
    runtime.stop("a")
    wait_for(lambda: runtime.supervisor_pid() is None)
    assert "another supervisor" not in (state_dir / daemon.LOG_FILE).read_text()
