"""Ad-hoc starts and pulls as library calls: what ``batuta serve start`` and ``serve pull`` run."""

from __future__ import annotations

from pathlib import Path

import pytest

import batuta
from batuta.catalogue import CATALOGUE
from batuta.errors import ModelSourceError
from batuta.runtime import Runtime
from batuta.runtime.adhoc import adhoc_model, pull_model
from tests.cli.test_serve_run import fake_llama_server, here  # noqa: F401  (the fixture)
from tests.runtime.conftest import no_leftover_processes  # noqa: F401 - autouse guard
from tests.runtime.test_gguf import write_gguf


def test_start_adhoc_returns_the_ready_server(here: Path, free_port: int, monkeypatch) -> None:  # noqa: F811
    monkeypatch.setenv("BATUTA_LLAMA_SERVER", str(fake_llama_server(here)))
    write_gguf(here / "m.gguf", [("general.file_type", 4, 2)])
    heard: list[tuple[str, int, int | None]] = []
    status = batuta.start_adhoc(
        CATALOGUE["llamacpp"], "m.gguf", state_dir=here / ".batuta", port=free_port,
        restart="never", progress=lambda *step: heard.append(step),
    )  # fmt: skip
    try:
        assert (status.name, status.state, status.spec.origin) == (
            f"llamacpp-{free_port}",
            "ready",
            "adhoc",
        )
        assert status.spec.restart == "never" and status.spec.url.endswith(f":{free_port}")
        assert status.spec.model_path == str(here / "m.gguf")
        assert len(status.spec.model_digest) == 64  # the one spec builder records it too
    finally:
        Runtime(here / ".batuta").stop(status.name)
    assert status.name not in Runtime(here / ".batuta").status()  # an ad-hoc stop forgets it


def test_adhoc_model_of_each_kind(here: Path) -> None:  # noqa: F811
    assert adhoc_model("ollama", "llama3").registry == "ollama"
    hub = adhoc_model("vllm", "Qwen/Qwen2.5-0.5B")
    assert (hub.registry, str(hub.path)) == ("hf", "Qwen/Qwen2.5-0.5B")
    with pytest.raises(ModelSourceError, match="served by --backend ollama"):
        adhoc_model("llamacpp", "ollama://llama3")


def test_pull_model_of_a_file_resolves_it_under_the_lock(here: Path) -> None:  # noqa: F811
    path = write_gguf(here / "m.gguf", [("general.file_type", 4, 2)])
    resolved = batuta.pull_model("m.gguf", state_dir=here / ".batuta")
    assert resolved.path == path and len(resolved.digest) == 64
    assert (here / ".batuta" / "apply.lock").exists()  # taken, and let go
    resolved = pull_model("m.gguf", state_dir=here / ".batuta")  # again: no lock left held
    assert resolved.path == path
