""".ci/check-paths: CI fails when a tracked file names a path of the machine it runs on."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

CHECK = Path(__file__).resolve().parents[1] / ".ci" / "check-paths"
# Spelled in two halves: this file is tracked too, and must pass the check itself.
SHARED = "../" + "shared"


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, env=clean_env())


def clean_env(home: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    if home is not None:
        env["HOME"] = str(home)
    return env


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A fresh repository with one clean tracked file, in a parent folder of its own."""
    path = tmp_path / "parent" / "checkout"
    path.mkdir(parents=True)
    git(path, "init", "-q")
    (path / "README.md").write_text("Run `make test`; specs are in tests/specs/.\n")
    git(path, "add", "-A")
    return path


def check(repo: Path, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(CHECK), str(repo)],
        capture_output=True,
        text=True,
        env=clean_env(home),
        timeout=60,
    )


def track(repo: Path, name: str, text: str) -> None:
    path = repo / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    git(repo, "add", "-A")


def test_a_clean_repository_passes(repo: Path, home: Path) -> None:
    track(
        repo,
        "docs/notes.md",
        # relative paths, and URLs whose path merely contains a folder's name
        "See ../README.md and https://example.org/home/shared/specs.\n",
    )
    done = check(repo, home)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


@pytest.mark.parametrize("where", ["shared", "parent", "home"])
def test_a_machine_path_fails_with_file_and_line(
    repo: Path, home: Path, where: str, tmp_path: Path
) -> None:
    named = {
        "shared": f"{SHARED}/specs/ollama.openapi.yaml",
        "parent": f"{repo.parent}/shared/specs",
        "home": f"{home}/.cache/batuta/model.gguf",
    }[where]
    track(repo, "tests/test_x.py", f'"""Doc."""\n\nSPEC = "{named}"\n')
    done = check(repo, home)
    assert done.returncode == 1
    assert "tests/test_x.py:3" in done.stderr
    assert "README.md" not in done.stderr


def test_every_offending_line_is_listed(repo: Path, home: Path) -> None:
    track(repo, "a.txt", f"ok\n{home}/x\nok\n{SHARED}/y\n")
    track(repo, "b/c.md", f"cd {repo.parent}/other\n")
    done = check(repo, home)
    assert done.returncode == 1
    listed = [line.strip() for line in done.stderr.splitlines()[1:]]
    assert listed == ["a.txt:2", "a.txt:4", "b/c.md:1"]


def test_untracked_files_are_not_checked(repo: Path, home: Path) -> None:
    (repo / "scratch.txt").write_text(f"{home}/private\n")
    done = check(repo, home)
    assert done.returncode == 0, done.stderr


def test_the_check_script_passes_its_own_check(tmp_path: Path, home: Path) -> None:
    clone = tmp_path / "ci"
    clone.mkdir()
    git(clone, "init", "-q")
    (clone / ".ci").mkdir()
    (clone / ".ci" / "check-paths").write_bytes(CHECK.read_bytes())
    (clone / "test_ci_check_paths.py").write_bytes(Path(__file__).read_bytes())
    git(clone, "add", "-A")
    done = check(clone, home)
    assert done.returncode == 0, done.stderr
