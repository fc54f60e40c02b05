"""Byte counts as people read them (``6GiB``, ``512MiB``), for messages and status."""

from __future__ import annotations

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human_bytes(count: int) -> str:
    """``6442450944`` → ``6GiB``; ``1610612736`` → ``1.5GiB`` (binary units, at most one
    decimal, the same spelling the manifest accepts)."""
    value = float(count)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            text = f"{value:.1f}".rstrip("0").rstrip(".")
            return f"{text}{unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover
