"""The console script before click: `serve tree` answered alike, `serve start`'s supervisor
started first."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batuta.cli import preclick
from batuta.runtime import daemon

# The console script's path (run) and click's (main), each reporting whether click loaded.
VIA_RUN = """
import atexit, sys
atexit.register(lambda: sys.stderr.write("CLICK: %s\\n" % ("click" in sys.modules)))
sys.argv = ["batuta", *sys.argv[1:]]
from batuta.cli.main import run
run()
"""
VIA_CLICK = """
import sys
from batuta.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def _python(code: str, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, env=env, timeout=60
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    # One engine on PATH and one key set, so that the marks are not all alike.
    fake = tmp_path / "bin" / "ollama"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    environ = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    environ.pop("BATUTA_LLAMA_SERVER", None)
    return {**environ, "PATH": str(fake.parent), "GROQ_API_KEY": "set"}


@pytest.mark.parametrize("argv", [["serve", "tree"], ["serve", "tree", "--json"]], ids=" ".join)
def test_serve_tree_without_click_prints_the_same_bytes(
    argv: list[str], env: dict[str, str]
) -> None:
    fast = _python(VIA_RUN, argv, env)
    slow = _python(VIA_CLICK, argv, env)
    assert fast.returncode == slow.returncode == 0, fast.stderr + slow.stderr
    assert b"CLICK: False" in fast.stderr  # answered before click was imported
    assert fast.stdout == slow.stdout
    assert fast.stdout.startswith(b"Model Serving Ecosystem\n" if len(argv) == 2 else b"{\n")
    assert "●".encode() in fast.stdout  # GROQ_API_KEY is set


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["serve", "tree", "--help"], b"Usage: batuta serve tree [OPTIONS]"),
        (["serve", "tree", "--no-such-option"], b"No such option"),
        (["serve", "tree", "--json", "extra"], b"unexpected extra argument"),
        (["serve", "--help"], b"Usage: batuta serve [OPTIONS] COMMAND"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)
def test_other_argv_forms_go_to_click(
    argv: list[str], expected: bytes, env: dict[str, str]
) -> None:
    assert preclick.answer(argv) is None
    done = _python(VIA_RUN, argv, env)
    assert b"CLICK: True" in done.stderr
    assert expected in done.stdout + done.stderr


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["serve", "start", "--model", "m.gguf"], (True, None)),
        (["serve", "start", "--model=m.gguf", "-f", "a.yaml"], (True, "a.yaml")),
        (["serve", "start", "--file=b.yaml", "--model", "m"], (True, "b.yaml")),
        (["serve", "start", "-fc.yaml", "--model", "m"], (True, "c.yaml")),
        (["serve", "start", "--model", "m", "--", "-f", "x.yaml"], (True, None)),
        (["serve", "start", "-f", "a.yaml"], (False, "a.yaml")),  # no --model: a usage error
        (["serve", "start", "--model", "m", "--help"], (False, None)),
        (["serve", "stop", "--model", "m"], (False, None)),
        (["serve"], (False, None)),
    ],
)
def test_which_serve_start_argv_starts_a_server(
    argv: list[str], expected: tuple[bool, str | None]
) -> None:
    assert preclick.start_file(argv) == expected


def test_warm_up_for_ignores_other_commands(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("BATUTA_STATE_DIR", str(tmp_path / "state"))
    assert preclick.warm_up_for(["serve", "list"]) is False
    assert not (tmp_path / "state").exists()


def test_warm_up_for_leaves_a_failure_to_the_command(tmp_path: Path, monkeypatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")  # a state directory that cannot be made
    monkeypatch.setenv("BATUTA_STATE_DIR", str(blocker / "state"))
    assert preclick.warm_up_for(["serve", "start", "--model", "m"]) is False


# Records, when click is first looked for, whether the supervisor was started already.
BEFORE_CLICK = """
import sys
from batuta.runtime import daemon
daemon.LINGER = 0.5
class Hook:
    def find_spec(self, name, path=None, target=None):
        if name == "click":
            sys.stderr.write("WARMING AT CLICK: %d\\n" % len(daemon._warming))
            sys.meta_path.remove(self)
        return None
sys.meta_path.insert(0, Hook())
sys.argv = ["batuta", *sys.argv[1:]]
from batuta.cli.main import run
run()
"""


def test_serve_start_spawns_its_supervisor_before_importing_click(
    tmp_path: Path, env: dict[str, str]
) -> None:
    state = tmp_path / "state"
    argv = ["serve", "start", "--backend", "llamacpp", "--model", str(tmp_path / "no.gguf")]
    done = _python(BEFORE_CLICK, argv, {**env, "BATUTA_STATE_DIR": str(state)})
    assert b"WARMING AT CLICK: 1" in done.stderr, done.stderr
    assert done.returncode == 1, done.stderr  # the model does not exist
    # It leaves by itself once it has waited for a request; the command's own warm-up
    # started no second one.
    log_file = state / daemon.LOG_FILE
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (
        "nothing left to supervise" not in (log_file.read_text() if log_file.exists() else "")
        or daemon.supervisor_alive(state)
    ):
        time.sleep(0.05)
    assert not daemon.supervisor_alive(state)
    log = log_file.read_text()
    assert "another supervisor" not in log
    assert log.count("nothing left to supervise") == 1, log


def test_a_command_that_starts_a_server_does_not_import_the_supervisors_loop() -> None:
    # The command competes for the CPU with the supervisor it has just started.
    code = "import sys, batuta.runtime.manager, batuta.runtime.adhoc; print(sorted(sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    loaded = done.stdout
    assert "batuta.runtime.manager" in loaded and "batuta.runtime.supervise'" not in loaded
    assert "batuta.runtime.ondemand_supervise" not in loaded


@pytest.mark.parametrize("argv", [["serve", "tree"], ["serve", "tree", "--json"]], ids=" ".join)
def test_the_answer_in_process_is_the_click_commands(argv: list[str], capsys) -> None:
    from batuta.cli.main import main

    assert preclick.answer(argv) == 0
    fast = capsys.readouterr().out
    assert main(argv) == 0
    assert capsys.readouterr().out == fast


def test_warm_up_for_starts_the_state_directorys_supervisor(tmp_path: Path, monkeypatch) -> None:
    state = tmp_path / "state"
    monkeypatch.setenv("BATUTA_STATE_DIR", str(state))
    monkeypatch.setattr(daemon, "LINGER", 0.5)
    assert preclick.warm_up_for(["serve", "start", "--model", "m.gguf"]) is True
    assert preclick.warm_up_for(["serve", "start", "--model", "m.gguf"]) is False  # booting
    deadline = time.monotonic() + 15
    log = state / daemon.LOG_FILE
    while time.monotonic() < deadline and "nothing left" not in (
        log.read_text() if log.exists() else ""
    ):
        time.sleep(0.05)
    while time.monotonic() < deadline and daemon.supervisor_alive(state):
        time.sleep(0.05)
    assert not daemon.supervisor_alive(state)
    assert "another supervisor" not in log.read_text()


@pytest.mark.parametrize(
    "argv, code, expected",
    [(["serve", "tree"], 0, "Model Serving Ecosystem"), (["serve", "nope"], 2, "No such command")],
)
def test_run_exits_with_the_answers_code(
    argv: list[str], code: int, expected: str, monkeypatch, capsys
) -> None:
    from batuta.cli.main import run

    monkeypatch.setattr(sys, "argv", ["batuta", *argv])
    with pytest.raises(SystemExit) as exited:
        run()
    assert exited.value.code == code
    out = capsys.readouterr()
    assert expected in out.out + out.err


def test_the_click_names_are_still_importable_from_main() -> None:
    import batuta.cli.main as main_module
    from batuta.cli import root

    assert main_module.cli is root.cli and main_module._SERVE_COMMANDS is root._SERVE_COMMANDS
    with pytest.raises(AttributeError, match="no_such_name"):
        main_module.no_such_name  # noqa: B018
