"""JSON on the hot path: orjson where it can, the standard library where it cannot.

orjson is several times faster than :mod:`json` for the small bodies a gateway parses and
writes on every request. Its rules are stricter (no ``NaN`` literal, no integer past 64
bits, no lone surrogate), so whatever it refuses goes to :mod:`json`, which decides as
before: the same values are accepted and a body that is not JSON fails with the message
users already see. Output is compact UTF-8, as ``json.dumps(ensure_ascii=False)``.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS  # {7: ...} becomes {"7": ...}, as json.dumps writes it


def loads(data: str | bytes) -> Any:
    """Parse ``data``; raises :class:`ValueError` (json's) when it is not JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def dumps(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON."""
    try:
        return orjson.dumps(value, option=_OPTIONS)
    except TypeError:  # an integer past 64 bits, a subclass orjson does not take, ...
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
