"""Golden files: what `batuta render kubernetes -f examples/fleet.yaml` writes, committed
under tests/render/golden/fleet/ so that a reviewer sees every change to the output.

After a deliberate change to the output, regenerate them from the repository root with

    .venv/bin/python -m tests.render.test_golden

and review the diff like code.
"""

from __future__ import annotations

import sys
from pathlib import Path

from batuta.render.kubernetes.write import write_files
from tests.render.helpers import FLEET, render_path

GOLDEN = Path(__file__).resolve().parent / "golden" / "fleet"


def test_the_fleet_renders_as_committed() -> None:
    files = render_path(FLEET)
    committed = {p.name: p.read_text(encoding="utf-8") for p in sorted(GOLDEN.glob("*.yaml"))}
    assert sorted(files) == sorted(committed), "regenerate: python -m tests.render.test_golden"
    for name, text in files.items():
        assert text == committed[name], f"{name} differs: python -m tests.render.test_golden"


def test_write_files_replaces_only_what_batuta_rendered(tmp_path: Path) -> None:
    files = render_path(FLEET)
    mine = tmp_path / "notes.yaml"
    mine.write_text("kind: mine\n")
    gone = tmp_path / "deployment-server-removed.yaml"
    gone.write_text("metadata:\n  labels:\n    app.kubernetes.io/managed-by: batuta\n")
    binary = tmp_path / "blob.yaml"
    binary.write_bytes(b"\xff\xfe app.kubernetes.io/managed-by: batuta")  # not text: not ours
    write_files(tmp_path, files)
    names = {p.name for p in tmp_path.iterdir()}
    assert names == set(files) | {"notes.yaml", "blob.yaml"}
    assert all((tmp_path / n).read_text() == t for n, t in files.items())


def test_the_public_api_renders_and_writes_only_when_asked(tmp_path: Path) -> None:
    import batuta

    files = batuta.render_kubernetes(FLEET, env={})
    assert files == render_path(FLEET)
    out = tmp_path / "out"
    assert batuta.render_kubernetes(FLEET, output=out, namespace="llm", env={}) == files
    assert {p.name for p in out.iterdir()} == set(files)


def regenerate() -> None:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for old in GOLDEN.glob("*.yaml"):
        old.unlink()
    write_files(GOLDEN, render_path(FLEET))
    print(f"wrote {GOLDEN}", file=sys.stderr)


if __name__ == "__main__":
    regenerate()
