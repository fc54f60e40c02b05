"""The gateway ``apply`` runs: a real ``python -m batuta.gateway`` under the real supervisor,
in front of a strict OpenAI fake (as an endpoint) and a stand-in llama-server.

Started after the routing table is written, ready when ``/health`` answers, restarted
after a kill -9 like a server, left alone by a route change, stopped first (draining the
stream in flight) by ``down``; a taken port is refused before anything changes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from batuta.apply.execute import ApplyFailed, apply
from batuta.apply.gateway import start_gateway
from batuta.apply.teardown import destroy
from batuta.cli.main import main
from batuta.manifest import load_manifest
from batuta.plan import desired_state, make_plan
from batuta.plan.diff import ServerChange
from batuta.plan.gateway import GatewayPortError
from batuta.runtime import Runtime
from batuta.runtime.gateway import GATEWAY
from batuta.runtime.spec import ServerStatus
from tests.apply.test_execute import processes_under, teardown_state, tiny_gguf, write_engine
from tests.conftest import _free_port
from tests.fakes.openai_server import OpenAIFake
from tests.fakes.scripted import DEFAULT_TEXT

HI = {"model": "default", "messages": [{"role": "user", "content": "Hi"}]}


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.delenv("BATUTA_STATE_DIR", raising=False)
    monkeypatch.delenv("BATUTA_FILE", raising=False)
    monkeypatch.setenv("BATUTA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-test")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.gguf").write_bytes(tiny_gguf(b"v1"))
    write_engine(tmp_path)
    yield tmp_path
    teardown_state(tmp_path / ".batuta", tmp_path)


@pytest.fixture
def fake() -> Iterator[OpenAIFake]:
    with OpenAIFake(api_key="sk-test", model="gpt-4o-mini") as server:
        yield server


def write(
    folder: Path, fake: OpenAIFake, port: int | None, routes: str = "", server_port: int = 0
) -> Path:
    """A manifest: endpoint ``up`` (the fake), route ``default`` → up, and a gateway block
    when ``port`` is given (and a stand-in server ``s`` when ``server_port`` is)."""
    text = (
        "endpoints:\n"
        f"  up: {{provider: openai, model: gpt-4o-mini, base_url: '{fake.url}/v1',"
        " api_key_env: FAKE_OPENAI_KEY}\n"
    )
    if server_port:
        text += (
            "models:\n  m: {source: ./m.gguf}\nservers:\n"
            f"  s: {{backend: llamacpp, model: m, port: {server_port},"
            f" executable: {folder}/fake-llama-server}}\n"
        )
    text += "routes:\n  default: {targets: [up]}\n" + routes
    if port is not None:
        text += f"gateway:\n  listen: 127.0.0.1:{port}\n"
    path = folder / "batuta.yaml"
    path.write_text(text)
    return path


def gateway_status(folder: Path) -> ServerStatus | None:
    return Runtime(folder / ".batuta").status().get(GATEWAY)


def chat(port: int, **extra: object) -> httpx.Response:
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    return httpx.post(url, json={**HI, **extra}, timeout=10)


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_apply_status_logs_and_down(
    work: Path, fake: OpenAIFake, capsys: pytest.CaptureFixture[str]
) -> None:
    port = _free_port()
    path = write(work, fake, port)
    out: list[str] = []
    result = apply(path, echo=out.append)
    assert (result.added, result.destroyed) == (2, 0)  # the route and the gateway
    wrote = next(i for i, line in enumerate(out) if line.startswith("routes: Wrote"))
    created = next(i for i, line in enumerate(out) if line.startswith("gateway: Creation"))
    assert wrote < created  # started only once the table it serves exists
    status = gateway_status(work)
    assert status is not None and status.state == "ready" and status.pid
    answer = chat(port)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == DEFAULT_TEXT
    assert fake.requests[-1].headers["authorization"] == "Bearer sk-test"  # its env reached it

    capsys.readouterr()
    assert main(["status"]) == 0
    screen = capsys.readouterr().out
    head, row = next(
        (line, screen.splitlines()[i + 1])
        for i, line in enumerate(screen.splitlines())
        if line.startswith("GATEWAY")
    )
    assert head.split() == ["GATEWAY", "STATE", "HEALTH", "PID", "LISTEN", "RESTARTS", "DRIFT"]
    assert row.split() == [
        "gateway", "ready", "ready", str(status.pid), f"http://127.0.0.1:{port}", "0", "in", "sync"
    ]  # fmt: skip
    assert main(["status", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["in_sync"] is True and payload["servers"] == []
    assert payload["gateway"]["pid"] == status.pid
    assert payload["gateway"]["listen"] == f"http://127.0.0.1:{port}"
    assert main(["serve", "list", "--json"]) == 0  # the gateway is not one of the servers
    assert json.loads(capsys.readouterr().out) == []

    assert main(["logs", "gateway"]) == 0
    log = capsys.readouterr().out
    assert f"batuta gateway: listening on http://127.0.0.1:{port} (routes: default)" in log
    assert "ready at" in log

    assert main(["down"]) == 0
    down = capsys.readouterr().out
    assert f"gateway: Destroying... [pid {status.pid}]" in down
    assert "Destroy complete! Resources: 1 destroyed." in down
    assert not psutil.pid_exists(status.pid) or psutil.Process(status.pid).status() == "zombie"
    assert not listening(port)
    assert processes_under(work) == []


def test_a_route_change_leaves_the_gateway_running_and_it_serves_the_new_table(
    work: Path, fake: OpenAIFake
) -> None:
    port = _free_port()
    path = write(work, fake, port)
    apply(path, echo=lambda _: None)
    before = gateway_status(work)
    assert before is not None
    assert chat(port, model="extra").status_code == 404  # no such route yet
    write(work, fake, port, routes="  extra: {targets: [up], aliases: [gpt-4o]}\n")
    plan = make_plan(path)
    assert plan.gateway is not None and plan.gateway.action == "no-op"
    out: list[str] = []
    apply(path, echo=out.append)
    assert not any(line.startswith("gateway:") for line in out)
    after = gateway_status(work)
    assert after is not None and (after.pid, after.create_time) == (before.pid, before.create_time)
    assert chat(port, model="extra").status_code == 200
    assert chat(port, model="gpt-4o").status_code == 200
    again: list[str] = []
    apply(path, echo=again.append)
    assert again == ["No changes. Your servers match batuta.yaml."]


def test_a_new_listen_address_replaces_it_and_a_removed_block_stops_it(
    work: Path, fake: OpenAIFake
) -> None:
    first, second = _free_port(), _free_port()
    path = write(work, fake, first)
    apply(path, echo=lambda _: None)
    old = gateway_status(work)
    assert old is not None
    write(work, fake, second)
    out: list[str] = []
    result = apply(path, echo=out.append)
    assert (result.added, result.destroyed) == (1, 1)
    assert f"gateway: Replacing... [listen: 127.0.0.1:{first} → 127.0.0.1:{second}]" in out
    new = gateway_status(work)
    assert new is not None and new.pid != old.pid and new.state == "ready"
    assert chat(second).status_code == 200
    assert not listening(first)
    write(work, fake, None)
    out.clear()
    result = apply(path, echo=out.append)
    assert result.destroyed == 1
    assert f"gateway: Destroying... [pid {new.pid}]" in out
    assert gateway_status(work) is None
    assert not listening(second)


def test_a_taken_port_names_the_manifest_line_and_changes_nothing(
    work: Path, fake: OpenAIFake
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = write(work, fake, port, server_port=_free_port())
        line = path.read_text().splitlines().index(f"  listen: 127.0.0.1:{port}") + 1
        notes = make_plan(path).notes
        assert any(
            n.startswith(f"apply will refuse to start the gateway: {path}:{line}:3:") for n in notes
        ), notes
        with pytest.raises(GatewayPortError) as caught:
            apply(path, echo=lambda _: None)
        message = str(caught.value)
        assert message.startswith(f"{path}:{line}:3: gateway.listen: port {port} on 127.0.0.1 is")
        assert "already in use" in message and "nothing was changed" in message
        assert assert_exit_and_message(["apply"], f"batuta.yaml:{line}:3: gateway.listen")
    assert Runtime(work / ".batuta").status() == {}  # the server was not started either
    assert not (work / ".batuta" / "routes.json").exists()


def assert_exit_and_message(argv: list[str], text: str) -> bool:
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    assert code == 1 and text in err.getvalue(), err.getvalue()
    return True


def test_a_port_a_declared_server_uses_is_refused_before_it_starts(
    work: Path, fake: OpenAIFake
) -> None:
    port = _free_port()
    path = write(work, fake, port, server_port=port)
    with pytest.raises(GatewayPortError, match=f"gateway.listen: port {port} is also server 's'"):
        apply(path, echo=lambda _: None)
    assert Runtime(work / ".batuta").status() == {}


def test_a_killed_gateway_is_restarted_by_the_supervisor(work: Path, fake: OpenAIFake) -> None:
    port = _free_port()
    apply(write(work, fake, port), echo=lambda _: None)
    before = gateway_status(work)
    assert before is not None and before.pid
    os.kill(before.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    now = before
    while time.monotonic() < deadline:
        now = gateway_status(work)
        if now is not None and now.state == "ready" and now.pid not in (None, before.pid):
            break
        time.sleep(0.05)
    assert now is not None and now.state == "ready" and now.pid != before.pid
    assert now.restarts == 1 and now.last_exit == -signal.SIGKILL
    assert chat(port).status_code == 200
    log = (work / ".batuta" / "logs" / f"{GATEWAY}.log").read_text()
    assert "killed by SIGKILL; restarting in 0.5s" in log


def test_down_lets_the_stream_in_flight_finish(work: Path) -> None:
    # 13 tokens 0.25 s apart: the stream is still running when `down` sends SIGTERM.
    with OpenAIFake(api_key="sk-test", model="gpt-4o-mini", chunk_delay=0.25) as fake:
        port = _free_port()
        apply(write(work, fake, port), echo=lambda _: None)
        status = gateway_status(work)
        assert status is not None and status.pid
        lines: list[str] = []
        first = threading.Event()

        def read() -> None:
            body = {**HI, "stream": True}
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            with httpx.stream("POST", url, json=body, timeout=30) as resp:
                for line in resp.iter_lines():
                    if line:  # not the blank line that ends each event
                        lines.append(line)
                    if '"content"' in line:
                        first.set()

        reader = threading.Thread(target=read)
        reader.start()
        assert first.wait(10)
        began = time.monotonic()
        result = destroy(work / "batuta.yaml")
        took = time.monotonic() - began
        reader.join(15)
        assert not reader.is_alive()
    assert result.destroyed == (GATEWAY,)
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(x[6:]) for x in lines if x.startswith("data: {")]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == DEFAULT_TEXT
    assert any(c["choices"] and c["choices"][0]["finish_reason"] == "stop" for c in chunks)
    assert took < 10  # bounded by the drain timeout (8 s), well before the SIGKILL at 10 s
    assert not psutil.pid_exists(status.pid) or psutil.Process(status.pid).status() == "zombie"


def test_a_gateway_that_cannot_start_fails_the_apply_with_its_log(
    work: Path, fake: OpenAIFake
) -> None:
    # The table it would serve is gone by the time it starts (a stand-in for any start-up
    # error): apply reports the gateway as failed, with its log, and leaves it stopped.
    port = _free_port()
    path = write(work, fake, port, routes="")
    loaded = load_manifest(path)
    desired = desired_state(loaded, {})
    assert desired.gateway is not None
    spec = dataclasses.replace(desired.gateway, restart="never")
    change = ServerChange(name=GATEWAY, action="create", desired=spec)
    out: list[str] = []
    failure = start_gateway(Runtime(work / ".batuta"), change, spec, out.append)
    assert failure is not None
    assert "exited while starting (exit code 1)" in str(failure)
    assert "Error: no routing table at" in failure.log_tail
    assert out[0] == f"gateway: Creating... [listen on http://127.0.0.1:{port}]"
    assert out[-1].startswith("gateway: failed: exited while starting (exit code 1); log: ")
    assert gateway_status(work) is None


def test_apply_fails_when_the_gateway_is_not_ready_in_time(work: Path, fake: OpenAIFake) -> None:
    port = _free_port()
    path = write(work, fake, port, routes="defaults:\n  ready_timeout: 0.05\n")
    out: list[str] = []
    with pytest.raises(ApplyFailed) as caught:
        apply(path, echo=out.append)
    assert set(caught.value.failures) == {"gateway"}
    assert str(caught.value).startswith("the gateway failed to start:\n")
    assert "\n  gateway: not ready after 0.05s; log: " in str(caught.value)
    assert (work / ".batuta" / "routes.json").exists()  # the routes were applied
    assert gateway_status(work) is None  # stopped, so the next apply creates it again
    plan = make_plan(path)
    assert plan.gateway is not None and plan.gateway.action == "create"


def test_the_gateway_apply_runs_enforces_the_manifests_keys_and_restarts_on_their_change(
    work: Path, fake: OpenAIFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEAM_KEY", "gw-team-3c1f9a")
    port = _free_port()
    keys = "  keys:\n    team: {key_env: TEAM_KEY, rate: 600/min}\n"
    path = write(work, fake, port)
    path.write_text(path.read_text() + keys)
    apply(path, echo=lambda _: None)
    old = gateway_status(work)
    assert old is not None and old.state == "ready"
    assert chat(port).status_code == 401  # the keys of its manifest hold
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    good = httpx.post(url, json=HI, headers={"authorization": "Bearer gw-team-3c1f9a"})
    assert good.status_code == 200, good.text
    assert "gw-team-3c1f9a" not in (work / ".batuta" / "state.json").read_text()

    path.write_text(path.read_text().replace("600/min", "5/min"))
    out: list[str] = []
    apply(path, echo=out.append)
    assert any(line.startswith("gateway: Replacing...") for line in out), out
    new = gateway_status(work)
    assert new is not None and new.pid != old.pid and new.state == "ready"
    out.clear()
    apply(path, echo=out.append)  # nothing changed since: the gateway is left alone
    assert not any(line.startswith("gateway:") for line in out), out
