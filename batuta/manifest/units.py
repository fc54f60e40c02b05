"""Durations and sizes as the manifest writes them (``30s``, ``500ms``, ``2m``, ``2GiB``),
normalised to seconds and bytes, with the same grammars for JSON Schema."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, WithJsonSchema

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, None: 1,
}  # fmt: skip


def parse_duration(value: object) -> float:
    """``30s`` / ``500ms`` / ``2m`` / ``1h`` / a bare number of seconds → seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 500ms or 2m")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and (m := _DURATION.match(value)):
        return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    raise ValueError(f"{value!r} is not a duration (use e.g. 30s, 500ms, 2m)")


def parse_size(value: object) -> int:
    """``2GiB`` / ``512MB`` / a bare number of bytes → bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 2GiB or 512MB")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and (m := _SIZE.match(value)):
        unit = m.group(2).lower() if m.group(2) else None
        return int(float(m.group(1)) * _SIZE_UNITS[unit])
    raise ValueError(f"{value!r} is not a size (use e.g. 2GiB, 512MB)")


# The same grammars for JSON Schema (ECMA-262 regexes, so no inline flags): an editor then
# rejects "30 seconds" exactly as the loader does.
DURATION_PATTERN = r"^\s*\d+(\.\d+)?\s*(ms|s|m|h)?\s*$"
SIZE_PATTERN = r"^\s*\d+(\.\d+)?\s*([Bb]|[KkMmGgTt][Ii]?[Bb])?\s*$"

# JSON Schema sees the human form (string or number); Python sees seconds / bytes.
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": DURATION_PATTERN},
            ],
            "description": "seconds, or a duration such as 30s, 500ms, 2m, 1h",
        }
    ),
]
Size = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": SIZE_PATTERN},
            ],
            "description": "bytes, or a size such as 2GiB, 512MB",
        }
    ),
]
