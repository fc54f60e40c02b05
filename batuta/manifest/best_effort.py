"""The manifest without what failed validation, so the rules can still check the rest.

The schema and the models report what is wrong with a manifest's shape; the cross-field
rules then run on what remains: a failing field is dropped (its default applies), a
missing or failed required value gets a stand-in, and only what is not a mapping at all
goes whole. Separate from :mod:`batuta.manifest.load` because it only rewrites data and
says what it took away.
"""

from __future__ import annotations

from typing import Any

from batuta.manifest.model import Manifest
from batuta.manifest.problems import SECTIONS, Loc

_DROP = object()
# Stands in for a required value that is missing or invalid, so the entry's other fields
# are still checked; whatever a rule says about the stand-in itself is not reported.
_STAND_IN = ""


def _without(node: Any, loc: Loc) -> Any:
    """A copy of ``node`` without the value at ``loc``; _DROP when ``node`` itself must go
    (the path runs through a list or a non-mapping: the whole of it is dropped)."""
    key = loc[0]
    if not isinstance(node, dict):
        return _DROP
    if key not in node:  # a missing key: nothing to take away
        return node
    rest = _DROP if len(loc) == 1 else _without(node[key], loc[1:])
    if rest is _DROP:
        return {k: v for k, v in node.items() if k != key}
    return {**node, key: rest}


def best_effort(
    data: dict[str, Any], bad: list[Loc]
) -> tuple[Manifest | None, set[tuple[str, str]]]:
    """The manifest without what failed, so the rules can still check everything else.

    A failing field is dropped (its default applies), in an entry or in ``defaults:``; a
    required value that is missing or failed gets a stand-in, so the entry's other fields
    are still checked. Only what is not a mapping at all is dropped whole (an entry, or a
    section). ``broken`` names the dropped entries (``*`` for a whole section) so rules do
    not report references to them.
    """
    from pydantic import ValidationError

    pruned = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    broken: set[tuple[str, str]] = set()

    def drop(loc: Loc) -> None:
        head = str(loc[0])
        section = pruned.get(head)
        if head in SECTIONS and isinstance(section, dict) and len(loc) > 2:
            entry = _without(section.get(str(loc[1])), loc[2:])
            section[str(loc[1])] = {} if entry is _DROP else entry
        elif head in SECTIONS and isinstance(section, dict) and len(loc) > 1:
            section.pop(str(loc[1]), None)
            broken.add((head, str(loc[1])))
        elif head not in SECTIONS and isinstance(section, dict) and len(loc) > 1:
            # defaults: only the failing field goes, so its other fields are still checked
            rest = _without(section, loc[1:])
            pruned[head] = {} if rest is _DROP else rest
        else:
            pruned.pop(head, None)
            if head in SECTIONS:
                broken.add((head, "*"))

    for loc in bad:
        drop(loc)  # never the root: a root that is not a mapping stops before validation
    for _ in range(4):
        try:
            return Manifest.model_validate(pruned), broken
        except ValidationError as exc:
            for error in exc.errors():
                loc = tuple(error["loc"])
                if not (error["type"] == "missing" and _fill(pruned, loc)):
                    drop(loc[:2])
    return None, broken  # pragma: no cover - three rounds drop every failing entry


def _fill(data: dict[str, Any], loc: Loc) -> bool:
    """Put a stand-in where an entry lacks a required value (``servers.x.model``); False
    when ``loc`` is not such a place (the entry itself is not a mapping, say)."""
    if len(loc) != 3 or loc[0] not in SECTIONS:
        return False
    section = data.get(str(loc[0]))
    entry = section.get(str(loc[1])) if isinstance(section, dict) else None
    if not isinstance(section, dict) or not isinstance(entry, dict):
        return False
    section[str(loc[1])] = {**entry, str(loc[2]): _STAND_IN}
    return True
