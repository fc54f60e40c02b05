"""The manifest's JSON Schema: generated from the pydantic models, committed in ``schemas/``.

``manifest_schema()`` is what ``batuta schema`` prints and what editors load through the
``# yaml-language-server: $schema=`` modeline. ``schema_problems()`` validates loaded data
against the committed file (so the editor and the CLI agree) and turns jsonschema's
errors into short messages that name the key, suggest a fix, and never echo a value that
came from the environment.
"""

from __future__ import annotations

import functools
import importlib
import json
import re
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from batuta._util.fuzzy import did_you_mean
from batuta.manifest.gateway import RATE_HINT, RATE_PATTERN
from batuta.manifest.keys import looks_like_secret
from batuta.manifest.option_fields import PARAM_PATTERN, PATTERN_HINTS
from batuta.manifest.problems import Loc, Problem
from batuta.manifest.units import DURATION_PATTERN, SIZE_PATTERN

# jsonschema ships no type information; its errors are handled as Any.
ValidationError = Any

DRAFT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = "urn:batuta:schema:manifest:1"
# Where the committed schema sits in a source checkout (the repository root's schemas/).
SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schemas" / "batuta.schema.json"

_NAME_RULE = "use letters, digits, '_', '.' and '-', starting with a letter or digit"
_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "nothing",
}


def manifest_schema(*, plugins: bool = False) -> dict[str, Any]:
    """The JSON Schema of ``batuta.yaml`` (draft 2020-12), derived from the models.

    ``servers.*.backend`` and ``endpoints.*.provider`` list the catalogue's keys for editors
    to complete: the built-ins (the committed file), plus installed plugins' with
    ``plugins`` (what ``batuta schema`` prints). Any other string still passes the schema:
    the rules check names against the whole catalogue, aliases and plugins included, and
    say "did you mean".
    """
    from batuta.manifest.model import Manifest
    from batuta.manifest.options import provider_options_schema

    generated = Manifest.model_json_schema()
    # Each provider's options: editors complete them once `provider:` is written.
    option_defs, rules = provider_options_schema()
    generated["$defs"].update(option_defs)
    generated["$defs"]["Endpoint"]["allOf"] = rules
    _tighten(generated)
    _complete_backends(generated["$defs"], plugins=plugins)
    generated.pop("title", None)
    generated["description"] = (
        "batuta.yaml: local model servers, remote endpoints and the routes between them."
    )
    return {"$schema": DRAFT, "$id": SCHEMA_ID, "title": "batuta manifest", **generated}


def render_schema(*, plugins: bool = False) -> str:
    """The schema as committed in schemas/batuta.schema.json (and, with installed plugins'
    backends, printed by the CLI)."""
    return json.dumps(manifest_schema(plugins=plugins), indent=2, ensure_ascii=False) + "\n"


def _complete_backends(defs: dict[str, Any], *, plugins: bool) -> None:
    from batuta.catalogue import CATALOGUE

    records = list(CATALOGUE.values() if plugins else CATALOGUE.builtin.values())
    fields = (
        ("Server", "backend", [b.key for b in records if b.local]),
        ("Endpoint", "provider", [b.key for b in records]),
    )
    for model, name, keys in fields:
        node = defs[model]["properties"][name]
        # The enum is for completion; the catch-all leaves names to the rules' messages.
        node.pop("type", None)
        node["anyOf"] = [{"type": "string", "enum": keys}, {"type": "string"}]


def _tighten(node: Any) -> None:
    """Forbid unknown keys everywhere and give name maps a propertyNames rule."""
    if isinstance(node, list):
        for item in node:
            _tighten(item)
        return
    if not isinstance(node, dict):
        return
    patterns = node.get("patternProperties")
    if isinstance(patterns, dict) and len(patterns) == 1 and "properties" not in node:
        # pydantic writes dict[Name, X] as patternProperties, which silently accepts keys
        # that miss the pattern; propertyNames + additionalProperties rejects them.
        ((pattern, value),) = patterns.items()
        del node["patternProperties"]
        node["propertyNames"] = {**node.get("propertyNames", {}), "pattern": pattern}
        node["additionalProperties"] = value
    if node.get("type") == "object" and "properties" in node:
        node.setdefault("additionalProperties", False)
    for value in node.values():
        _tighten(value)


@functools.cache
def _validator() -> Any:
    jsonschema = importlib.import_module("jsonschema")
    try:
        schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # an installed package: no checkout around it
        schema = manifest_schema()
    return jsonschema.Draft202012Validator(schema)


def schema_problems(data: Any, hidden: Collection[Loc] = ()) -> list[Problem]:
    """Every schema violation in ``data``; values at ``hidden`` locations are never echoed."""
    problems: list[Problem] = []
    seen: set[Loc] = set()
    # A wrong type explains every other complaint about the same value: report it alone.
    errors = sorted(_validator().iter_errors(data), key=lambda e: e.validator != "type")
    for error in errors:
        for problem in _translate(error, set(hidden)):
            if problem.loc not in seen:
                seen.add(problem.loc)
                problems.append(problem)
    return problems


def _show(value: Any, loc: Loc, hidden: Collection[Loc]) -> str:
    if loc in hidden or not isinstance(value, (str, int, float)) or len(str(value)) > 60:
        return "this value"
    return repr(value)


_KINDS = {dict: "a mapping", list: "a list", str: "a string", int: "an integer", float: "a number"}


def _kind(value: Any) -> str:
    return "true/false" if isinstance(value, bool) else _KINDS.get(type(value), "nothing")


def _mismatch(loc: Loc, expected: list[str], instance: Any) -> Problem:
    wanted = " or ".join(_TYPE_NAMES.get(t, t) for t in expected)
    if instance is None:
        return Problem(loc, f"is empty; expected {wanted}")
    return Problem(loc, f"expected {wanted}, got {_kind(instance)}")


def _types(schemas: list[Any]) -> list[str]:
    out: list[str] = []
    for schema in schemas:
        if "$ref" in schema:
            out.append("object")
        kind = schema.get("type")
        out += kind if isinstance(kind, list) else [kind] if kind else []
        out += _types(schema.get("anyOf", []) + schema.get("oneOf", []))
    return list(dict.fromkeys(out))


def _type_mismatch(error: ValidationError) -> bool:
    if error.validator in ("anyOf", "oneOf"):
        return all(_type_mismatch(e) for e in error.context or [])
    return error.validator == "type" and not error.relative_path


def _translate(error: ValidationError, hidden: set[Loc]) -> Iterator[Problem]:
    loc: Loc = tuple(error.absolute_path)
    kind, value, instance = error.validator, error.validator_value, error.instance
    if kind in ("anyOf", "oneOf"):
        groups: dict[Any, list[ValidationError]] = {}
        for sub in error.context or []:
            groups.setdefault(sub.relative_schema_path[0], []).append(sub)
        # An alternative whose type matched holds the real complaint (e.g. a bad pattern).
        matched = [g for g in groups.values() if not any(_type_mismatch(e) for e in g)]
        if matched:
            for sub in matched[0]:
                yield from _translate(sub, hidden)
            return
        yield _mismatch(loc, [t for t in _types(value) if t != "null"] or ["null"], instance)
    elif kind == "additionalProperties" and isinstance(instance, dict):
        allowed = list(error.schema.get("properties", {}))
        patterns = list(error.schema.get("patternProperties", {}))
        # Options also take param.<field>: not a key to suggest, but one to list.
        listed = allowed + (["param.<field>"] if PARAM_PATTERN in patterns else [])
        for key in instance:
            if key not in allowed and not any(re.search(p, str(key)) for p in patterns):
                yield Problem(
                    (*loc, key),
                    f"unknown key {key!r}{did_you_mean(str(key), allowed)};"
                    f" valid keys: {', '.join(listed)}",
                )
    elif kind == "required" and isinstance(instance, dict):
        for key in value:
            if key not in instance:
                yield Problem((*loc, key), f"missing required key {key!r}")
    elif "propertyNames" in error.relative_schema_path:
        name = str(instance)
        yield Problem((*loc, name), f"{name!r} is not a valid name: {_NAME_RULE}, at most 64")
    elif kind == "type":
        yield _mismatch(loc, value if isinstance(value, list) else [value], instance)
    elif kind in ("enum", "const"):
        choices = [str(c) for c in (value if kind == "enum" else [value])]
        hint = did_you_mean(str(instance), choices) if isinstance(instance, str) else ""
        yield Problem(
            loc, f"{_show(instance, loc, hidden)} is not allowed{hint}; use {' | '.join(choices)}"
        )
    elif kind == "pattern":
        yield Problem(loc, _pattern_message(value, instance, loc, hidden))
    elif kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        word = {
            "minimum": "at least",
            "maximum": "at most",
            "exclusiveMinimum": "greater than",
            "exclusiveMaximum": "less than",
        }[kind]
        yield Problem(loc, f"must be {word} {value}")
    elif kind in ("minItems", "maxItems"):
        low, high = error.schema.get("minItems"), error.schema.get("maxItems")
        bound = "at least" if kind == "minItems" else "at most"
        size = f"exactly {low}" if low == high else f"{bound} {value}"
        yield Problem(loc, f"must be a list of {size} items")
    else:  # pragma: no cover - every keyword the generated schema uses is handled above
        yield Problem(loc, error.message)


def _pattern_message(pattern: str, instance: Any, loc: Loc, hidden: Collection[Loc]) -> str:
    if loc and isinstance(loc[-1], str) and loc[-1].endswith("_env"):
        if isinstance(instance, str) and looks_like_secret(instance):
            return (
                "this looks like an API key itself (not shown): keys never go in the manifest;"
                " put the key in an environment variable and name that variable"
            )
        return "must be the name of an environment variable (letters, digits, _), e.g. GROQ_API_KEY"
    shown = _show(instance, loc, hidden)
    if pattern == DURATION_PATTERN:
        return f"{shown} is not a duration; use e.g. 30s, 500ms, 2m, 1h"
    if pattern == SIZE_PATTERN:
        return f"{shown} is not a size; use e.g. 512MB, 2GiB"
    if pattern == RATE_PATTERN:
        return f"{shown} {RATE_HINT}"
    if loc and loc[-1] == "sha256":
        return "must be 64 hexadecimal digits"
    if pattern in PATTERN_HINTS:
        hint = PATTERN_HINTS[pattern]
        return hint if hint.startswith("must") else f"{shown} {hint}"
    return f"{shown} does not match the pattern {pattern}"  # pragma: no cover - future fields
