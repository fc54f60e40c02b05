"""state.json: atomic writes under a lock, corrupt files, and the exclusive apply lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from batuta._util.files import flocked
from batuta.errors import StateError
from batuta.runtime.spec import ServerSpec
from batuta.runtime.state import (
    APPLY_LOCK,
    STATE_FILE,
    ServerRecord,
    State,
    apply_lock,
    desired_running,
    locked_state,
    read_state,
    write_state,
)


def _spec(name: str = "local", port: int = 8081, **env: str) -> ServerSpec:
    return ServerSpec(
        name=name,
        backend="llamacpp",
        argv=("llama-server", "-m", "/m.gguf", "--port", str(port)),
        host="127.0.0.1",
        port=port,
        health_url=f"http://127.0.0.1:{port}/health",
        model_path="/m.gguf",
        env=dict(env),
    )


def test_empty_state_when_nothing_written(tmp_path: Path) -> None:
    state = read_state(tmp_path / ".batuta")
    assert state.servers == {} and state.extra == {}


def test_round_trip_keeps_every_field_and_extra_sections(tmp_path: Path) -> None:
    record = ServerRecord(
        spec=_spec(LLAMA_ARG_N_GPU_LAYERS="0"),
        generation=3,
        state="ready",
        pid=1234,
        create_time=1700000000.25,
        pid_generation=3,
        restarts=2,
        started_at=1700000001.0,
        ready_at=1700000002.0,
        last_exit=-9,
        message="killed by SIGKILL; restarting in 0.5s",
    )
    write_state(tmp_path, State(servers={"local": record}, extra={"applied": {"digest": "ab"}}))
    back = read_state(tmp_path)
    assert back.servers["local"] == record
    assert back.extra == {"applied": {"digest": "ab"}}
    data = json.loads((tmp_path / STATE_FILE).read_text())
    assert data["format"] == 1
    assert data["servers"]["local"]["spec"]["argv"][0] == "llama-server"


def test_state_never_copies_the_process_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SECRET_TOKEN_FOR_TEST", "s3cr3t-value")
    write_state(tmp_path, State(servers={"local": ServerRecord(spec=_spec())}))
    assert "s3cr3t-value" not in (tmp_path / STATE_FILE).read_text()


def test_status_of_a_record(tmp_path: Path) -> None:
    record = ServerRecord(spec=_spec(), state="ready", pid=7, restarts=1, last_exit=1)
    status = record.status()
    assert (status.name, status.state, status.pid, status.restarts, status.last_exit) == (
        "local",
        "ready",
        7,
        1,
        1,
    )
    assert record.status(state="exited", pid=None).state == "exited"


def test_locked_state_saves_changes_only(tmp_path: Path) -> None:
    with locked_state(tmp_path) as state:
        state.servers["a"] = ServerRecord(spec=_spec("a"))
    mtime = (tmp_path / STATE_FILE).stat().st_mtime_ns
    time.sleep(0.01)
    with locked_state(tmp_path) as state:
        assert "a" in state.servers
    assert (tmp_path / STATE_FILE).stat().st_mtime_ns == mtime


def test_concurrent_writers_lose_no_update(tmp_path: Path) -> None:
    def add(i: int) -> None:
        with locked_state(tmp_path) as state:
            time.sleep(0.002)
            state.servers[f"s{i}"] = ServerRecord(spec=_spec(f"s{i}", 9000 + i))

    threads = [threading.Thread(target=add, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(read_state(tmp_path).servers) == sorted(f"s{i}" for i in range(12))


@pytest.mark.parametrize(
    "content, why",
    [
        ("{not json", "Expecting"),
        ("[1, 2]", "not a JSON object"),
        ('{"format": 99, "servers": {}}', "unknown format"),
        ('{"format": 1, "servers": {"a": {"spec": {"name": "a"}}}}', "missing"),
    ],
)
def test_corrupt_state_is_a_clear_error(tmp_path: Path, content: str, why: str) -> None:
    (tmp_path / STATE_FILE).write_text(content)
    with pytest.raises(StateError) as info:
        read_state(tmp_path)
    assert str(tmp_path / STATE_FILE) in str(info.value)
    assert "corrupt" in str(info.value) and why in str(info.value)


def test_unreadable_state_is_a_state_error(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).mkdir()
    with pytest.raises(StateError, match="cannot read"):
        read_state(tmp_path)


def test_desired_running_skips_idle_records() -> None:
    state = State(
        servers={
            "a": ServerRecord(spec=_spec("a"), state="ready"),
            "b": ServerRecord(spec=_spec("b"), state="crashloop"),
            "c": ServerRecord(spec=_spec("c"), desired="stopped", state="stopping"),
            "d": ServerRecord(spec=_spec("d"), state="starting"),
        }
    )
    assert [r.name for r in desired_running(state)] == ["a", "d"]


def test_apply_lock_is_exclusive_and_names_the_holder(tmp_path: Path) -> None:
    with apply_lock(tmp_path):
        assert (tmp_path / APPLY_LOCK).read_text().strip() == str(os.getpid())
        with pytest.raises(StateError) as info, apply_lock(tmp_path):
            pass  # pragma: no cover - never entered
        assert f"another batuta apply (pid {os.getpid()}) holds" in str(info.value)
        assert str(tmp_path / APPLY_LOCK) in str(info.value)
    with apply_lock(tmp_path):  # released: can be taken again
        pass


def test_apply_lock_held_by_another_process(tmp_path: Path) -> None:
    code = (
        "import sys, time; from pathlib import Path; from batuta.runtime.state import apply_lock\n"
        "with apply_lock(Path(sys.argv[1])):\n"
        "    print('held', flush=True); time.sleep(30)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(StateError, match=f"pid {holder.pid}"), apply_lock(tmp_path):
            pass  # pragma: no cover
    finally:
        holder.kill()
        holder.wait()
    with apply_lock(tmp_path):  # the dead holder's lock is taken over
        assert (tmp_path / APPLY_LOCK).read_text().strip() == str(os.getpid())


def test_stale_lock_file_from_a_dead_pid_is_taken_over(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / APPLY_LOCK).write_text(f"{dead.pid}\n")
    with apply_lock(tmp_path):
        assert (tmp_path / APPLY_LOCK).read_text().strip() == str(os.getpid())
    assert (tmp_path / APPLY_LOCK).read_text() == ""


def test_apply_lock_holder_unknown_when_file_is_garbage(tmp_path: Path) -> None:
    (tmp_path / APPLY_LOCK).write_text("garbage")
    with (
        flocked(tmp_path / APPLY_LOCK),  # held without writing a pid
        pytest.raises(StateError, match=r"pid unknown"),
        apply_lock(tmp_path),
    ):
        pass  # pragma: no cover
