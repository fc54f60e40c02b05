"""``batuta serve backends | tree | select``: content, marks that mean something, no secrets."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from batuta.catalogue import CATALOGUE, TREE_GROUPS
from batuta.cli.main import main
from batuta.cli.serve_info import LEGEND

SECRET = "gsk_this_value_must_never_be_printed"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    # A PATH with one fake engine on it, and one key set: marks become predictable.
    for b in CATALOGUE.values():
        if b.api_key_env:
            monkeypatch.delenv(b.api_key_env, raising=False)
    for var in ("BATUTA_SERVE_BACKEND", "BATUTA_SERVE_PORT", "OLLAMA_HOST", "BATUTA_LLAMA_SERVER"):
        monkeypatch.delenv(var, raising=False)
    fake = tmp_path / "ollama"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(tmp_path))
    # executables beside the interpreter count too (make puts llama-server in .venv/bin)
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "venv" / "bin" / "python"))
    monkeypatch.setenv("GROQ_API_KEY", SECRET)
    return tmp_path


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    assert SECRET not in out + err
    return code, out, err


def _line(out: str, label: str) -> str:
    return next(line for line in out.splitlines() if f" {label} " in line)


def test_tree_as_json(capsys) -> None:
    code, out, _ = run(["serve", "tree", "--json"], capsys)
    assert code == 0
    root = json.loads(out)
    assert root["group"] == "Model Serving Ecosystem"
    leaves: dict[str, dict] = {}
    groups: list[str] = []

    def walk(node: dict) -> None:
        if "backend" in node:
            leaves[node["backend"]] = node
            return
        groups.append(node["group"])
        for child in node["children"]:
            walk(child)

    walk(root)
    assert set(leaves) == set(CATALOGUE)
    assert {g.split("/")[-1] for g in TREE_GROUPS} <= set(groups)
    assert leaves["ollama"]["usable"] is True and leaves["ollama"]["local"] is True
    assert leaves["realizar"]["usable"] is False
    assert leaves["groq"] == {
        "backend": "groq", "name": CATALOGUE["groq"].display, "local": False, "usable": True,
        "status": "GROQ_API_KEY is set", "label": leaves["groq"]["label"],
    }  # fmt: skip
    assert leaves["groq"]["label"] in run(["serve", "tree"], capsys)[1]


def test_tree_shape_and_marks(capsys) -> None:
    code, out, _ = run(["serve", "tree"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "Model Serving Ecosystem"
    assert lines[1:4] == [
        "├── local",
        "│   ├── paiml_native",
        "│   │   └── realizar      ✗ Rust, GGUF/ST, PAIML native, MoE",
    ]
    assert "└── frontier_apis" in lines
    for group in TREE_GROUPS:
        assert any(line.endswith(group.split("/")[-1]) for line in lines), group
    for b in CATALOGUE.values():
        assert f" {b.tree_label} " in out, b.key
    assert "✓ Go, GGUF, Docker-like UX (ollama at" in _line(out, "ollama")
    assert "✓ C++, GGUF, Reference impl (python -m llama_cpp.server" in _line(out, "llamacpp")
    assert "? C++, GGUF, Desktop app" in _line(out, "gpt4all")
    assert "● LPU, ultra-fast (GROQ_API_KEY is set)" in _line(out, "groq")
    assert "○ GPT models (OPENAI_API_KEY not set)" in _line(out, "openai")
    assert lines[-1] == LEGEND
    assert len(lines) == 1 + 2 + len(CATALOGUE) + len(TREE_GROUPS) + 2


def test_backends_table(capsys) -> None:
    code, out, err = run(["serve", "backends"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["BACKEND", "WHERE", "PROTOCOL", "ADDRESS", "FORMATS", "STATUS"]
    rows = {line.split()[0]: line for line in lines[1 : len(CATALOGUE) + 1]}
    assert list(rows) == list(CATALOGUE)
    assert rows["groq"].split()[1:4] == ["remote", "openai", "https://api.groq.com/openai/v1"]
    assert rows["groq"].endswith("● GROQ_API_KEY is set")
    assert rows["openai"].endswith("○ OPENAI_API_KEY not set")
    assert rows["ollama"].split()[1:5] == ["local", "ollama", "http://127.0.0.1:11434", "gguf"]
    assert "✓ ollama at" in rows["ollama"]
    assert rows["realizar"].endswith("✗ not installed: cargo install realizar")
    assert LEGEND in lines
    # realizar is not installed; llama-cpp-python (installed here) is what serve start uses
    assert lines[-1].startswith("serve start defaults: --backend llamacpp --port 8080")
    assert err == ""


def test_backends_say_which_llama_cpp_engine_runs(capsys, _env: Path) -> None:
    def row() -> str:
        code, out, _ = run(["serve", "backends"], capsys)
        assert code == 0
        return next(line for line in out.splitlines() if line.startswith("llamacpp "))

    assert row().endswith("✓ python -m llama_cpp.server, from llama-cpp-python (engine: python)")
    server = _env / "venv" / "bin" / "llama-server"
    server.write_text("#!/bin/sh\n")
    server.chmod(0o755)
    assert row().endswith(f"✓ llama-server at {server} (engine: server)")


def test_backends_json(capsys, monkeypatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "0.0.0.0:9999")
    code, out, _ = run(["serve", "backends", "--json"], capsys)
    assert code == 0
    rows = {row["key"]: row for row in json.loads(out)}
    assert set(rows) == set(CATALOGUE)
    assert rows["groq"]["key_set"] is True and rows["groq"]["status"] == "GROQ_API_KEY is set"
    assert rows["openai"]["key_set"] is False
    assert rows["ollama"]["installed"] is True
    assert rows["ollama"]["address"] == "http://127.0.0.1:9999"
    assert rows["realizar"]["installed"] is False
    assert rows["gpt4all"]["installed"] is None
    assert rows["llamacpp"]["formats"] == ["gguf"] and "Q4_1" in rows["llamacpp"]["quantization"]
    assert rows["hf-endpoints"]["address"] == "(your endpoint URL)"


def test_retired_anyscale_says_so(capsys, monkeypatch) -> None:
    monkeypatch.setenv("ANYSCALE_API_KEY", SECRET)  # a key set does not make it usable
    _, out, _ = run(["serve", "backends"], capsys)
    row = next(line for line in out.splitlines() if line.startswith("anyscale "))
    assert "(retired: your own service's URL)" in row
    assert row.endswith("○ retired 2024-08-01: the shared Anyscale Endpoints shut down; models"
                        " are served only by your own services on the Anyscale platform")  # fmt: skip
    _, out, _ = run(["serve", "backends", "--json"], capsys)
    anyscale = {r["key"]: r for r in json.loads(out)}["anyscale"]
    assert anyscale["retired"].startswith("2024-08-01: ") and anyscale["key_set"] is False
    _, out, _ = run(["serve", "tree"], capsys)
    assert "○ Ray-based (retired 2024-08-01: " in _line(out, "anyscale")


def test_backends_warns_about_bad_defaults(capsys, monkeypatch) -> None:
    monkeypatch.setenv("BATUTA_SERVE_PORT", "eighty")
    code, _, err = run(["serve", "backends"], capsys)
    assert code == 0
    assert err == "warning: BATUTA_SERVE_PORT must be a port number 1-65535, not 'eighty'\n"


def test_backends_shows_the_port_serve_start_uses(capsys, monkeypatch) -> None:
    # serve start runs a backend on its own default port unless BATUTA_SERVE_PORT says.
    monkeypatch.setenv("BATUTA_SERVE_BACKEND", "ollama")
    code, out, _ = run(["serve", "backends"], capsys)
    assert code == 0
    assert out.splitlines()[-1].startswith("serve start defaults: --backend ollama --port 11434")
    monkeypatch.setenv("BATUTA_SERVE_PORT", "9000")
    _, out, _ = run(["serve", "backends"], capsys)
    assert out.splitlines()[-1].startswith("serve start defaults: --backend ollama --port 9000")


def test_select_follows_the_table(capsys) -> None:
    code, out, _ = run(
        ["serve", "select", "--latency", "realtime", "--privacy", "sovereign"], capsys
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "latency=realtime throughput=medium cost=balanced privacy=sovereign"
    assert lines[1].split()[:3] == ["1.", "realizar", "✗"]
    assert lines[2].split()[:3] == ["2.", "llamacpp", "✓"]
    assert all("groq" not in line for line in lines)


def test_select_json_prefer_disable(capsys) -> None:
    args = "--latency realtime --prefer ollama --prefer openai --disable realizar --privacy private"
    code, out, err = run(["serve", "select", *args.split(), "--json"], capsys)
    assert code == 0
    picks = json.loads(out)
    assert [p["backend"] for p in picks][:2] == ["ollama", "llamacpp"]
    assert picks[0]["reason"] == "preferred" and picks[0]["usable"] is True
    assert all(p["backend"] != "realizar" for p in picks)
    assert (
        err
        == "note: --prefer openai ignored: a public backend is not allowed in the private tier\n"
    )


def test_select_errors(capsys) -> None:
    code, _, err = run(["serve", "select", "--prefer", "olama"], capsys)
    assert code == 2
    assert "unknown backend 'olama' (did you mean 'ollama'?)" in err
    code, _, err = run(["serve", "select", "--latency", "fast"], capsys)
    assert code == 2 and "'fast' is not one of" in err
    locals_ = [b.key for b in CATALOGUE.values() if b.local]
    args = ["serve", "select", "--privacy", "sovereign"]
    for key in locals_:
        args += ["--disable", key]
    code, _out, err = run(args, capsys)
    assert code == 1
    assert err == "no backend fits these requirements\n"
