"""Apply against real processes: a stand-in for llama-server (same flags, /health and
/v1/models) launched through the real runtime and supervisor, so every path of apply
(create, replace, destroy, failure, pulls, saved plans, interrupted starts) runs fast.
The real engine is exercised in test_loop_real.py.
"""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import struct
import sys
import time
from pathlib import Path

import psutil
import pytest

from batuta.apply.execute import ApplyFailed, apply, apply_loaded, check_saved
from batuta.errors import StateError
from batuta.manifest import load_manifest
from batuta.plan import desired_state, make_plan
from batuta.plan.diff import Plan, ServerChange
from batuta.plan.render import plan_from_json, plan_json
from batuta.routing.table import read_table
from batuta.runtime import Runtime
from batuta.runtime.state import apply_lock
from tests.conftest import _free_port
from tests.fakes.base import FakeServer

FAKE_ENGINE = '''#!{python}
"""A stand-in for llama-server: its flags, GET /health and GET /v1/models."""
import json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

args = sys.argv[1:]

def opt(flag, default=None):
    return args[args.index(flag) + 1] if flag in args else default

if "--crash" in args:
    print("error: failed to load model (--crash given)", file=sys.stderr, flush=True)
    sys.exit(3)
time.sleep(float(opt("--delay", "0")))
model = opt("-m")

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            code, body = 200, {{"status": "ok"}}
        elif self.path == "/v1/models":
            code, body = 200, {{"object": "list", "data": [{{"id": model}}]}}
        else:
            code, body = 404, {{"error": "not found"}}
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

print(f"fake llama-server on {{opt('--host')}}:{{opt('--port')}} serving {{model}}", flush=True)
ThreadingHTTPServer((opt("--host"), int(opt("--port"))), Handler).serve_forever()
'''


def tiny_gguf(body: bytes = b"") -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, 0, 0) + body


def write_engine(folder: Path) -> Path:
    """The stand-in engine as an executable file in ``folder``."""
    path = folder / "fake-llama-server"
    path.write_text(FAKE_ENGINE.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def processes_under(folder: Path) -> list[psutil.Process]:
    """Live processes whose command line mentions ``folder`` (servers, supervisors)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.pid == os.getpid():
            continue  # an exited child of this test process, not yet reaped
        if str(folder) in " ".join(proc.info["cmdline"] or ()):
            found.append(proc)
    return found


def teardown_state(state_dir: Path, folder: Path) -> None:
    """Stop what the test started and check nothing of it is left running."""
    if state_dir.exists():
        runtime = Runtime(state_dir)
        runtime.stop_all()
        deadline = time.monotonic() + 15
        while runtime.supervisor_pid() is not None and time.monotonic() < deadline:
            time.sleep(0.05)
    deadline = time.monotonic() + 5
    while processes_under(folder) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_under(folder) == []


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("BATUTA_STATE_DIR", raising=False)
    monkeypatch.delenv("BATUTA_FILE", raising=False)
    monkeypatch.setenv("BATUTA_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "m.gguf").write_bytes(tiny_gguf(b"v1"))
    write_engine(tmp_path)
    yield tmp_path
    teardown_state(tmp_path / ".batuta", tmp_path)


def manifest(folder: Path, servers: dict[str, dict], routes: str = "", models: str = "") -> Path:
    """Write batuta.yaml with stand-in servers (``{name: {port, args?, ...}}``)."""
    lines = ["models:", "  m: {source: ./m.gguf}", models, "servers:" if servers else ""]
    for name, fields in servers.items():
        fields = {"model": "m", **fields}
        extra = "".join(f", {k}: {v}" for k, v in fields.items())
        lines.append(
            f"  {name}: {{backend: llamacpp, executable: {folder}/fake-llama-server{extra}}}"
        )
    path = folder / "batuta.yaml"
    path.write_text("\n".join(lines) + "\n" + routes)
    return path


def pids(folder: Path) -> dict[str, int | None]:
    return {n: s.pid for n, s in Runtime(folder / ".batuta").status().items()}


def test_apply_then_apply_again_touches_nothing(work: Path) -> None:
    p1, p2 = _free_port(), _free_port()
    path = manifest(
        work, {"a": {"port": p1}, "b": {"port": p2}}, "routes:\n  default: {targets: [a, b]}\n"
    )
    out: list[str] = []
    result = apply(path, echo=out.append)
    assert (result.added, result.changed, result.destroyed) == (3, 0, 0)
    assert result.started == ("a", "b")
    assert out[-1] == "Apply complete! Resources: 3 added, 0 changed, 0 destroyed."
    table = read_table(work / ".batuta" / "routes.json")
    targets = table.routes["default"].targets
    assert [(t.name, t.health, t.base_url) for t in targets] == [
        ("a", "ready", f"http://127.0.0.1:{p1}"),
        ("b", "ready", f"http://127.0.0.1:{p2}"),
    ]
    first = pids(work)
    assert all(psutil.pid_exists(pid) for pid in first.values() if pid)
    mtime = (work / ".batuta" / "routes.json").stat().st_mtime_ns
    again: list[str] = []
    result = apply(path, echo=again.append)
    assert again == ["No changes. Your servers match batuta.yaml."]
    assert (result.added, result.changed, result.destroyed) == (0, 0, 0)
    assert pids(work) == first
    assert (work / ".batuta" / "routes.json").stat().st_mtime_ns == mtime


def test_changed_server_is_replaced_alone_and_removed_one_stopped(work: Path) -> None:
    p1, p2, p3 = _free_port(), _free_port(), _free_port()
    path = manifest(work, {"a": {"port": p1}, "b": {"port": p2}, "c": {"port": p3}})
    apply(path, echo=lambda _: None)
    before = pids(work)
    manifest(work, {"a": {"port": p1, "ctx": 2048}, "b": {"port": p2}})
    plan = make_plan(path)
    assert {s.name: s.action for s in plan.servers} == {
        "a": "replace",
        "b": "no-op",
        "c": "destroy",
    }
    out: list[str] = []
    result = apply(path, echo=out.append)
    assert (result.added, result.destroyed) == (1, 2)
    assert result.stopped == ("c",) and result.started == ("a",)
    after = pids(work)
    assert after["b"] == before["b"]
    assert after["a"] != before["a"] and "c" not in after
    assert not psutil.pid_exists(before["c"]) or psutil.Process(before["c"]).status() == "zombie"
    assert any("server.a: Replacing... [ctx: 4096 → 2048]" in line for line in out)
    assert any(line.startswith("server.c: Destruction complete") for line in out)


def test_a_failed_start_reports_its_log_and_keeps_the_others(work: Path) -> None:
    p1, p2 = _free_port(), _free_port()
    path = manifest(
        work,
        {"a": {"port": p1}, "b": {"port": p2, "args": '["--crash"]', "restart": "never"}},
        "routes:\n  default: {targets: [b, a]}\n",
    )
    out: list[str] = []
    with pytest.raises(ApplyFailed) as caught:
        apply(path, echo=out.append)
    err = caught.value
    assert set(err.failures) == {"b"}
    assert "failed to load model (--crash given)" in err.log_tail
    assert "b: server 'b' (llamacpp) exited while starting" in str(err)
    assert err.result.started == ("a",)
    assert not any(line.startswith("Apply complete") for line in out)
    status = Runtime(work / ".batuta").status()
    assert status["a"].state == "ready" and "b" not in status
    table = read_table(work / ".batuta" / "routes.json")
    assert [(t.name, t.health) for t in table.routes["default"].targets] == [
        ("b", "unhealthy"),
        ("a", "ready"),
    ]
    # Fixing the manifest converges: only b is created.
    manifest(
        work, {"a": {"port": p1}, "b": {"port": p2}}, "routes:\n  default: {targets: [b, a]}\n"
    )
    result = apply(path, echo=lambda _: None)
    assert result.started == ("b",)


def test_swapping_ports_stops_the_blocking_server_first(work: Path) -> None:
    p1, p2 = _free_port(), _free_port()
    path = manifest(work, {"a": {"port": p1}, "b": {"port": p2}})
    apply(path, echo=lambda _: None)
    manifest(work, {"a": {"port": p2}, "b": {"port": p1}})
    result = apply(path, echo=lambda _: None)
    assert result.started == ("a", "b")
    status = Runtime(work / ".batuta").status()
    assert (status["a"].spec.port, status["b"].spec.port) == (p2, p1)
    assert status["a"].state == status["b"].state == "ready"


def test_a_dead_server_is_started_again(work: Path) -> None:
    p1 = _free_port()
    path = manifest(work, {"a": {"port": p1, "restart": "never"}})
    apply(path, echo=lambda _: None)
    pid = pids(work)["a"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Runtime(work / ".batuta").status()["a"].state != "exited":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    plan = make_plan(path)
    assert plan.server("a").action == "create"
    result = apply(path, echo=lambda _: None)
    assert result.started == ("a",) and pids(work)["a"] != pid


def test_an_interrupted_start_is_waited_for(work: Path) -> None:
    """An apply killed after recording a server leaves it starting: the next apply waits
    for it instead of starting it again."""
    p1 = _free_port()
    path = manifest(
        work, {"a": {"port": p1, "args": '["--delay", "2"]'}}, "routes:\n  r: {targets: [a]}\n"
    )
    loaded = load_manifest(path)
    spec = desired_state(loaded, {}).specs["a"]
    runtime = Runtime(loaded.state_dir)
    runtime.start(spec, wait=False)
    plan = make_plan(path)
    assert plan.server("a").action == "no-op"
    out: list[str] = []
    result = apply(path, echo=out.append)
    assert "server.a: Still starting, waiting..." in out
    assert result.started == () and result.added == 1  # the route
    assert read_table(loaded.state_dir / "routes.json").routes["r"].targets[0].health == "ready"
    assert runtime.status()["a"].restarts == 0


def test_a_second_apply_is_refused_while_one_holds_the_lock(work: Path) -> None:
    path = manifest(work, {})
    loaded = load_manifest(path)
    with apply_lock(loaded.state_dir), pytest.raises(StateError, match=f"pid {os.getpid()}"):
        apply_loaded(loaded, echo=lambda _: None)


def test_a_missing_model_is_pulled_then_served(work: Path) -> None:
    body = tiny_gguf(b"downloaded" * 1000)
    fake = FakeServer()
    fake.route(
        "GET",
        r"^/tiny\.gguf$",
        lambda req, res: res.send_bytes(200, body, "application/octet-stream"),
    )
    with fake:
        models = (
            f"  remote: {{source: '{fake.url}/tiny.gguf', "
            f"sha256: '{hashlib.sha256(body).hexdigest()}'}}"
        )
        port = _free_port()
        path = manifest(work, {"a": {"model": "remote", "port": port}}, models=models)
        plan = make_plan(path)
        assert [p.name for p in plan.pulls] == ["remote"]
        assert plan.server("a").pending_model == "remote"
        progress: list[tuple[str, int, int | None]] = []
        out: list[str] = []
        result = apply_loaded(
            load_manifest(path),
            echo=out.append,
            progress=lambda what, done, total: progress.append((what, done, total)),
        )
        assert result.started == ("a",)
        assert out[0].startswith("model.remote: Pulling from http://")
        assert progress and progress[-1][1] == len(body)
        status = Runtime(work / ".batuta").status()["a"]
        assert status.spec.model_digest == hashlib.sha256(body).hexdigest()
        assert make_plan(path).has_changes is False
        # The download vanishes from the cache while the server runs: the plan must pull
        # it again, and the apply must not restart a server that serves the same file.
        Path(status.spec.model_path).unlink()
        plan = make_plan(path)
        assert [p.name for p in plan.pulls] == ["remote"]
        assert plan.server("a").action == "replace"
        result = apply(path, echo=lambda _: None)
        assert result.started == () and pids(work)["a"] == status.pid
        assert Path(status.spec.model_path).is_file()


def test_a_saved_plan_is_applied_exactly_once(work: Path) -> None:
    p1 = _free_port()
    path = manifest(work, {"a": {"port": p1}})
    saved = plan_from_json(plan_json(make_plan(path)))
    result = apply(path, saved=saved, echo=lambda _: None)
    assert result.started == ("a",)
    with pytest.raises(StateError, match="running servers changed since the plan was saved"):
        apply(path, saved=saved, echo=lambda _: None)


def _plan(**kw) -> Plan:
    base = {"manifest": "/m.yaml", "manifest_digest": "d1", "fingerprint": "f1"}
    return Plan(**{**base, **kw})


@pytest.mark.parametrize(
    ("saved", "message"),
    [
        (_plan(manifest="/other.yaml"), "made for /other.yaml, not /m.yaml"),
        (_plan(manifest_digest="d0"), "changed since the plan was saved"),
        (_plan(fingerprint="f0"), "running servers changed"),
        (
            _plan(servers=(ServerChange("a", "create", config_hash="h0"),)),
            "server 'a' would now launch differently",
        ),
        (
            _plan(servers=(ServerChange("gone", "destroy"),)),
            "server 'gone' would now launch differently",
        ),
    ],
)
def test_check_saved_refuses_a_plan_that_no_longer_holds(saved: Plan, message: str) -> None:
    fresh = _plan(servers=(ServerChange("a", "create", config_hash="h1"),))
    with pytest.raises(StateError, match=message):
        check_saved(saved, fresh)


def test_check_saved_accepts_the_same_plan_and_pending_models() -> None:
    fresh = _plan(servers=(ServerChange("a", "create", config_hash="h1"),))
    check_saved(fresh, fresh)
    pending = _plan(servers=(ServerChange("a", "create", config_hash="x", pending_model="m"),))
    check_saved(pending, fresh)


def test_in_parallel_limits_concurrency_and_reraises() -> None:
    import threading

    from batuta.apply.execute import in_parallel

    lock = threading.Lock()
    running, peak = [0], [0]

    def work(item: int) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        if item == 3:
            raise ValueError("item 3")

    with pytest.raises(ValueError, match="item 3"):
        in_parallel(work, list(range(8)), 2)
    assert peak[0] == 2


def test_any_runtime_refusal_counts_as_a_failed_start() -> None:
    from batuta.apply.execute import _Executor
    from tests.plan.test_diff import spec

    class Refusing:
        def start(self, spec, *, wait, timeout):
            raise StateError("server 'a' was replaced or removed by another command")

    out: list[str] = []
    run = _Executor(Refusing(), {"a": spec()}, out.append)  # type: ignore[arg-type]
    run.start(ServerChange("a", "create"), "Creating")
    assert str(run.failures["a"]) == "server 'a' was replaced or removed by another command"
    assert out[-1] == "server.a: failed: server 'a' was replaced or removed by another command"


def test_the_package_exports_load_lazily() -> None:
    import batuta.apply
    from batuta.apply import execute, watch

    assert batuta.apply.apply is execute.apply
    assert batuta.apply.WatchLoop is watch.WatchLoop
    assert sorted(batuta.apply.__all__) == [
        *("ApplyFailed", "ApplyResult", "DestroyResult", "WatchLoop"),
        *("apply", "apply_loaded", "destroy"),
    ]
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        batuta.apply.nope  # noqa: B018
