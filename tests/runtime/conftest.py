"""Fixtures for runtime tests: state directories, tiny real servers, and a guard that
fails any test leaving a process behind."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from batuta.runtime.spec import ServerSpec

TINY = Path(__file__).with_name("tiny_server.py")


def _descendants() -> dict[int, psutil.Process]:
    out: dict[int, psutil.Process] = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                out[proc.pid] = proc
            else:
                os.waitpid(proc.pid, os.WNOHANG)
        except (psutil.NoSuchProcess, ChildProcessError):
            pass
    return out


def _mentioning(text: str) -> dict[int, psutil.Process]:
    """Processes (and their children) whose command line names ``text``: supervisors
    started by a CLI subprocess are no longer our descendants once that CLI exits."""
    out: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(text in part for part in proc.info["cmdline"] or ()):
                out[proc.pid] = proc
                out.update({c.pid: c for c in proc.children(recursive=True)})
        except psutil.Error:
            pass
    return out


def leftovers(before: set[int], tmp: Path, wait: float = 8.0) -> list[psutil.Process]:
    """Processes started since ``before`` that are still alive after ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        alive = {**_descendants(), **_mentioning(str(tmp))}
        alive = {pid: p for pid, p in alive.items() if pid not in before and pid != os.getpid()}
        if not alive or time.monotonic() > deadline:
            return list(alive.values())
        time.sleep(0.1)


@pytest.fixture(autouse=True)
def no_leftover_processes(tmp_path: Path) -> Iterator[None]:
    """Fail a test that leaves a process running (and stop those it left, by pid)."""
    before = set(_descendants())
    yield
    left = leftovers(before, tmp_path)
    if left:
        described = []
        for proc in left:
            try:
                described.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(left, timeout=3)
        pytest.fail("processes left running:\n" + "\n".join(described))


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / ".batuta"


def tiny_spec(name: str, port: int, *args: str, **fields: object) -> ServerSpec:
    """A spec running tests/runtime/tiny_server.py on ``port``."""
    values: dict[str, object] = {
        "name": name,
        "backend": "llamacpp",
        "argv": (sys.executable, str(TINY), str(port), *args),
        "host": "127.0.0.1",
        "port": port,
        "health_url": f"http://127.0.0.1:{port}/health",
        "model_path": "tiny",
        "ready_timeout": 20.0,
    }
    values.update(fields)
    return ServerSpec(**values)  # type: ignore[arg-type]


@pytest.fixture
def runtime(state_dir: Path) -> Iterator[object]:
    """A Runtime on a fresh state directory; everything it runs is stopped afterwards."""
    from batuta.runtime.manager import Runtime

    rt = Runtime(state_dir)
    yield rt
    rt.stop_all()
