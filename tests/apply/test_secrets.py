"""Secrets given to a server through ``${env:VAR}`` reach the process and nothing else.

The state records the reference as written; the command that applies hands the value to
the supervisor in memory, which expands it when it spawns.
"""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from batuta.apply.execute import apply
from batuta.runtime import Runtime
from batuta.runtime.process import expand_env_refs
from tests.apply.test_execute import manifest, work  # noqa: F401  (fixture)
from tests.conftest import _free_port

SECRET = "sk-test-0123456789abcdef-never-written"


def test_expand_env_refs_uses_the_values_handed_over() -> None:
    env = {"TOKEN": "v", "EMPTY": ""}
    assert expand_env_refs("--key=${env:TOKEN}", env) == "--key=v"
    assert expand_env_refs("${env:MISSING:-dflt}", env) == "dflt"
    assert expand_env_refs("${env:EMPTY:-dflt}", env) == "dflt"
    assert expand_env_refs("${env:MISSING}", env) == ""
    assert expand_env_refs("plain", env) == "plain"


def test_server_secrets_are_never_written_under_state(
    work: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SERVER_TOKEN", SECRET)
    port = _free_port()
    path = manifest(
        work,
        {"a": {"port": port, "env": "{HF_TOKEN: '${env:SERVER_TOKEN}'}"}},
        "routes:\n  default: {targets: [a]}\n",
    )
    out: list[str] = []
    apply(path, echo=out.append)
    state_dir = work / ".batuta"
    for file in state_dir.rglob("*"):
        if file.is_file():
            assert SECRET not in file.read_text(errors="replace"), file
    assert all(SECRET not in line for line in out)
    status = Runtime(state_dir).status()["a"]
    assert status.spec.env["HF_TOKEN"] == "${env:SERVER_TOKEN}"
    assert status.pid is not None
    assert psutil.Process(status.pid).environ()["HF_TOKEN"] == SECRET


def test_apply_without_the_variable_fails_before_anything_starts(
    work: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from batuta.errors import ManifestError

    monkeypatch.delenv("SERVER_TOKEN", raising=False)
    path = manifest(work, {"a": {"port": _free_port(), "env": "{HF_TOKEN: '${env:SERVER_TOKEN}'}"}})
    with pytest.raises(ManifestError, match="environment variable SERVER_TOKEN is not set"):
        apply(path, echo=lambda line: None)
    assert not (work / ".batuta" / "state.json").exists()
    assert Runtime(work / ".batuta").supervisor_pid() is None
