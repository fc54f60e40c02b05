"""The loop on the command line: plan, apply, status, down, logs (exit codes, output)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from batuta.cli.main import main
from batuta.runtime import Runtime
from tests.apply.test_execute import (
    manifest,
    processes_under,
    teardown_state,
    tiny_gguf,
    write_engine,
)
from tests.conftest import _free_port

ENDPOINTS = """endpoints:
  groq: {provider: groq, model: llama-3.1-8b-instant, api_key_env: GROQ_API_KEY}
routes:
  default: {targets: [groq]}
"""


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("BATUTA_STATE_DIR", raising=False)
    monkeypatch.delenv("BATUTA_FILE", raising=False)
    monkeypatch.setenv("BATUTA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.gguf").write_bytes(tiny_gguf(b"v1"))
    write_engine(tmp_path)
    yield tmp_path
    teardown_state(tmp_path / ".batuta", tmp_path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_exit_codes_json_and_saved_plans(work: Path, capsys) -> None:
    (work / "batuta.yaml").write_text(ENDPOINTS)
    code, out, _ = run(capsys, "plan", "--detailed-exitcode")
    assert code == 2
    assert "+ route default → groq" in out and "\x1b[" not in out  # no colour off a TTY
    assert out.rstrip().endswith("Plan: 1 to add, 0 to change, 0 to destroy.")
    assert run(capsys, "plan")[0] == 0
    code, out, _ = run(capsys, "plan", "--json")
    data = json.loads(out)
    assert data["summary"] == {"add": 1, "change": 0, "destroy": 0}
    assert data["routes"][0]["name"] == "default"
    code, out, _ = run(capsys, "plan", "--out", "tfplan")
    assert "To perform exactly these actions, run: batuta apply tfplan" in out
    code, out, _ = run(capsys, "plan", "--json", "--out", "tfplan.json")
    assert json.loads(out) == json.loads((work / "tfplan.json").read_text())
    code, out, _ = run(capsys, "apply", "tfplan")
    assert code == 0 and "Apply complete! Resources: 1 added, 0 changed, 0 destroyed." in out
    code, _, err = run(capsys, "apply", "tfplan")
    assert code == 1 and "changed since the plan was saved" in err
    code, out, _ = run(capsys, "plan", "--detailed-exitcode")
    assert (code, out.strip()) == (0, "No changes. Your servers match batuta.yaml.")
    code, out, _ = run(capsys, "apply")
    assert (code, out.strip()) == (0, "No changes. Your servers match batuta.yaml.")


def test_errors_are_clean_and_exit_1(work: Path, capsys) -> None:
    code, _, err = run(capsys, "plan", "--detailed-exitcode")
    assert code == 1 and "batuta.yaml:1:1: file not found" in err
    (work / "batuta.yaml").write_text(ENDPOINTS.replace("targets", "targetz"))
    code, _, err = run(capsys, "apply", "-f", "batuta.yaml")
    assert code == 1 and "batuta.yaml:4:13: routes.default.targetz: unknown key" in err
    assert "Traceback" not in err
    assert not (work / ".batuta" / "routes.json").exists()
    (work / "bad-plan").write_text("[1, 2]")
    code, _, err = run(capsys, "apply", "bad-plan")
    assert code == 1 and "bad-plan is not a batuta plan file" in err
    code, _, err = run(capsys, "apply", "missing-plan")
    assert code == 1 and "cannot read plan file missing-plan" in err
    code, _, err = run(capsys, "apply", "--watch", "bad-plan")
    assert code == 2 and "--watch re-plans on every edit" in err


def test_status_logs_and_down_with_servers(work: Path, capsys) -> None:
    p1, p2 = _free_port(), _free_port()
    manifest(work, {"a": {"port": p1}, "b": {"port": p2}}, "routes:\n  r: {targets: [a, b]}\n")
    code, out, _ = run(capsys, "apply")
    assert code == 0 and "Apply complete! Resources: 3 added" in out
    code, out, _ = run(capsys, "status", "--json")
    data = json.loads(out)
    assert data["in_sync"] is True
    assert [(s["name"], s["state"], s["health"], s["drift"]) for s in data["servers"]] == [
        ("a", "ready", "ready", "in sync"),
        ("b", "ready", "ready", "in sync"),
    ]
    assert data["routes"] == {
        "r": [{"target": "a", "health": "ready"}, {"target": "b", "health": "ready"}]
    }
    manifest(work, {"a": {"port": p1, "ctx": 512}}, "routes:\n  r: {targets: [a]}\n")
    code, out, _ = run(capsys, "status")
    assert "config changed" in out and "not declared" in out
    assert "  r → a (ready), b (ready)" in out

    code, out, _ = run(capsys, "logs", "a", "-n", "1")
    assert code == 0 and out.strip().startswith("[batuta ")  # batuta's own "ready" note
    code, out, _ = run(capsys, "logs", "a", "-n", "50")
    assert f"fake llama-server on 127.0.0.1:{p1}" in out
    code, _, err = run(capsys, "logs", "nope")
    assert code == 1 and "no server named 'nope'" in err and "servers on record: a, b" in err

    pids = [s.pid for s in Runtime(work / ".batuta").status().values()]
    code, out, _ = run(capsys, "down")
    assert code == 0
    assert "routes: Removed the routing table" in out
    assert out.strip().endswith("Destroy complete! Resources: 2 destroyed.")
    assert not (work / ".batuta" / "routes.json").exists()
    assert Runtime(work / ".batuta").status() == {}
    assert Runtime(work / ".batuta").supervisor_pid() is None
    assert [p.cmdline() for p in processes_under(work)] == []
    assert all(pid is not None for pid in pids)
    code, out, _ = run(capsys, "down")
    assert out.strip() == "Destroy complete! Resources: 0 destroyed."


def test_down_and_logs_work_with_a_broken_manifest(work: Path, capsys) -> None:
    (work / "batuta.yaml").write_text("servers: [")
    code, out, _ = run(capsys, "down")
    assert (code, out.strip()) == (
        0,
        "Nothing to stop: batuta has not started anything for this manifest.",
    )
    code, _, err = run(capsys, "logs", "x", "--file", "batuta.yaml")
    assert code == 1 and "no server named 'x'" in err


def test_down_leaves_other_manifests_alone(work: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("BATUTA_STATE_DIR", str(work / "shared"))
    (work / "other").mkdir()
    write_engine(work / "other")
    (work / "other" / "m.gguf").write_bytes(tiny_gguf(b"v2"))
    theirs = manifest(work / "other", {"theirs": {"port": _free_port()}})
    ours = manifest(work, {"ours": {"port": _free_port()}})
    assert run(capsys, "apply", "-f", str(theirs))[0] == 0
    assert run(capsys, "apply", "-f", str(ours))[0] == 0
    code, out, _ = run(capsys, "plan", "-f", str(ours), "--detailed-exitcode")
    assert code == 0
    code, out, _ = run(capsys, "down", "-f", str(ours))
    assert "Resources: 1 destroyed" in out
    assert set(Runtime(work / "shared").status()) == {"theirs"}
    teardown_state(work / "shared", work)


def test_logs_for_a_recorded_server_without_a_log(work: Path, capsys) -> None:
    from batuta.runtime.state import ServerRecord, locked_state
    from tests.plan.test_diff import spec

    with locked_state(work / ".batuta") as state:
        state.servers["quiet"] = ServerRecord(spec=spec(name="quiet"), state="stopped")
    code, _, err = run(capsys, "logs", "quiet")
    assert code == 0 and "has not written a log yet" in err
    with locked_state(work / ".batuta") as state:
        state.servers.clear()


def _interrupt_after(seconds: float) -> threading.Timer:
    """Ctrl-C for the main thread (where the command runs) after ``seconds``."""
    import signal

    main_thread = threading.main_thread().ident
    timer = threading.Timer(seconds, lambda: signal.pthread_kill(main_thread, signal.SIGINT))
    timer.start()
    return timer


def test_apply_watch_runs_until_ctrl_c(work: Path, capsys) -> None:
    (work / "batuta.yaml").write_text(ENDPOINTS)
    _interrupt_after(1.0)
    code, out, _ = run(capsys, "apply", "--watch")
    assert code == 0
    assert "Apply complete! Resources: 1 added" in out
    assert "Watching 1 file(s) for changes (Ctrl-C to stop)..." in out
    assert out.rstrip().endswith("The servers keep running (`batuta down` stops them).")


def test_logs_follow_runs_until_ctrl_c(work: Path, capsys) -> None:
    log = work / ".batuta" / "logs" / "a.log"
    log.parent.mkdir(parents=True)
    log.write_text("one\ntwo\n")

    def append() -> None:
        time.sleep(0.3)
        with open(log, "a") as f:
            f.write("three\n")

    threading.Thread(target=append).start()
    _interrupt_after(0.8)
    code, out, _ = run(capsys, "logs", "a", "-f", "-n", "1")
    assert (code, out) == (0, "two\nthree\n")


def test_down_finds_what_apply_started_through_dotdot_and_symlinks(
    work: Path, capsys, monkeypatch
) -> None:
    """A manifest is one file however its path is spelled: `apply -f ../proj/batuta.yaml`,
    then `down` inside proj/ (or through a symlinked directory) stops its servers."""
    proj, other = work / "proj", work / "other"
    proj.mkdir()
    other.mkdir()
    (work / "link").symlink_to(proj)
    (proj / "m.gguf").write_bytes(tiny_gguf(b"v1"))
    write_engine(proj)
    try:
        manifest(proj, {"a": {"port": _free_port()}}, "routes:\n  r: {targets: [a]}\n")
        monkeypatch.chdir(other)
        code, out, err = run(capsys, "apply", "-f", "../proj/batuta.yaml")
        assert code == 0, err
        monkeypatch.chdir(proj)
        code, out, _ = run(capsys, "down")
        assert code == 0 and "Resources: 1 destroyed" in out
        assert "Removed the routing table" in out
        assert Runtime(proj / ".batuta").status() == {}

        monkeypatch.chdir(work)
        code, out, err = run(capsys, "apply", "-f", "link/batuta.yaml")
        assert code == 0, err
        state = json.loads((proj / ".batuta" / "state.json").read_text())
        assert state["servers"]["a"]["spec"]["manifest"] == str(proj.resolve() / "batuta.yaml")
        code, out, _ = run(capsys, "status", "-f", "proj/../proj/batuta.yaml", "--json")
        assert json.loads(out)["in_sync"] is True
        code, out, _ = run(capsys, "down", "-f", "proj/batuta.yaml")
        assert code == 0 and "Resources: 1 destroyed" in out
        assert not (proj / ".batuta" / "routes.json").exists()
    finally:
        teardown_state(proj / ".batuta", proj)


def test_a_state_dir_batuta_creates_is_ignored_by_git(work: Path, capsys) -> None:
    import subprocess

    subprocess.run(["git", "init", "-q", str(work)], check=True)
    (work / "batuta.yaml").write_text(ENDPOINTS)
    code, _, err = run(capsys, "apply")
    assert code == 0, err
    assert (work / ".batuta" / "routes.json").is_file()
    assert (work / ".batuta" / ".gitignore").read_text().splitlines()[-1] == "*"
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=work, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert ".batuta" not in status.stdout and "batuta.yaml" in status.stdout
