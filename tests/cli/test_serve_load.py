"""``batuta serve load|unload`` in-process, on a tiny real server recorded on demand."""

from __future__ import annotations

from pathlib import Path

import pytest

from batuta.cli.main import main
from batuta.runtime.manager import Runtime
from batuta.runtime.ondemand import record_idle
from batuta.runtime.state import read_state
from tests.runtime.conftest import no_leftover_processes, tiny_spec  # noqa: F401 - autouse guard


def test_load_then_unload(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    free_port: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    state = tmp_path / ".batuta"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BATUTA_STATE_DIR", str(state))
    runtime = Runtime(state)
    record_idle(runtime, tiny_spec("od", free_port, start="on-demand"))
    try:
        assert main(["serve", "load", "od", "--timeout", "20"]) == 0
        assert "od: started in" in capsys.readouterr().out
        assert read_state(state).servers["od"].state == "ready"
        assert main(["serve", "load", "od"]) == 0
        assert "od: already running" in capsys.readouterr().out
        assert main(["serve", "unload", "od"]) == 0
        assert "od: unloaded (idle)" in capsys.readouterr().out
        assert main(["serve", "unload", "od"]) == 0
        assert "od: already idle" in capsys.readouterr().out
        assert main(["serve", "unload", "nope"]) == 1
        assert "not on record" in capsys.readouterr().err
    finally:
        runtime.stop_all()
