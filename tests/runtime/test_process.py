"""``create_time_of`` reads procfs on Linux: it must agree with psutil, whose create times
other parts of batuta (and older state files) hold, and see a zombie as gone."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from batuta.runtime.process import create_time_of, owned

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="procfs")


def test_create_time_agrees_with_psutil(tmp_path: Path) -> None:
    # A command name with a space and a parenthesis: the fields after it must still be found.
    odd = tmp_path / "odd (name"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", odd)
    child = subprocess.Popen([str(odd), "30"])
    try:
        assert psutil.Process(child.pid).name() == "odd (name"
        ours = create_time_of(child.pid)
        assert ours == psutil.Process(child.pid).create_time()
        assert owned(child.pid, ours)
        assert not owned(child.pid, (ours or 0) - 1)
    finally:
        child.kill()
        child.wait()


def test_zombie_and_missing_process_have_no_create_time() -> None:
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 5
    while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the child never exited"
        time.sleep(0.01)
    assert create_time_of(child.pid) is None  # exited, not yet reaped
    child.wait()
    assert create_time_of(child.pid) is None  # gone
