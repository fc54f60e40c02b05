"""Backend selection: the product's table, privacy filtering, preferences, route ordering."""

from __future__ import annotations

import dataclasses
import os
import stat
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from batuta.catalogue import CATALOGUE, allowed_in_tier
from batuta.errors import BatutaError
from batuta.selection import (
    COST_TIERS,
    LATENCY_TIERS,
    PRIVACY_TIERS,
    THROUGHPUT_TIERS,
    Availability,
    BackendSelector,
    availability,
    backend_key,
    default_backend,
    default_port,
    env_port,
    llama_server_command,
    order_targets,
)


def keys(selector: BackendSelector) -> list[str]:
    return [r.backend.key for r in selector.recommend()]


@pytest.mark.parametrize(
    ("latency", "privacy", "table"),
    [
        ("realtime", "sovereign", ["realizar", "llamacpp"]),
        ("realtime", "standard", ["groq", "realizar"]),
        ("realtime", "private", ["groq", "realizar"]),
        ("interactive", "sovereign", ["realizar", "ollama"]),
        ("batch", "sovereign", ["realizar", "ollama"]),
        ("interactive", "standard", ["together", "huggingface"]),
        ("batch", "private", ["together", "huggingface"]),
    ],
)
@pytest.mark.parametrize("cost", COST_TIERS)
@pytest.mark.parametrize("throughput", THROUGHPUT_TIERS)
def test_seed_table(latency, privacy, table, cost, throughput) -> None:
    selector = BackendSelector(latency=latency, privacy=privacy, cost=cost, throughput=throughput)
    assert [key for key, _ in selector.seed_choice()] == table
    got = keys(selector)
    # the table's picks lead, minus what the privacy tier forbids (groq is public)
    allowed = [k for k in table if allowed_in_tier(CATALOGUE[k], privacy)]
    assert got[: len(allowed)] == allowed
    assert len(got) == len(set(got)) >= 2


@pytest.mark.parametrize("latency", LATENCY_TIERS)
@pytest.mark.parametrize("privacy", PRIVACY_TIERS)
@pytest.mark.parametrize("cost", COST_TIERS)
def test_recommendations_respect_privacy_and_explain(latency, privacy, cost) -> None:
    picks = BackendSelector(latency=latency, privacy=privacy, cost=cost).recommend()
    assert picks
    for r in picks:
        assert allowed_in_tier(r.backend, privacy)
        assert r.reason and "\n" not in r.reason


def test_private_tier_still_gets_answers() -> None:
    got = keys(BackendSelector(privacy="private"))
    assert got[:4] == ["azure-openai", "bedrock", "vertex", "hf-endpoints"]


def test_high_throughput_and_performance_alternatives() -> None:
    assert keys(BackendSelector(throughput="high"))[2:4] == ["vllm", "tgi"]
    got = keys(BackendSelector(cost="performance"))
    assert got.index("openai") < got.index("llamacpp")


def test_preferred_first_disabled_removed_aliases_normalised() -> None:
    selector = BackendSelector(
        latency="realtime",
        privacy="sovereign",
        preferred=("llama.cpp", "ollama"),
        disabled=("realizar",),
    )
    assert selector.preferred == ("llamacpp", "ollama")
    picks = selector.recommend()
    assert [r.backend.key for r in picks][:2] == ["llamacpp", "ollama"]
    assert picks[0].reason.startswith("preferred; realtime + sovereign")
    assert picks[1].reason == "preferred"
    assert "realizar" not in [r.backend.key for r in picks]


def test_rejected_preferences() -> None:
    selector = BackendSelector(
        privacy="sovereign", preferred=("groq", "ollama"), disabled=("ollama",)
    )
    assert "groq" not in keys(selector)
    assert selector.rejected_preferences() == [
        ("groq", "a public backend is not allowed in the sovereign tier"),
        ("ollama", "also disabled"),
    ]


def test_invalid_requirements() -> None:
    with pytest.raises(BatutaError, match=r"latency must be one of .* not 'fast'"):
        BackendSelector(latency="fast")  # type: ignore[arg-type]
    with pytest.raises(BatutaError, match=r"unknown backend 'olama' \(did you mean 'ollama'\?\)"):
        BackendSelector(preferred=("olama",))
    assert backend_key("LLAMA-CPP") == "llamacpp"


def test_order_targets_follows_the_tier() -> None:
    declared = [("small", "llamacpp"), ("cloud", "together"), ("fast", "groq"), ("az", "azure")]
    tier = SimpleNamespace(latency="realtime", privacy="standard", cost="balanced")
    names, why = order_targets(declared, tier)
    assert names == ["fast", "small", "cloud", "az"]
    assert why.startswith("chosen for realtime/standard/balanced: fast (realtime: LPU")
    names, why = order_targets(
        declared, SimpleNamespace(latency="batch", privacy="private", cost="x")
    )
    assert names == ["az", "small"]
    assert why.endswith("2 declared target(s) excluded by the private tier")
    names, _ = order_targets(
        declared, SimpleNamespace(latency="x", privacy="standard", cost="minimal")
    )
    assert names[:1] == ["small"]  # free first
    assert order_targets([("x", "nope")], tier) == (
        [],
        "chosen for realtime/standard/balanced: nothing fits; 1 declared target(s) excluded by the standard tier",
    )


def test_environment_defaults() -> None:
    assert default_backend({"BATUTA_SERVE_BACKEND": "llama.cpp"}).key == "llamacpp"
    with pytest.raises(BatutaError, match="BATUTA_SERVE_BACKEND: unknown backend 'lamacpp'"):
        default_backend({"BATUTA_SERVE_BACKEND": "lamacpp"})
    assert default_port({}) == 8080
    assert default_port({}, CATALOGUE["ollama"]) == 11434  # the backend's own port
    assert default_port({"BATUTA_SERVE_PORT": "9000"}, CATALOGUE["ollama"]) == 9000
    assert env_port({}) is None and env_port({"BATUTA_SERVE_PORT": ""}) is None
    assert default_port({"BATUTA_SERVE_PORT": "9000"}) == 9000
    for bad in ("http", "0", "70000"):
        with pytest.raises(BatutaError, match="BATUTA_SERVE_PORT must be a port number"):
            default_port({"BATUTA_SERVE_PORT": bad})
    assert default_backend().key  # the real environment works too
    assert default_port() >= 1


def _executable(path: Path) -> Path:
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_default_backend_is_realizar_when_installed_else_the_first_gguf_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing but what this test puts there
    # llama-cpp-python is installed here: without realizar, llama.cpp serves the file.
    assert default_backend({}).key == "llamacpp"
    no_llamacpp = {"BATUTA_LLAMA_SERVER": str(tmp_path / "absent")}
    assert default_backend(no_llamacpp).key == "realizar"  # nothing at all: its install hint
    _executable(tmp_path / "llamafile")
    assert default_backend(no_llamacpp).key == "llamafile"
    _executable(tmp_path / "realizar")
    assert default_backend({}).key == "realizar"
    assert default_backend({"BATUTA_SERVE_BACKEND": "llamafile"}).key == "llamafile"


def test_availability_of_remote_backends_never_shows_the_key() -> None:
    secret = "gsk_do_not_print_me"
    status = availability(CATALOGUE["groq"], {"GROQ_API_KEY": secret})
    assert (status.ready, status.detail) == (True, "GROQ_API_KEY is set")
    assert availability(CATALOGUE["groq"], {}).ready is False
    assert availability(CATALOGUE["modal"], {}).detail == "MODAL_API_KEY optional, not set"
    keyless = dataclasses.replace(CATALOGUE["groq"], api_key_env=None)
    assert availability(keyless, {}) == Availability(None, "no key needed")


def test_availability_of_local_backends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    venv_bin = tmp_path / "venv" / "bin"  # executables beside the interpreter count too
    venv_bin.mkdir(parents=True)
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    assert availability(CATALOGUE["ollama"], {}).ready is False
    ollama = _executable(tmp_path / "ollama")
    assert availability(CATALOGUE["ollama"], {}).detail == f"ollama at {ollama}"
    assert availability(CATALOGUE["gpt4all"], {}).ready is None
    # llama.cpp: llama-server (BATUTA_LLAMA_SERVER, then PATH), else llama-cpp-python
    assert llama_server_command({}) == (sys.executable, "-m", "llama_cpp.server")
    detail = availability(CATALOGUE["llamacpp"], {}).detail
    assert detail.startswith("python -m llama_cpp.server") and detail.endswith("(engine: python)")
    assert llama_server_command({}, engine="server") is None
    beside = _executable(venv_bin / "llama-server")
    assert llama_server_command({}) == (str(beside),)
    server = _executable(tmp_path / "llama-server")
    assert llama_server_command({}) == (str(server),)  # PATH first
    assert llama_server_command({}, engine="python") == (sys.executable, "-m", "llama_cpp.server")
    custom = _executable(tmp_path / "custom-server")
    env = {"BATUTA_LLAMA_SERVER": str(custom)}
    detail = availability(CATALOGUE["llamacpp"], env).detail
    assert detail == f"llama-server at {custom} (engine: server)"
    env = {"BATUTA_LLAMA_SERVER": str(tmp_path / "missing")}
    status = availability(CATALOGUE["llamacpp"], env)
    assert status.ready is False and "is not executable" in status.detail


def test_llama_cpp_missing_everywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))  # no venv llama-server
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "site-packages" not in p])
    import importlib

    importlib.invalidate_caches()
    if "llama_cpp" in sys.modules:  # find_spec answers from sys.modules first
        monkeypatch.delitem(sys.modules, "llama_cpp")
    status = availability(CATALOGUE["llamacpp"], {})
    assert status.ready is False and status.detail.startswith("not installed: pip install")


def test_tools_in_the_interpreters_directory_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", os.devnull)
    # pytest is installed next to the interpreter, as a backend's CLI would be
    from batuta import selection as select

    assert select._which("pytest") == str(Path(sys.executable).parent / "pytest")
    assert select._which("no-such-tool-here") is None


def test_a_backend_run_as_a_python_module_is_installed_when_its_package_is() -> None:
    from batuta.catalogue import ModelFormat, Recipe, local_backend
    from batuta.selection import availability

    def record(module: str):
        return local_backend(
            "pymod", None, "Py module", language="Python", feature="test", group="gguf_based",
            formats=(ModelFormat.GGUF,), quants=(), port=9999, health="/health",
            executable=None, install="pip install pymod",
            launch=(Recipe("python", ("{port}",), module=module),),
        )  # fmt: skip

    found = availability(record("json.tool"))
    assert (found.ready, found.detail) == (True, "python -m json.tool")
    missing = availability(record("no_such_pymod.server"))
    assert (missing.ready, missing.detail) == (False, "not installed: pip install pymod")
