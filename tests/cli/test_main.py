"""What every command shares: usage errors exit 2, before doing anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from batuta.cli.main import _ROOT_COMMANDS, _SERVE_COMMANDS, main

COMMANDS = [[name] for name in _ROOT_COMMANDS] + [["serve", name] for name in _SERVE_COMMANDS]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_an_unknown_option_is_a_usage_error(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main([*command, "--no-such-option"]) == 2
    assert "No such option '--no-such-option'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing was created


@pytest.mark.parametrize(
    "argv",
    [
        ["plan", "--out"],  # an option without its value
        ["logs"],  # a missing argument
        ["serve", "start"],  # a missing required option
        ["serve", "start", "--model", "m.gguf", "--restart", "sometimes"],  # not a choice
        ["serve", "stop", "a", "--all"],  # options that exclude each other
        ["serve", "health", "a", "--backend", "ollama"],
        ["serve", "query", "hi", "--route", "r", "--endpoint", "e"],
        ["serve", "bench", "--endpoint", "e", "--concurrency", "0"],
        ["serve", "bench", "--num-prompts", "1"],  # neither --endpoint nor --route
        ["serve", "select", "--latency", "instant"],
        ["serve", "pull", "--model", "http://example.com/m.gguf"],  # http needs --sha256
        ["apply", "--watch", "plan.json"],
    ],
    ids=" ".join,
)
def test_usage_errors_exit_2(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BATUTA_STATE_DIR", raising=False)
    monkeypatch.delenv("BATUTA_FILE", raising=False)
    assert main(argv) == 2, capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("shell", "marker"), [("bash", "complete -o"), ("zsh", "#compdef batuta"),
                                               ("fish", "complete --no-files --command batuta")])  # fmt: skip
def test_shell_completion_scripts_as_docs_cli_md_shows(shell: str, marker: str) -> None:
    import os
    import subprocess
    import sys

    script = Path(sys.executable).with_name("batuta")
    done = subprocess.run(
        [str(script)], env={**os.environ, "_BATUTA_COMPLETE": f"{shell}_source"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0 and marker in done.stdout, done.stderr
    words = {
        "COMP_WORDS": "batuta serve st",
        "COMP_CWORD": "2",
        "_BATUTA_COMPLETE": "bash_complete",
    }
    done = subprocess.run([str(script)], env={**os.environ, **words}, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.stdout.split() == ["plain,start", "plain,stop"]
