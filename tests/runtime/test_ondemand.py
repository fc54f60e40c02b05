"""On-demand servers with a real supervisor and tiny real servers: recorded idle, woken
once by concurrent requests, stopped when unused, never while a request holds the lease."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from batuta._util.lease import Lease, lease_path
from batuta.errors import RuntimeStartError, StateError
from batuta.runtime.manager import Runtime
from batuta.runtime.ondemand import record_idle, unload, wake
from batuta.runtime.process import owned
from batuta.runtime.state import read_state
from tests.runtime.conftest import tiny_spec
from tests.runtime.test_manager import wait_for


def on_demand(name: str, port: int, idle: float = 600.0, *args: str) -> object:
    return tiny_spec(name, port, *args, start="on-demand", idle_timeout=idle, origin="manifest")


def test_recorded_idle_not_started(runtime: Runtime, free_port: int, state_dir: Path) -> None:
    status = record_idle(runtime, on_demand("od", free_port))  # type: ignore[arg-type]
    assert status.state == "idle" and status.pid is None
    rec = read_state(state_dir).servers["od"]
    assert (rec.desired, rec.state, rec.pid) == ("idle", "idle", None)
    assert runtime.status()["od"].state == "idle"
    # The supervisor watches over it asleep (a wake is then only a signal), and leaves
    # once nothing is on record.
    from batuta.runtime import daemon

    wait_for(lambda: daemon.supervisor_pid(state_dir), timeout=10)
    time.sleep(1.0)
    assert daemon.supervisor_alive(state_dir)
    runtime.stop_all()
    wait_for(lambda: not daemon.supervisor_alive(state_dir), timeout=15)


def test_concurrent_wakes_start_it_once(runtime: Runtime, free_port: int, state_dir: Path) -> None:
    record_idle(runtime, on_demand("od", free_port, 600.0, "--loading", "0.5"))  # type: ignore[arg-type]
    results: list[tuple[object, bool]] = []

    def one() -> None:
        results.append(wake(state_dir, "od", 20.0))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    assert sum(cold for _, cold in results) == 1  # one start asked for, three waited for it
    pids = {status.pid for status, _ in results}  # type: ignore[attr-defined]
    assert len(pids) == 1
    rec = read_state(state_dir).servers["od"]
    assert rec.state == "ready" and rec.restarts == 0
    status, cold = wake(state_dir, "od")
    assert not cold and status.pid == rec.pid  # warm: nothing asked for


def test_idle_timeout_stops_it_and_a_wake_restarts_it(
    runtime: Runtime, free_port: int, state_dir: Path
) -> None:
    record_idle(runtime, on_demand("od", free_port, 1.0))  # type: ignore[arg-type]
    first, _ = wake(state_dir, "od", 20.0)
    assert first.pid is not None
    wait_for(lambda: read_state(state_dir).servers["od"].state == "idle", timeout=15)
    rec = read_state(state_dir).servers["od"]
    assert rec.desired == "idle" and rec.pid is None and not owned(first.pid, first.create_time)
    assert rec.message == "stopped after 1s without a request (on-demand)"  # what status says
    log = (state_dir / "logs" / "od.log").read_text()
    assert "a request asks for it: starting (on-demand)" in log and rec.message in log
    assert runtime.status()["od"].state == "idle"
    again, cold = wake(state_dir, "od", 20.0)
    assert cold and again.pid not in (None, first.pid)


def test_never_stopped_with_a_request_in_flight(
    runtime: Runtime, free_port: int, state_dir: Path
) -> None:
    record_idle(runtime, on_demand("od", free_port, 0.5))  # type: ignore[arg-type]
    lease = Lease(lease_path(state_dir, "od"))
    try:
        status, _ = wake(state_dir, "od", 20.0)
        assert lease.enter()  # a request in flight
        unloads = lease.unloads()
        # Many idle timeouts later it still runs: the shared lock keeps it.
        time.sleep(3.0)
        rec = read_state(state_dir).servers["od"]
        assert rec.state == "ready" and rec.pid == status.pid
        assert lease.unloads() == unloads
        lease.leave()  # the request ends: now the timeout runs from here
        left_at = time.time()
        wait_for(lambda: read_state(state_dir).servers["od"].state == "idle", timeout=15)
        assert time.time() - left_at >= 0.5
        assert lease.unloads() == unloads + 1  # request handlers can tell it stopped
    finally:
        lease.close()


def test_a_request_cannot_enter_while_it_stops(
    runtime: Runtime, free_port: int, state_dir: Path
) -> None:
    from batuta._util.lease import release, take_exclusive

    path = lease_path(state_dir, "x")
    held = take_exclusive(path)
    assert held is not None
    lease = Lease(path)
    try:
        assert not lease.enter() and lease.count == 0
        release(held)
        assert lease.enter() and lease.count == 1
        assert take_exclusive(path) is None  # and the supervisor cannot take it now
    finally:
        lease.close()


def test_unload_and_load(runtime: Runtime, free_port: int, state_dir: Path) -> None:
    record_idle(runtime, on_demand("od", free_port))  # type: ignore[arg-type]
    assert unload(state_dir, "od") is False  # idle already
    status, cold = wake(state_dir, "od", 20.0)
    assert cold and status.pid is not None
    assert unload(state_dir, "od") is True
    rec = read_state(state_dir).servers["od"]
    assert (rec.desired, rec.state, rec.pid) == ("idle", "idle", None)
    assert rec.message == "unloaded by `batuta serve unload`"
    assert not owned(status.pid, status.create_time)


def test_unload_refuses_other_servers(runtime: Runtime, free_port: int, state_dir: Path) -> None:
    runtime.start(tiny_spec("always", free_port))
    with pytest.raises(StateError, match="not on-demand"):
        unload(state_dir, "always")
    with pytest.raises(StateError, match="not on record"):
        unload(state_dir, "nobody")
    with pytest.raises(StateError, match="not on record"):
        wake(state_dir, "nobody")


def test_a_server_that_cannot_start_fails_the_wake(
    runtime: Runtime, free_port: int, state_dir: Path
) -> None:
    spec = tiny_spec(
        "od", free_port, "--exit-after", "0", "--exit-code", "3", start="on-demand", restart="never"
    )
    record_idle(runtime, spec)
    with pytest.raises(RuntimeStartError, match="did not start"):
        wake(state_dir, "od", 20.0)


def test_re_recording_a_running_one_stops_it(
    runtime: Runtime, free_port: int, state_dir: Path
) -> None:
    record_idle(runtime, on_demand("od", free_port))  # type: ignore[arg-type]
    status, _ = wake(state_dir, "od", 20.0)
    record_idle(runtime, on_demand("od", free_port, 30.0))  # type: ignore[arg-type]
    wait_for(lambda: read_state(state_dir).servers["od"].state == "idle", timeout=15)
    assert not owned(status.pid, status.create_time)
    assert read_state(state_dir).servers["od"].spec.idle_timeout == 30.0


def test_stats_count_starts_and_stops(runtime: Runtime, free_port: int, state_dir: Path) -> None:
    from batuta.runtime.ondemand import counts, stats

    assert stats(state_dir)["stops"] == 0
    record_idle(runtime, on_demand("od", free_port))  # type: ignore[arg-type]
    before = counts.cold_starts
    wake(state_dir, "od", 20.0)
    unload(state_dir, "od")
    now = stats(state_dir)
    assert now["cold_starts"] == before + 1 and now["stops"] == 1
    assert set(now) == {"cold_starts", "evictions", "over_budget", "stops"}


def test_env_values_are_kept_for_a_wake_from_a_process_without_them(
    runtime: Runtime, free_port: int, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # apply hands the values over when it records the server; the gateway that wakes it
    # later does not have them, and never needs them.
    monkeypatch.setenv("OD_SECRET", "s3cr3t-value")
    spec = tiny_spec("od", free_port, start="on-demand", env={"TOKEN": "${env:OD_SECRET}"})
    record_idle(runtime, spec)
    monkeypatch.delenv("OD_SECRET")
    status, cold = wake(state_dir, "od", 20.0)
    assert cold and status.state == "ready"
    assert "s3cr3t-value" not in (state_dir / "state.json").read_text()
