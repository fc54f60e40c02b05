"""Byte counts for people."""

from __future__ import annotations

import pytest

from batuta._util.sizes import human_bytes


@pytest.mark.parametrize(
    ("count", "text"),
    [(0, "0B"), (512, "512B"), (1536, "1.5KiB"), (6 * 2**30, "6GiB"), (3 * 2**40, "3TiB"),
     (5000 * 2**40, "5000TiB"), (int(1.25 * 2**20), "1.2MiB")],
)  # fmt: skip
def test_human_bytes(count: int, text: str) -> None:
    assert human_bytes(count) == text
