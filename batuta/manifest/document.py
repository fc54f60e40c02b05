"""``batuta.yaml`` as data: YAML read with where every key and value is written.

Keys are always strings; plain values follow YAML 1.2's core schema (only ``true``/``false``
are booleans, so ``restart: no`` or ``on:`` mean what they say; no dates, no base-60
numbers). Duplicate keys are errors rather than silently keeping the last one, and string
values go through ``${env:}`` (:mod:`batuta.manifest.interpolation`). Problems are collected
in the :class:`Document`, each at its line and column, never raised. Separate from the
validation in :mod:`batuta.manifest.load`, which works on the data this module gives.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

from batuta.manifest.interpolation import interpolate
from batuta.manifest.problems import Loc, Problem

_T = "tag:yaml.org,2002:"
_MAX_NODES = 20_000  # alias "billion laughs" guard: real manifests have a few hundred nodes
_MAX_DEPTH = 64

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
        done = interpolate(text, self.env)
        if done.from_env:
            self.doc.interpolated.add(loc)
            self.doc.written[loc] = text
        for message in done.failures:
            self.problem(loc, node, message)
        if done.failures:
            self.doc.unresolved.add(loc)
        return done.text


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
