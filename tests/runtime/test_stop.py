"""Stopping and ownership with real processes started by the test itself."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from batuta.runtime.process import (
    UNKNOWN_EXIT,
    AdoptedProcess,
    create_time_of,
    group_alive,
    group_members,
    living_members,
    owned,
    signal_group,
    spawn,
)
from batuta.runtime.spec import ServerSpec
from batuta.runtime.stop import terminate

SLEEPER = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"]
STUBBORN = [
    sys.executable,
    "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('up', flush=True); time.sleep(60)",
]
# A leader that forks a grandchild into its group, then ends on SIGTERM.
FAMILY = [
    sys.executable,
    "-c",
    "import os, time\nif os.fork() == 0:\n    time.sleep(60)\nprint('up', flush=True)\n"
    "time.sleep(60)\n",
]


def _start(argv: list[str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
    return proc


def test_a_pid_whose_create_time_differs_is_never_signalled() -> None:
    proc = _start(SLEEPER)
    try:
        real = create_time_of(proc.pid)
        assert real is not None and owned(proc.pid, real)
        assert not owned(proc.pid, real - 100.0)
        assert terminate(proc.pid, real - 100.0, timeout=0.5) is False
        time.sleep(0.2)
        assert proc.poll() is None  # untouched
    finally:
        proc.kill()
        proc.wait()


def test_terminate_stops_the_process_with_sigterm() -> None:
    proc = _start(SLEEPER)
    assert terminate(proc.pid, create_time_of(proc.pid), timeout=5.0) is True
    assert proc.wait(timeout=2) == -signal.SIGTERM


def test_terminate_kills_after_the_timeout() -> None:
    proc = _start(STUBBORN)
    began = time.monotonic()
    assert terminate(proc.pid, create_time_of(proc.pid), timeout=0.5) is True
    assert proc.wait(timeout=2) == -signal.SIGKILL
    assert 0.5 <= time.monotonic() - began < 4


def test_terminate_takes_the_whole_process_group() -> None:
    proc = _start(FAMILY)
    family = psutil.Process(proc.pid).children()
    assert len(family) == 1
    assert terminate(proc.pid, create_time_of(proc.pid), timeout=5.0) is True
    proc.wait(timeout=2)
    assert living_members(proc.pid) == []
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in family)


def test_terminate_of_nothing() -> None:
    assert terminate(None, None) is False
    assert terminate(999_999_999, 1.0) is False


def test_signal_group_of_a_missing_group() -> None:
    assert signal_group(999_999_999, 0) is False
    assert not group_alive(999_999_999)
    assert living_members(999_999_999) == []


def test_signal_group_without_permission() -> None:
    assert signal_group(1, 0) in (True, False)  # init's group: allowed for root, never an error


def test_spawn_runs_in_its_own_session_and_logs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WHO", "the supervisor's own environment")  # never used for ${env:}
    spec = ServerSpec(
        name="x", backend="llamacpp",
        argv=(sys.executable, "-c", "import os, time; print('hello', os.environ['GREETING'], flush=True); time.sleep(60)"),
        host="127.0.0.1", port=1, health_url="http://127.0.0.1:1/", model_path="m",
        env={"GREETING": "${env:WHO}"},
    )  # fmt: skip
    log = tmp_path / "logs" / "x.log"
    proc = spawn(spec, log, {"WHO": "world"})
    try:
        assert proc.create_time == create_time_of(proc.pid)
        members = group_members(proc.pid)
        assert members[proc.pid] == pytest.approx(proc.create_time, abs=0.05)
        assert psutil.Process(proc.pid).as_dict(["pid"])["pid"] == proc.pid
        import os

        assert os.getpgid(proc.pid) == proc.pid and os.getsid(proc.pid) == proc.pid
        deadline = time.monotonic() + 5
        while "hello world" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "hello world" in log.read_text()
        assert proc.poll() is None
    finally:
        assert terminate(proc.pid, proc.create_time, timeout=2)
    assert proc.poll() == -signal.SIGTERM


def test_adopted_process_reports_an_unknown_exit() -> None:
    proc = _start(SLEEPER)
    adopted = AdoptedProcess(proc.pid, create_time_of(proc.pid) or 0.0)
    assert adopted.pid == proc.pid and adopted.poll() is None
    proc.kill()
    proc.wait()
    assert adopted.poll() == UNKNOWN_EXIT and adopted.create_time is not None


@pytest.mark.parametrize("pid", [None, 0])
def test_owned_needs_a_pid(pid) -> None:
    assert not owned(pid, 1.0)


def test_a_process_outside_its_own_group_gets_only_its_own_signal() -> None:
    # Same process group as the test runner: signalling the group would hit pytest itself.
    proc = subprocess.Popen(SLEEPER, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
    import os

    assert os.getpgid(proc.pid) == os.getpgid(0)
    assert terminate(proc.pid, create_time_of(proc.pid), timeout=5.0) is True
    assert proc.wait(timeout=2) == -signal.SIGTERM  # and we are still here
