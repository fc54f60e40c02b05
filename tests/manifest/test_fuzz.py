"""Thousands of broken manifests: every one gives located, readable errors and no traceback.

Each case is a valid manifest (the default one, the examples, the tests' own) with a
mutation that always breaks it: a value of a wrong type, an unknown or misspelt key, a
required key deleted, a reference to nothing, a duplicated line, a tab, a control
character, an unclosed bracket. A last kind inserts random text and keeps only the
cases that became invalid.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from batuta.cli.main import main
from batuta.errors import ManifestError
from batuta.manifest import load_text
from batuta.manifest.load import read_document
from batuta.runtime.preflight import local_checks
from tests.manifest.helpers import VALID

ROOT = Path(__file__).resolve().parents[2]
BASES = [VALID] + [
    p.read_text() for p in [ROOT / "batuta.yaml", *(ROOT / "examples").glob("*.yaml")]
]
# Maps whose keys are the user's names (or free-form), not the schema's.
FREE_MAPS = {
    "models",
    "servers",
    "endpoints",
    "routes",
    "env",
    "options",
    "node_selector",
    "images",
}
REQUIRED = {"source", "backend", "model", "provider"}
KEY_LINE = re.compile(r"^\s*[A-Za-z_][\w.-]*:(\s|$)")
BAD_VALUE = {"zz_bad": [1]}
EXAMPLES = 2000
CLI_EVERY = 20


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path] if path else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _paths(value, (*path, i))
    return found


def _parent(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        data = data[part]
    return data


def _mutate_data(kind: str, text: str, data: st.DataObject) -> str:
    tree = read_document(text).data
    tree = copy.deepcopy(tree)
    paths = _paths(tree)
    if kind == "wrong_type":
        path = data.draw(st.sampled_from(paths))
        _parent(tree, path)[path[-1]] = BAD_VALUE
    elif kind == "unknown_key":
        maps = [()] + [p for p in paths if isinstance(_parent(tree, (*p, None)), dict)]
        path = data.draw(st.sampled_from(maps))
        _parent(tree, (*path, None))["zz_unknown"] = BAD_VALUE
    elif kind == "misspelt_key":
        keys = [p for p in paths if _is_schema_key(p)]
        path = data.draw(st.sampled_from(keys))
        parent = _parent(tree, path)
        parent[path[-1][:-1]] = parent.pop(path[-1])
    elif kind == "missing_required":
        keys = [p for p in paths if len(p) == 3 and p[-1] in REQUIRED]
        path = data.draw(st.sampled_from(keys))
        del _parent(tree, path)[path[-1]]
    else:  # bad_ref
        refs = [p for p in paths if len(p) == 3 and p[0] == "servers" and p[2] == "model"]
        routes = [("routes", name) for name in tree.get("routes", {})]
        path = data.draw(st.sampled_from(refs + routes))
        if path[0] == "servers":
            _parent(tree, path)[path[-1]] = "no-such-model"
        else:
            route = _parent(tree, (*path, None))
            route["targets"] = [*(route.get("targets") or []), "no-such-target"]
    return yaml.safe_dump(tree, sort_keys=False)


def _is_schema_key(path: tuple[Any, ...]) -> bool:
    if not isinstance(path[-1], str):
        return False
    if len(path) == 1:
        return True
    # models.<name>.<key>, servers.<name>.env.<VAR>, ...: the name level is the user's
    names = [i for i, part in enumerate(path) if part in FREE_MAPS and i + 1 < len(path)]
    return not names or names[-1] + 1 != len(path) - 1


def _mutate_text(kind: str, text: str, data: st.DataObject) -> str:
    lines = text.splitlines(keepends=True)
    if kind == "duplicate_line":
        keyed = [i for i, line in enumerate(lines) if KEY_LINE.match(line)]
        i = data.draw(st.sampled_from(keyed))
        lines.insert(i + 1, lines[i].rstrip("\n") + "\n")
    elif kind == "tab_line":
        lines.insert(data.draw(st.integers(0, len(lines))), "\tzz: 1\n")
    elif kind == "unclosed_flow":
        lines.insert(data.draw(st.integers(0, len(lines))), "zz: [\n")
    elif kind == "control_char":
        at = data.draw(st.integers(0, len(text)))
        return text[:at] + "\x07" + text[at:]
    else:  # garbage
        at = data.draw(st.integers(0, len(text)))
        junk = data.draw(st.text(alphabet=":-[]{}&*!|>'\"%@`#,?\t\n abc019", max_size=12))
        return text[:at] + junk + text[at:]
    return "".join(lines)


DATA_KINDS = ["wrong_type", "unknown_key", "misspelt_key", "missing_required", "bad_ref"]
TEXT_KINDS = ["duplicate_line", "tab_line", "unclosed_flow", "control_char", "garbage"]


def test_broken_manifests_always_give_located_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: dict[str, int] = {}
    checks = local_checks(tmp_path / "cache")

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(
        base=st.sampled_from(BASES),
        kind=st.sampled_from(DATA_KINDS + TEXT_KINDS),
        data=st.data(),
    )
    def run(base: str, kind: str, data: st.DataObject) -> None:
        mutate = _mutate_data if kind in DATA_KINDS else _mutate_text
        text = mutate(kind, base, data)
        try:
            # as `batuta validate` does: what the manifest names on this machine too
            load_text(text, tmp_path / "fuzz.yaml", display="fuzz.yaml", env={}, checks=checks)
        except ManifestError as exc:
            issues = exc.issues
        else:
            assert kind == "garbage", f"{kind} left the manifest valid:\n{text}"
            assume(False)
        assert issues
        for issue in issues:
            assert issue.line >= 1 and issue.col >= 1, issue
            assert issue.message.strip(), issue
            assert issue.file == "fuzz.yaml"
        count = sum(seen.values())
        seen[kind] = seen.get(kind, 0) + 1
        if count % CLI_EVERY == 0:
            path = tmp_path / "fuzz.yaml"
            path.write_text(text, encoding="utf-8")
            assert main(["validate", "-f", str(path)]) == 1
            out, err = capsys.readouterr()
            assert "Traceback" not in out + err
            printed = out.splitlines()
            assert len(printed) == len(issues)
            assert all(line.startswith(f"{path}:") for line in printed)

    run()
    assert sum(seen.values()) >= EXAMPLES
    assert set(seen) == set(DATA_KINDS + TEXT_KINDS), seen
