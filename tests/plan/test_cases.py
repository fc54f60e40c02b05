"""Planner cases as data: a manifest and the observed state in, the plan out.

Each ``cases/*.yaml`` holds:

- ``manifest``: the batuta.yaml being planned (``files`` are written beside it first;
  ``m.gguf`` defaults to a tiny GGUF whose body is ``v1``);
- ``recorded`` (optional): the manifest that was applied before. Its specs become the
  observed statuses (``state`` overrides state / last_exit / restarts / message per
  server) and, unless ``table: false``, its routing table is the one on disk;
- ``observed`` (optional): more servers on record, e.g. ad-hoc ones or another
  manifest's, given as ``{port, origin, manifest, state}``;
- ``health``: probe results by server name;
- ``expect``: actions per server and route, attribute changes, the summary line,
  pulls, notes, text the rendering must (not) contain, text the JSON must not
  contain, or an ``error``.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import click
import pytest
import yaml

from batuta.errors import StateError
from batuta.manifest import load_text
from batuta.plan import desired_state, plan_from
from batuta.plan.diff import Plan
from batuta.plan.observe import Observation
from batuta.plan.render import plan_from_json, plan_json, render_plan
from batuta.runtime.spec import ServerSpec, ServerStatus

CASES = sorted((Path(__file__).parent / "cases").glob("*.yaml"))


def gguf(body: str) -> bytes:
    """A minimal valid GGUF (version 3, no tensors, no metadata) followed by ``body``."""
    return b"GGUF" + struct.pack("<IQQ", 3, 0, 0) + body.encode()


def _write_files(base: Path, files: dict[str, str], stamp: int) -> None:
    for name, body in files.items():
        path = base / name
        path.write_bytes(gguf(body))
        # Distinct mtimes: the digest cache is keyed by (path, size, mtime).
        os.utime(path, ns=(stamp, stamp))


def _observed_extra(name: str, raw: dict, base: Path) -> ServerStatus:
    manifest = raw.get("manifest")
    spec = ServerSpec(
        name=name,
        backend=raw.get("backend", "llamacpp"),
        argv=("llama-server", "--port", str(raw["port"])),
        host="127.0.0.1",
        port=raw["port"],
        health_url=f"http://127.0.0.1:{raw['port']}/health",
        model_path="/models/x.gguf",
        origin=raw.get("origin", "adhoc"),
        manifest=str(base / manifest) if manifest else None,
    )
    return ServerStatus(spec=spec, state=raw.get("state", "ready"), pid=raw.get("pid", 4242))


def run_case(case: dict, tmp_path: Path) -> Plan:
    env = case.get("env", {})
    path = tmp_path / "batuta.yaml"
    cache = tmp_path / "cache"
    statuses: dict[str, ServerStatus] = {}
    table = None
    recorded = case.get("recorded")
    if recorded:
        _write_files(tmp_path, recorded.get("files", {"m.gguf": "v1"}), 1_000_000_000)
        path.write_text(recorded["manifest"])
        before = load_text(recorded["manifest"], path, env=recorded.get("env", env))
        wanted = desired_state(before, {}, cache_dir=cache)
        for pid, (name, spec) in enumerate(sorted(wanted.specs.items()), start=1000):
            raw = (recorded.get("state") or {}).get(name, {})
            state = raw.get("state", "ready")
            statuses[name] = ServerStatus(
                spec=spec,
                state=state,
                pid=pid if state in ("starting", "ready", "unhealthy") else None,
                restarts=raw.get("restarts", 0),
                last_exit=raw.get("last_exit"),
                message=raw.get("message", ""),
            )
        if recorded.get("table", True):
            table = wanted.table
    for name, raw in (case.get("observed") or {}).items():
        statuses[name] = _observed_extra(name, raw, tmp_path)
    _write_files(tmp_path, case.get("files", {"m.gguf": "v1"}), 2_000_000_000)
    path.write_text(case["manifest"])
    loaded = load_text(case["manifest"], path, env=env)
    observation = Observation(
        statuses=statuses, health=case.get("health", {}), table=table, fingerprint="fp"
    )
    return plan_from(loaded, observation, cache_dir=cache)


@pytest.mark.parametrize("case_file", CASES, ids=lambda p: p.stem)
def test_case(case_file: Path, tmp_path: Path) -> None:
    case = yaml.safe_load(case_file.read_text())
    expect = case["expect"]
    if "error" in expect:
        with pytest.raises(StateError, match=expect["error"]):
            run_case(case, tmp_path)
        return
    plan = run_case(case, tmp_path)
    assert {s.name: s.action for s in plan.servers} == expect["servers"]
    assert {r.name: r.action for r in plan.routes} == expect.get("routes", {})
    for name, changes in (expect.get("changes") or {}).items():
        assert [str(c) for c in plan.server(name).changes] == changes, name
    for name, reasons in (expect.get("reasons") or {}).items():
        got = " | ".join(plan.server(name).reasons)
        for reason in reasons:
            assert reason in got, (name, got)
    routes = {r.name: r for r in plan.routes}
    for name, changes in (expect.get("route_changes") or {}).items():
        assert [str(c) for c in routes[name].changes] == changes, name
    assert [p.name for p in plan.pulls] == expect.get("pulls", [])
    for note in expect.get("notes", []):
        assert any(note in n for n in plan.notes), plan.notes
    if "notes" not in expect:
        assert plan.notes == ()
    text = click.unstyle(render_plan(plan))
    assert text.splitlines()[-1] == expect["summary"]
    for fragment in expect.get("render_contains", []):
        assert fragment in text
    as_json = json.dumps(plan_json(plan))
    for fragment in expect.get("render_excludes", []):
        assert fragment not in text
    for fragment in expect.get("json_excludes", []):
        assert fragment not in as_json
    # The saved-plan file round-trips exactly.
    assert plan_from_json(plan_json(plan)) == plan


def test_every_case_is_collected() -> None:
    assert len(CASES) >= 20
