"""Reading ``batuta.yaml``: YAML with positions, ``${env:}``, and validation in three steps.

1. YAML becomes plain data, and every key and value keeps its line and column
   (:mod:`batuta.manifest.document`). Duplicate keys are errors rather than silently
   keeping the last one.
2. ``${env:VAR}`` and ``${env:VAR:-default}`` are replaced in string values (``$${`` is a
   literal ``${``); an unset variable without a default is an error at its line
   (:mod:`batuta.manifest.interpolation`).
3. The data is checked against the JSON Schema editors use, then the pydantic models, then
   the cross-field rules (on what remains valid: :mod:`batuta.manifest.best_effort`). Every
   problem is reported, each as ``FILE:LINE:COL: path: message``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batuta.errors import ManifestIssue
from batuta.manifest.best_effort import best_effort
from batuta.manifest.document import Document, read_document
from batuta.manifest.model import Manifest
from batuta.manifest.problems import Checked, Loc, Problem
from batuta.manifest.rules import check
from batuta.manifest.schema import schema_problems

__all__ = ["LocalCheck", "Validated", "dotted", "read_document", "validate_text"]


@dataclass
class Validated:
    """The outcome of validating one manifest text."""

    document: Document
    manifest: Manifest | None
    checked: Checked | None
    issues: list[ManifestIssue]
    # What still loads but is deprecated (string forms of typed options): said, not fatal.
    warnings: list[ManifestIssue] = field(default_factory=list)


def dotted(loc: Loc) -> str:
    """``("routes", "default", "targets", 1)`` → ``routes.default.targets[1]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f"{'.' if out else ''}{part}"
    return out


def _deprecations(doc: Document) -> list[Problem]:
    """Options written as strings where a boolean or a JSON value belongs."""
    from batuta.manifest.options import deprecations

    endpoints = doc.data.get("endpoints") if isinstance(doc.data, dict) else None
    found: list[Problem] = []
    for name, entry in endpoints.items() if isinstance(endpoints, dict) else ():
        if not isinstance(entry, dict):
            continue
        for key, message in deprecations(entry.get("provider"), entry.get("options")):
            loc: Loc = ("endpoints", name, "options", key)
            if loc in doc.interpolated:  # never show what came from the environment
                written = doc.written.get(loc, "${env:...}")
                message = f"is a string; write {written} unquoted (strings are deprecated)"
            found.append(Problem(loc, message, at_value=True))
    return found


def _related(a: Loc, b: Loc) -> bool:
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _model_problems(data: Any, hidden: set[Loc]) -> list[Problem]:
    from pydantic import ValidationError

    try:
        Manifest.model_validate(data)
    except ValidationError as exc:
        found: list[Problem] = []
        for error in exc.errors(include_url=False):
            problem = _pydantic_problem(data, error, hidden)
            found += _option_problems(data, problem.loc, hidden) or [problem]
        return found
    return []


def _option_problems(data: Any, loc: Loc, hidden: set[Loc]) -> list[Problem]:
    """An endpoint's options that failed, one problem per key: pydantic sees the options
    as one value, the provider's options model says what is wrong with each."""
    from batuta.manifest.options import option_problems

    if len(loc) != 3 or loc[0] != "endpoints" or loc[2] != "options":
        return []
    entry = data["endpoints"][loc[1]]
    found = []
    for key, message in option_problems(entry.get("provider"), entry.get("options")):
        if (*loc, key) in hidden:
            message = "invalid value (taken from the environment, not shown)"
        found.append(Problem((*loc, key), message))
    return found


def _pydantic_problem(data: Any, error: Any, hidden: set[Loc]) -> Problem:
    # pydantic's loc also names union members and validators ("int", "[key]"): keep only
    # the parts that walk the data, plus the missing key itself.
    loc: list[str | int] = []
    node = data
    for part in error["loc"]:
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_list or (isinstance(node, dict) and part in node):
            node = node[part]
        else:
            if error["type"] == "missing":
                loc.append(part)
            break
        loc.append(part)
    if error["type"] == "missing":
        message = f"missing required key {loc[-1]!r}"
    elif error["type"] == "extra_forbidden":
        message = f"unknown key {loc[-1]!r}"
    elif tuple(loc) in hidden:
        message = "invalid value (taken from the environment, not shown)"
    else:
        message = str(error["msg"]).removeprefix("Value error, ")
    return Problem(tuple(loc), message)


# Checks of what a manifest names on this machine (model files, executables), given by a
# higher layer: (manifest, the manifest's folder, locations of values taken from the
# environment, whose text must not be shown) -> problems.
LocalCheck = Callable[[Manifest, Path, Collection[Loc]], Iterable[Problem]]


def validate_text(
    text: str,
    file: str,
    env: Mapping[str, str] | None = None,
    *,
    checks: LocalCheck | None = None,
    base_dir: Path | None = None,
) -> Validated:
    """Read and validate manifest text; ``file`` is the name issues carry.

    Every problem is reported, each once: the schema's and the models' (deduplicated),
    then the rules' and ``checks``' (what the manifest names on this machine, relative to
    ``base_dir``) on what remains valid, except those that only restate an earlier one.
    """
    doc = read_document(text, env)
    problems = list(doc.problems)
    manifest: Manifest | None = None
    checked: Checked | None = None
    deprecated: list[Problem] = []
    if not doc.fatal:
        deprecated = _deprecations(doc)
        unresolved = doc.unresolved

        def keep(p: Problem) -> bool:
            return not any(p.loc[: len(u)] == u for u in unresolved)

        found = [p for p in schema_problems(doc.data, doc.interpolated) if keep(p)]
        found += [
            p
            for p in _model_problems(doc.data, doc.interpolated)
            if keep(p) and not any(_related(p.loc, q.loc) for q in found)
        ]
        problems += found
        bad = [p.loc for p in found] + sorted(unresolved, key=str)
        manifest, broken = best_effort(doc.data, bad)
        if manifest is not None:
            checked = check(manifest, broken, dropped=bad)
            later = list(checked.problems)
            if checks is not None:
                later += checks(manifest, base_dir or Path.cwd(), doc.interpolated)
            # A rule about a field that already failed (or about its entry's budget,
            # tier, ...) would only repeat the first complaint in other words.
            problems += [
                p for p in later if not any(len(p.loc) > 2 and _related(p.loc, b) for b in bad)
            ]
    issues: dict[tuple[int, int, str, str], ManifestIssue] = {}
    for p in problems:
        line, col = doc.position(p.loc, p.at_value)
        issue = ManifestIssue(file, line, col, dotted(p.loc), p.message)
        issues.setdefault((line, col, issue.path, issue.message), issue)
    clean = not issues
    warnings = [
        ManifestIssue(file, *doc.position(p.loc, p.at_value), dotted(p.loc), p.message)
        for p in deprecated
    ]
    return Validated(
        doc,
        manifest if clean else None,
        checked if clean else None,
        list(issues.values()),
        warnings,
    )
