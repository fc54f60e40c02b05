"""Atomic replacement of a file, and the exclusive flock around a block."""

from __future__ import annotations

from pathlib import Path

import pytest

from batuta._util.files import atomic_write, flocked


def test_atomic_write_leaves_no_temp_file(tmp_path: Path) -> None:
    atomic_write(tmp_path / "x" / "f.json", "hello")
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["f.json"]


def test_atomic_write_failure_keeps_old_file_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    target.write_text("old")

    with pytest.raises(TypeError):
        atomic_write(target, 123)  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_flocked_non_blocking_reports_a_held_lock(tmp_path: Path) -> None:
    with flocked(tmp_path / "l") as fd:
        assert fd is not None
        with flocked(tmp_path / "l", blocking=False) as other:
            assert other is None
    with flocked(tmp_path / "l", blocking=False) as again:
        assert again is not None
