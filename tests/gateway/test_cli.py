"""``batuta gateway`` as a user runs it, in its own process: where it listens, what it says
when there is nothing to serve, and how SIGTERM drains a stream in flight."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from batuta.errors import BatutaError
from tests.conftest import _free_port
from tests.fakes.openai_server import OpenAIFake
from tests.fakes.scripted import DEFAULT_TEXT
from tests.gateway.helpers import local, route_of, wait_healthy, write_routes

ARGV = [sys.executable, "-c", "from batuta.cli.main import run; run()", "gateway"]


def run(state: Path, *args: str, cwd: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BATUTA_STATE_DIR": str(state)}
    return subprocess.Popen([*ARGV, *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:  # only after a failed assertion: each test waits for its own
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_without_a_routing_table_it_says_to_apply(tmp_path: Path) -> None:
    done = subprocess.run([*ARGV, "--listen", "127.0.0.1:1"], cwd=tmp_path, capture_output=True,
                          env={**os.environ, "BATUTA_STATE_DIR": str(tmp_path / "s")})  # fmt: skip
    assert done.returncode == 1
    assert b"no routing table at" in done.stderr and b"batuta apply" in done.stderr


def test_a_non_loopback_listen_address_is_refused(tmp_path: Path) -> None:
    done = subprocess.run([*ARGV, "--listen", "0.0.0.0:8080"], cwd=tmp_path, capture_output=True)
    assert done.returncode == 1
    assert b"--listen: '0.0.0.0' is not this machine" in done.stderr
    assert b"API keys" in done.stderr


def test_listens_where_the_manifest_says_and_drains_on_sigterm(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    port = _free_port()
    (tmp_path / "batuta.yaml").write_text(f"version: 1\ngateway:\n  listen: 127.0.0.1:{port}\n")
    with OpenAIFake(chunk_delay=0.1) as fake:
        write_routes(tmp_path / "state", route_of("default", local("a", fake)))
        proc = run(tmp_path / "state", cwd=tmp_path)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc)
        lines: list[str] = []
        first = threading.Event()

        def stream() -> None:
            body = {"model": "default", "messages": [{"role": "user", "content": "Hi"}],
                    "stream": True}  # fmt: skip
            with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as r:
                for line in r.iter_lines():
                    lines.append(line)
                    if line.replace(" ", "").startswith("data:{") and '"content":"' in line.replace(
                        " ", ""
                    ):
                        first.set()

        reader = threading.Thread(target=stream)
        reader.start()
        assert first.wait(20)
        proc.send_signal(signal.SIGTERM)
        reader.join(30)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert lines[-2] == "data: [DONE]" or lines[-1] == "data: [DONE]", lines[-3:]
    text = "".join(
        json.loads(line[6:])["choices"][0]["delta"].get("content", "")
        for line in lines
        if line.startswith("data: {") and json.loads(line[6:]).get("choices")
    )
    assert text == DEFAULT_TEXT
    assert f"listening on http://127.0.0.1:{port}".encode() in err


def test_an_address_in_use_is_a_clear_error(tmp_path: Path) -> None:
    write_routes(tmp_path / "state", route_of("default"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "BATUTA_STATE_DIR": str(tmp_path / "state")}
        argv = [*ARGV, "--listen", f"127.0.0.1:{port}"]
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, timeout=60, env=env)
    assert done.returncode == 1
    assert f"--listen: cannot listen on 127.0.0.1:{port}".encode() in done.stderr


def test_in_process_serve_drains_a_stream_on_sigterm(tmp_path: Path) -> None:
    """The same drain, in this process (the CLI runner calls the command in the main
    thread, where uvicorn handles signals): SIGTERM arrives while a stream is mid-answer."""
    from click.testing import CliRunner

    from batuta.cli.main import cli

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    lines: list[str] = []

    def client() -> None:
        end = time.monotonic() + 30
        while time.monotonic() < end:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        body = {"model": "default", "messages": [{"role": "user", "content": "Hi"}],
                "stream": True}  # fmt: skip
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as r:
            for line in r.iter_lines():

                def shows(x: str) -> bool:
                    return '"content":"' in x.replace(" ", "")

                if shows(line) and not any(shows(x) for x in lines):
                    os.kill(os.getpid(), signal.SIGTERM)
                lines.append(line)

    with OpenAIFake(chunk_delay=0.05) as fake:
        write_routes(tmp_path / "state", route_of("default", local("a", fake)))
        reader = threading.Thread(target=client)
        reader.start()
        result = CliRunner().invoke(
            cli, ["gateway", "--listen", f"127.0.0.1:{port}"],
            env={"BATUTA_STATE_DIR": str(tmp_path / "state")},
        )  # fmt: skip
        reader.join(30)
    assert result.exit_code == 0, result.output
    assert f"listening on http://127.0.0.1:{port} (routes: default)" in result.output
    assert lines[-1] == "data: [DONE]" or lines[-2] == "data: [DONE]", lines[-3:]


def test_serve_refuses_what_it_cannot_serve_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from batuta.gateway import serve
    from batuta.gateway.server import GatewaySetupError

    monkeypatch.chdir(tmp_path)
    state = tmp_path / "state"
    with pytest.raises(GatewaySetupError, match=r"no routing table at .*\(with -f x.yaml\)"):
        serve("x.yaml", listen="127.0.0.1:1", state_dir=state)
    (tmp_path / "batuta.yaml").write_text("version: 1\ngateway:\n  listen: 0.0.0.0:8080\n")
    with pytest.raises(BatutaError, match=r"gateway.listen: '0.0.0.0' is not this machine"):
        serve(state_dir=state)
    with pytest.raises(GatewaySetupError, match=r"--listen: 'nonsense' is not HOST:PORT"):
        serve(listen="nonsense", state_dir=state)
    write_routes(state, route_of("default"))
    # --listen does not bypass the manifest: its keys (or their absence) decide who may ask
    with pytest.raises(BatutaError, match=r"gateway.listen: '0.0.0.0' is not this machine"):
        serve(listen="127.0.0.1:1", state_dir=state)
    (tmp_path / "batuta.yaml").write_text("version: 1\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(GatewaySetupError, match=f"cannot listen on 127.0.0.1:{port}"):
            serve(listen=f"127.0.0.1:{port}", state_dir=state)


def test_a_given_table_on_any_address(tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    """As a cluster pod runs it: the table a ConfigMap mounts, on the pod's every address."""
    port = _free_port()
    with OpenAIFake() as fake:
        table = write_routes(tmp_path / "mounted", route_of("default", local("a", fake)))
        listen = ["--listen", f"0.0.0.0:{port}"]
        refused = subprocess.run([*ARGV, "--table", str(table), *listen], cwd=tmp_path,
                                 capture_output=True, timeout=60)  # fmt: skip
        assert refused.returncode == 1 and b"is not this machine" in refused.stderr
        missing = [*ARGV, "--table", str(tmp_path / "none.json"), "--listen", f"127.0.0.1:{port}"]
        absent = subprocess.run(missing, cwd=tmp_path, capture_output=True, timeout=60)
        assert absent.returncode == 1 and b"--table: no routing table at" in absent.stderr
        proc = run(tmp_path / "empty-state", "--table", str(table), *listen, "--any-address",
                   cwd=tmp_path)  # fmt: skip
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc)
        body = {"model": "default", "messages": [{"role": "user", "content": "Hi"}]}
        answer = httpx.post(url + "/v1/chat/completions", json=body, timeout=30)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"]
    assert f"listening on http://0.0.0.0:{port} (routes: default)".encode() in err
    assert not (tmp_path / "empty-state" / "routes.json").exists()
