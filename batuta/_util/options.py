"""Reading a target's options: typed JSON values, with the string forms of older tables.

The manifest types every provider option (``batuta.manifest.options``) and the routing
table stores the typed values as JSON. A table written before options were typed holds
strings (``"true"``, ``"30"``), so the readers here take both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# One option's value as the routing table stores it: a JSON value.
OptionValue = str | int | float | bool | None | list[Any] | dict[str, Any]
Options = Mapping[str, OptionValue]


def text(options: Options, key: str, default: str = "") -> str:
    """The option as text; ``default`` when it is absent, null or empty."""
    value = options.get(key)
    if value is None or value == "":
        return default
    return value if isinstance(value, str) else str(value)


def flag(options: Options, key: str) -> bool:
    """Whether the option is true (``true``, or the string ``"true"`` of older tables)."""
    value = options.get(key)
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def number(options: Options, key: str, default: float) -> float:
    """The option as a number; ValueError when it is neither a number nor numeric text."""
    value = options.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"options.{key} must be a number")
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"options.{key} must be a number") from None
