"""``batuta render kubernetes`` as a user runs it: files written, or errors at the line,
a non-zero exit and nothing written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from batuta.cli.main import main
from tests.render.helpers import EXAMPLES, FLEET, SOVEREIGN, render_path


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("BATUTA_FILE", "BATUTA_STATE_DIR", "GROQ_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_writes_one_file_per_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "k8s"
    code, out, _ = run(["render", "kubernetes", "-f", str(FLEET), "-o", str(out_dir)], capsys)
    assert code == 0
    expected = render_path(FLEET)
    assert {p.name: p.read_text() for p in out_dir.iterdir()} == expected
    assert out == f"wrote {len(expected)} files to {out_dir}/ (kubectl apply -k {out_dir})\n"


def test_a_pkg_model_fails_at_its_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "k8s"
    example = EXAMPLES / "hybrid.yaml"
    code, out, err = run(["render", "kubernetes", "-f", str(example), "-o", str(out_dir)], capsys)
    assert code != 0 and out == ""
    line = next(
        i for i, t in enumerate(example.read_text().splitlines(), 1) if "source: pkg://" in t
    )
    assert err.startswith(f"{example}:{line}:5: models.smollm2.source: a pkg:// model")
    assert "Error: invalid manifest (1 error)" in err
    assert not out_dir.exists()


def test_a_bad_namespace_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "batuta.yaml"
    manifest.write_text(SOVEREIGN)
    out_dir = tmp_path / "k8s"
    args = ["render", "kubernetes", "-f", str(manifest), "-o", str(out_dir), "--namespace", "A"]
    code, _, err = run(args, capsys)
    assert code == 1 and "--namespace 'A' is not a valid namespace" in err
    assert not out_dir.exists()
    code, _, _ = run([*args[:-1], "team-b"], capsys)
    assert code == 0
    assert "namespace: team-b" in (out_dir / "service-server-a.yaml").read_text()


def test_help_lists_render(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--help"], capsys)
    assert code == 0 and "render" in out and "Render batuta.yaml for Kubernetes." in out
    code, out, _ = run(["render", "--help"], capsys)
    assert code == 0 and "kubernetes" in out


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        (
            "hf://HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/smollm2-135m-instruct-q8_0.gguf",
            "./smollm2.gguf",
            "models.smollm2.source",
        ),
        ("  b:\n    backend: llamacpp", "  b:\n    backend: candle", "servers.b"),
    ],
    ids=["local-path", "no-image"],
)
def test_errors_name_the_line_exit_non_zero_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, path: str
) -> None:
    manifest = tmp_path / "batuta.yaml"
    manifest.write_text(SOVEREIGN.replace(old, new))
    out_dir = tmp_path / "k8s"
    code, out, err = run(["render", "kubernetes", "-f", str(manifest), "-o", str(out_dir)], capsys)
    assert code == 1 and out == ""
    assert re.match(rf"{re.escape(str(manifest))}:\d+:\d+: {re.escape(path)}: ", err)
    assert not out_dir.exists()
