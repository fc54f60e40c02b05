"""Observing: live servers probed at once, the table read, a fingerprint of the state."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import pytest

from batuta.plan.observe import fingerprint, observe, probe_all, read_current_table
from batuta.routing.table import RouteEntry, RoutingTable, write_table
from batuta.runtime.spec import ServerSpec, ServerStatus
from tests.fakes.base import FakeServer


def _status(name: str, url: str, state: str = "ready", pid: int | None = 10) -> ServerStatus:
    spec = ServerSpec(
        name=name,
        backend="llamacpp",
        argv=("llama-server",),
        host="127.0.0.1",
        port=1,
        health_url=url,
        model_path="/m.gguf",
        origin="manifest",
        manifest="/m.yaml",
    )
    return ServerStatus(spec=spec, state=state, pid=pid, create_time=1.0)  # type: ignore[arg-type]


def test_probes_only_live_servers_and_all_at_once() -> None:
    slow = FakeServer()

    def answer(req, res) -> None:
        time.sleep(0.3)
        res.send_json(200, {"status": "ok"})

    slow.route("GET", r"^/health$", answer)
    loading = FakeServer()
    loading.route("GET", r"^/health$", lambda req, res: res.send_json(503, {"error": "Loading"}))
    with slow, loading:
        statuses = {f"s{i}": _status(f"s{i}", f"{slow.url}/health") for i in range(6)}
        statuses["loading"] = _status("loading", f"{loading.url}/health", state="starting")
        statuses["dead"] = _status("dead", f"{slow.url}/health", state="exited", pid=None)
        started = time.monotonic()
        health = probe_all(statuses, timeout=2.0)
        elapsed = time.monotonic() - started
    assert health == {**{f"s{i}": "ready" for i in range(6)}, "loading": "loading"}
    assert elapsed < 1.2  # six 0.3 s probes in parallel, not 1.8 s in a row
    assert probe_all({}) == {}


def test_a_probe_that_times_out_is_down() -> None:
    hang = FakeServer()
    release = threading.Event()
    hang.route("GET", r"^/health$", lambda req, res: release.wait(2))
    with hang:
        health = probe_all({"a": _status("a", f"{hang.url}/health")}, timeout=0.2)
        release.set()
    assert health == {"a": "down"}


def test_injected_prober() -> None:
    calls: list[tuple[str, float]] = []

    def prober(url: str, timeout: float) -> str:
        calls.append((url, timeout))
        return "ready"

    assert probe_all({"a": _status("a", "u")}, timeout=0.1, prober=prober) == {"a": "ready"}
    assert calls == [("u", 0.1)]


def test_fingerprint_moves_with_what_a_plan_depends_on() -> None:
    a = _status("a", "u")
    base = fingerprint({"a": a}, b"table")
    assert fingerprint({"a": a}, b"table") == base
    assert fingerprint({"a": dataclasses.replace(a, pid=11)}, b"table") != base
    assert fingerprint({"a": dataclasses.replace(a, state="exited")}, b"table") != base
    assert fingerprint({"a": a}, b"other table") != base
    assert fingerprint({"a": a}, None) != base
    assert fingerprint({}, b"table") != base
    # Health flapping between probes does not invalidate a saved plan.
    assert fingerprint({"a": dataclasses.replace(a, state="unhealthy")}, b"table") == base


def test_read_current_table(tmp_path: Path) -> None:
    assert read_current_table(tmp_path) == (None, None, "")
    table = RoutingTable(
        manifest="/m.yaml",
        routes={"r": RouteEntry("r", "interactive", "standard", "balanced", targets=())},
    )
    write_table(tmp_path / "routes.json", table)
    got, raw, error = read_current_table(tmp_path)
    assert got == table and raw and error == ""
    (tmp_path / "routes.json").write_text("{not json")
    got, raw, error = read_current_table(tmp_path)
    assert got is None and raw == b"{not json" and "unreadable" in error


def test_observe_reads_the_runtime_and_the_table(tmp_path: Path) -> None:
    class Recorded:
        def status(self) -> dict[str, ServerStatus]:
            return {"a": _status("a", "http://127.0.0.1:9/health")}

    seen: list[str] = []
    observation = observe(
        tmp_path,
        runtime=Recorded(),  # type: ignore[arg-type]
        prober=lambda url, timeout: seen.append(url) or "down",
    )
    assert observation.health == {"a": "down"} and seen == ["http://127.0.0.1:9/health"]
    assert observation.table is None and observation.table_error == ""
    assert observation.fingerprint == fingerprint(observation.statuses, None)
    quiet = observe(tmp_path, runtime=Recorded(), probe_health=False)  # type: ignore[arg-type]
    assert quiet.health == {}


def test_observe_an_empty_state_dir_with_the_real_runtime(tmp_path: Path) -> None:
    observation = observe(tmp_path / ".batuta")
    assert observation.statuses == {} and observation.health == {}


@pytest.mark.parametrize("state", ["starting", "ready", "unhealthy"])
def test_live_states_are_probed(state: str) -> None:
    got = probe_all({"a": _status("a", "u", state=state)}, prober=lambda u, t: "ready")
    assert got == {"a": "ready"}
