"""Teardown: what batuta started for a manifest stops, the routing table goes, and the
result says so (the ``batuta down`` command only prints it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import batuta
from batuta.apply.teardown import DestroyResult, destroy, gone
from batuta.cli.main import main
from batuta.runtime import Runtime
from tests.apply.test_execute import manifest, processes_under
from tests.cli.test_loop_cmds import work  # noqa: F401  (the fixture)
from tests.conftest import _free_port


def test_destroy_returns_what_it_stopped(work: Path, capsys) -> None:  # noqa: F811
    manifest(work, {"a": {"port": _free_port()}}, "routes:\n  r: {targets: [a]}\n")
    assert main(["apply"]) == 0
    capsys.readouterr()
    heard: list[str] = []
    result = batuta.destroy(work / "batuta.yaml", echo=heard.append)
    assert result == DestroyResult(destroyed=("a",), removed_table=True, started=True)
    assert len(heard) == 1 and heard[0].startswith("server.a: Destroying... [pid ")
    assert Runtime(work / ".batuta").status() == {}
    assert Runtime(work / ".batuta").supervisor_pid() is None
    assert [p.cmdline() for p in processes_under(work)] == []
    assert destroy(work / "batuta.yaml") == DestroyResult()
    assert capsys.readouterr().out == ""  # the library prints nothing itself


def test_destroy_is_the_apply_packages_too() -> None:
    import batuta.apply

    assert batuta.apply.destroy is destroy and batuta.apply.DestroyResult is DestroyResult


def test_destroy_where_nothing_was_started(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("BATUTA_STATE_DIR", raising=False)
    assert destroy(tmp_path / "batuta.yaml") == DestroyResult(started=False)
    assert not (tmp_path / ".batuta").exists()


def test_gone() -> None:
    assert gone(None) and not gone(os.getpid())
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # exited and reaped: no process has this pid now
    assert gone(proc.pid)
