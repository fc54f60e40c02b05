"""Reading ``batuta.yaml``: YAML with positions, ``${env:}``, and validation in three steps.

1. YAML becomes plain data, and every key and value keeps its line and column. Keys are
   always strings; plain values follow YAML 1.2's core schema (only ``true``/``false`` are
   booleans, so ``restart: no`` or ``on:`` mean what they say; no dates, no base-60
   numbers). Duplicate keys are errors rather than silently keeping the last one.
2. ``${env:VAR}`` and ``${env:VAR:-default}`` are replaced in string values (``$${`` is a
   literal ``${``); an unset variable without a default is an error at its line.
3. The data is checked against the JSON Schema editors use, then the pydantic models, then
   the cross-field rules. Every problem is reported, each as ``FILE:LINE:COL: path: message``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

from batuta.errors import ManifestIssue
from batuta.manifest.model import Manifest
from batuta.manifest.problems import SECTIONS, Checked, Loc, Problem
from batuta.manifest.rules import check
from batuta.manifest.schema import schema_problems

_T = "tag:yaml.org,2002:"
_MAX_NODES = 20_000  # alias "billion laughs" guard: real manifests have a few hundred nodes
_MAX_DEPTH = 64
_INTERPOLATION = re.compile(r"\$(\$?)\{([^{}]*)\}")
_ENV_REF = re.compile(r"env:([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")

Position = tuple[int, int]


class _Resolver(BaseResolver):
    """YAML 1.2 core schema: fewer surprises than PyYAML's YAML 1.1 defaults."""


for _tag, _regexp, _first in (
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("int", r"^(?:[-+]?[0-9]+|0x[0-9a-fA-F]+|0o[0-7]+)$", "-+0123456789"),
    (
        "float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("merge", r"^(?:<<)$", "<"),
):
    _Resolver.add_implicit_resolver(_T + _tag, re.compile(_regexp), list(_first))


class _Composer(Reader, Scanner, Parser, Composer, _Resolver):
    def __init__(self, text: str) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        _Resolver.__init__(self)


def _pos(node: Node) -> Position:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _TooLarge(Exception):
    pass


@dataclass
class Document:
    """A YAML file as data, with where each key (and value) was written."""

    data: Any = None
    keys: dict[Loc, Position] = field(default_factory=dict)
    values: dict[Loc, Position] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    interpolated: set[Loc] = field(default_factory=set)  # values taken from the environment
    written: dict[Loc, str] = field(default_factory=dict)  # their text as written: ${env:X}
    unresolved: set[Loc] = field(default_factory=set)  # values that cannot be trusted
    fatal: bool = False  # no usable data: stop after reporting

    def position(self, loc: Loc, at_value: bool = False) -> Position:
        """Where ``loc`` is written; the nearest enclosing key when it is not in the file."""
        if at_value and loc in self.values:
            return self.values[loc]
        for end in range(len(loc), 0, -1):
            if loc[:end] in self.keys:
                return self.keys[loc[:end]]
        return 1, 1


class _Builder:
    def __init__(self, doc: Document, env: Mapping[str, str], composer: _Composer) -> None:
        self.doc, self.env, self.composer = doc, env, composer
        self.count = 0
        self.stack: set[int] = set()

    def problem(self, loc: Loc, node: Node, message: str) -> None:
        self.doc.values.setdefault(loc, _pos(node))
        self.doc.problems.append(Problem(loc, message, at_value=True))

    def build(self, node: Node, loc: Loc, weak: bool = False) -> Any:
        self.count += 1
        if self.count > _MAX_NODES or len(loc) > _MAX_DEPTH:
            raise _TooLarge
        if id(node) in self.stack:
            self.problem(loc, node, "refers to itself through an alias")
            return None
        self.stack.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self.mapping(node, loc, weak)
            if isinstance(node, SequenceNode):
                items = []
                for i, child in enumerate(node.value):
                    self._place((*loc, i), child, child, weak)
                    items.append(self.build(child, (*loc, i), weak))
                return items
            assert isinstance(node, ScalarNode)
            return self.scalar(node, loc)
        finally:
            self.stack.discard(id(node))

    def _place(self, loc: Loc, key: Node, value: Node, weak: bool) -> None:
        if weak:
            self.doc.keys.setdefault(loc, _pos(key))
            self.doc.values.setdefault(loc, _pos(value))
        else:
            self.doc.keys[loc], self.doc.values[loc] = _pos(key), _pos(value)

    def mapping(self, node: MappingNode, loc: Loc, weak: bool) -> dict[str, Any]:
        result: dict[str, Any] = {}
        first: dict[str, Node] = {}
        merges: list[Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _T + "merge":
                merges += value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                continue
            if not isinstance(key_node, ScalarNode):
                self.problem(loc, key_node, "keys must be plain names, not lists or mappings")
                continue
            key = str(key_node.value)
            here: Loc = (*loc, key)
            if key in first:
                line = _pos(first[key])[0]
                self.doc.keys[here] = _pos(key_node)
                self.doc.problems.append(
                    Problem(here, f"duplicate key {key!r} (first defined at line {line})")
                )
                self.doc.unresolved.add(here)  # which one was meant is anyone's guess
                continue
            first[key] = key_node
            self._place((*loc, key), key_node, value_node, weak)
            result[key] = self.build(value_node, (*loc, key), weak)
        for source in merges:  # `<<: *defaults`: keys written here win over merged ones
            if not isinstance(source, MappingNode):
                self.problem(loc, source, "'<<' merges mappings only")
                continue
            merged = self.build(source, loc, weak=True)
            for key, value in (merged if isinstance(merged, dict) else {}).items():
                result.setdefault(key, value)
        return result

    def scalar(self, node: ScalarNode, loc: Loc) -> Any:
        tag, text = node.tag, str(node.value)
        if tag == _T + "str":
            if "${" not in text:
                return text
            text = self.interpolate(node, loc, text)
            if node.style is not None:  # quoted: stays a string
                return text
            tag = self.composer.resolve(ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
        try:
            return _typed(tag, text)
        except ValueError:
            self.problem(loc, node, f"cannot read {text!r} as {tag.removeprefix(_T)}")
        except KeyError:
            self.problem(loc, node, f"unsupported YAML tag {tag}")
        return None

    def interpolate(self, node: ScalarNode, loc: Loc, text: str) -> str:
        failures: list[str] = []

        def substitute(match: re.Match[str]) -> str:
            if match.group(1):
                return "${" + match.group(2) + "}"
            ref = _ENV_REF.fullmatch(match.group(2))
            if ref is None:
                failures.append(
                    f"unknown interpolation '${{{match.group(2)}}}':"
                    " write ${env:NAME} or ${env:NAME:-default}"
                )
                return ""
            name, default = ref.group(1), ref.group(2)
            value = self.env.get(name)
            if default is not None and not value:
                return default
            if value is None:
                failures.append(
                    f"environment variable {name} is not set"
                    f" (give a default with ${{env:{name}:-value}})"
                )
                return ""
            self.doc.interpolated.add(loc)
            self.doc.written[loc] = text
            return value

        result = _INTERPOLATION.sub(substitute, text)
        if "${" in _INTERPOLATION.sub("", text):
            failures.append("unterminated '${' (write $${ for a literal ${)")
        for message in failures:
            self.problem(loc, node, message)
        if failures:
            self.doc.unresolved.add(loc)
        return result


def _typed(tag: str, text: str) -> Any:
    kind = tag.removeprefix(_T)
    if kind == "str":
        return text
    if kind == "null":
        if text not in ("", "~", "null", "Null", "NULL"):
            raise ValueError(text)
        return None
    if kind == "bool":
        if text.lower() not in ("true", "false"):
            raise ValueError(text)
        return text.lower() == "true"
    if kind == "int":
        digits = text.lower()
        if digits.startswith(("0x", "0o")):
            return int(digits[2:], 16 if digits[1] == "x" else 8)
        return int(digits)
    if kind == "float":
        lowered = text.lower().replace(".inf", "inf").replace(".nan", "nan")
        return float(lowered)
    raise KeyError(tag)


def _yaml_problem(exc: yaml.YAMLError, text: str) -> tuple[Position, str]:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        where = (mark.line + 1, mark.column + 1)
        problem = exc.problem or "invalid YAML"
        if "'\\t'" in problem:
            return where, "tab character: YAML indents with spaces only"
        if problem.startswith("expected <block end>"):
            problem = "bad indentation: this line does not line up with the keys above it"
        elif problem == "mapping values are not allowed here":
            problem += " (check the indentation, or quote a value that contains ': ')"
        context = ""
        if exc.context and exc.context_mark is not None and exc.context_mark.line != mark.line:
            context = f" ({exc.context} at line {exc.context_mark.line + 1})"
        return where, f"invalid YAML: {problem}{context}"
    if isinstance(exc, yaml.reader.ReaderError):
        at = exc.position
        where = (text.count("\n", 0, at) + 1, at - text.rfind("\n", 0, at))
        return where, f"invalid YAML: {exc.reason} (character #x{exc.character:04x})"
    return (1, 1), f"invalid YAML: {exc}"  # pragma: no cover - every YAMLError above


def read_document(text: str, env: Mapping[str, str] | None = None) -> Document:
    """Parse YAML text into a :class:`Document`; problems are collected, not raised."""
    doc = Document()
    try:
        composer = _Composer(text)
        node = composer.get_single_node()
        if node is None:
            empty = "the file is empty: a manifest needs at least servers: or endpoints:"
            doc.problems.append(Problem((), empty))
            doc.fatal = True
            return doc
        doc.data = _Builder(doc, os.environ if env is None else env, composer).build(node, ())
    except yaml.YAMLError as exc:
        (line, col), message = _yaml_problem(exc, text)
        doc.values[()] = (line, col)
        doc.problems.append(Problem((), message, at_value=True))
        doc.fatal = True
    except (_TooLarge, RecursionError):
        too_big = "the document is nested too deeply or expands too many aliases"
        doc.problems.append(Problem((), too_big))
        doc.fatal = True
    if not doc.fatal and not isinstance(doc.data, dict):
        found = "a list" if isinstance(doc.data, list) else "a single value"
        message = f"the manifest must be a mapping (models:, servers:, ...), not {found}"
        doc.problems.append(Problem((), message))
        doc.fatal = True
    return doc


# -- validation ----------------------------------------------------------------------


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


_DROP = object()
# Stands in for a required value that is missing or invalid, so the entry's other fields
# are still checked; whatever a rule says about the stand-in itself is not reported.
_STAND_IN = ""

# Checks of what a manifest names on this machine (model files, executables), given by a
# higher layer: (manifest, the manifest's folder, locations of values taken from the
# environment, whose text must not be shown) -> problems.
LocalCheck = Callable[[Manifest, Path, Collection[Loc]], Iterable[Problem]]


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


def _best_effort(
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
        manifest, broken = _best_effort(doc.data, bad)
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
