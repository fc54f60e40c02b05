"""The manifest's identity and the state directory: one resolver for every command."""

from __future__ import annotations

from pathlib import Path

import pytest

from batuta._util.paths import (
    GITIGNORE,
    ensure_state_dir,
    manifest_path,
    normalize_manifest,
    same_manifest,
    state_dir_for,
)


@pytest.fixture
def proj(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp/proj/batuta.yaml, tmp/link → proj, and the current directory tmp/other."""
    for var in ("BATUTA_FILE", "BATUTA_STATE_DIR"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "batuta.yaml").write_text("servers: {}\n")
    (tmp_path / "link").symlink_to(tmp_path / "proj")
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path / "other")
    return tmp_path / "proj"


def test_dotdot_and_symlinks_name_the_same_manifest(proj: Path) -> None:
    real = proj.resolve() / "batuta.yaml"
    assert normalize_manifest("../proj/batuta.yaml") == real
    assert normalize_manifest("../link/batuta.yaml") == real
    assert normalize_manifest(proj.parent / "link" / "." / "batuta.yaml") == real
    assert manifest_path("../link/batuta.yaml") == (real, "../link/batuta.yaml")
    assert same_manifest(str(proj.parent / "link" / "batuta.yaml"), str(real))
    assert not same_manifest(str(real), str(proj.parent / "other" / "batuta.yaml"))
    assert same_manifest(None, None) and not same_manifest(None, str(real))


def test_a_missing_manifest_is_normalised_as_far_as_it_goes(proj: Path) -> None:
    assert normalize_manifest("../link/nope/x.yaml") == proj.resolve() / "nope" / "x.yaml"


def test_home_is_expanded(proj: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(proj.parent))
    assert normalize_manifest("~/link/batuta.yaml") == proj.resolve() / "batuta.yaml"
    monkeypatch.setenv("BATUTA_STATE_DIR", "~/state")
    assert state_dir_for() == proj.parent / "state"
    assert state_dir_for(adhoc=True) == proj.parent / "state"


def test_state_dir_precedence(proj: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here = Path.cwd() / ".batuta"
    beside = proj.resolve() / ".batuta"
    assert state_dir_for("../link/batuta.yaml") == beside  # -f
    monkeypatch.setenv("BATUTA_FILE", "../proj/batuta.yaml")
    assert state_dir_for() == beside  # $BATUTA_FILE
    assert state_dir_for(adhoc=True) == beside  # ad-hoc commands honour it too
    monkeypatch.setenv("BATUTA_FILE", "../proj/missing.yaml")
    assert state_dir_for() == beside  # `down` for a deleted manifest still finds its state
    assert state_dir_for(adhoc=True) == here  # no manifest: ./.batuta
    monkeypatch.delenv("BATUTA_FILE")
    assert state_dir_for() == here == state_dir_for(adhoc=True)  # ./batuta.yaml
    monkeypatch.setenv("BATUTA_STATE_DIR", "rel/state")
    assert state_dir_for("../proj/batuta.yaml") == Path.cwd() / "rel" / "state"
    env = {"BATUTA_FILE": str(proj / "batuta.yaml")}
    assert state_dir_for(env=env) == beside  # an explicit environment wins over os.environ


def test_a_symlinked_manifest_keeps_its_state_beside_the_link(proj: Path) -> None:
    mine = proj.parent / "mine"
    mine.mkdir()
    (mine / "batuta.yaml").symlink_to(proj / "batuta.yaml")
    assert normalize_manifest("../mine/batuta.yaml") == proj.resolve() / "batuta.yaml"
    assert state_dir_for("../mine/batuta.yaml") == mine.resolve() / ".batuta"
    assert state_dir_for("../link/batuta.yaml") == proj.resolve() / ".batuta"
    from batuta.manifest import load_manifest

    loaded = load_manifest("../mine/batuta.yaml")
    assert loaded.path == proj.resolve() / "batuta.yaml"  # the identity: the file itself
    assert loaded.state_dir == mine.resolve() / ".batuta"
    assert loaded.display == "../mine/batuta.yaml"


def test_a_created_state_dir_is_git_ignored(tmp_path: Path) -> None:
    state = ensure_state_dir(tmp_path / "deep" / ".batuta")
    assert state.is_dir() and (state / ".gitignore").read_text() == GITIGNORE
    assert GITIGNORE.splitlines()[-1] == "*"
    (state / ".gitignore").unlink()
    ensure_state_dir(state)  # an existing directory is left as the user keeps it
    assert not (state / ".gitignore").exists()
