"""Readiness and metrics of the real llama.cpp engine, on each form, launched with the very
command line batuta builds for it (``launch_for``), started and stopped here by pid.

llama-server listens before its model is loaded and answers ``/health`` with 503 until
then: batuta's probe must call that ``loading``, not ``down`` and not ``ready``.
llama-cpp-python's server only listens once the model is loaded, and has no ``/health``;
its ``/v1/models`` waits for the model's lock, so batuta asks its ``/docs`` page instead,
which must stay ready while an answer streams.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest

from batuta.runtime.health import Health, probe
from batuta.runtime.launch import launch_for
from tests.conftest import _free_port

pytestmark = pytest.mark.engine


def _spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert not psutil.pid_exists(proc.pid)


def _states_until_ready(url: str, proc: subprocess.Popen[bytes], limit: float = 60) -> list[Health]:
    """Every distinct probe result, in order, from right after spawn until ``ready``."""
    seen: list[Health] = []
    end = time.monotonic() + limit
    while time.monotonic() < end:
        assert proc.poll() is None, "the engine exited while starting"
        state = probe(url, timeout=1.0)
        if not seen or seen[-1] != state:
            seen.append(state)
        if state == "ready":
            return seen
        time.sleep(0.002)
    raise AssertionError(f"not ready in {limit} s: {seen}")


def test_readiness_while_the_model_loads(smollm2_path: Path, tmp_path: Path, llama_engine: str):
    port = _free_port()
    # A large context makes the server allocate (and llama-server warm up) for longer.
    run = launch_for("llamacpp", str(smollm2_path), "127.0.0.1", port, ctx=8192, threads=1,
                     engine=llama_engine)  # fmt: skip
    assert run.engine == llama_engine
    proc = _spawn(run.argv, tmp_path / "engine.log")
    try:
        states = _states_until_ready(run.health_url, proc)
        if llama_engine == "server":
            assert run.health_url == f"http://127.0.0.1:{port}/health"
            assert "loading" in states and states[-1] == "ready", states
            assert states.index("loading") < states.index("ready")
            # started with --metrics: Prometheus counters, for scraping per-server figures
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
            assert metrics.status_code == 200 and "llamacpp:prompt_tokens_total" in metrics.text
        else:
            assert run.health_url == f"http://127.0.0.1:{port}/docs"
            assert "loading" not in states and states[-1] == "ready", states
        assert probe(run.health_url) == "ready"
    finally:
        _stop(proc)
    assert probe(run.health_url) == "down"


def test_ready_while_an_answer_streams(smollm2_path: Path, tmp_path: Path, llama_engine: str):
    """The supervisor probes a ready server every few seconds: a probe sent while an answer
    streams must say ``ready`` within its timeout, and the answer must go on meanwhile."""
    port = _free_port()
    run = launch_for("llamacpp", str(smollm2_path), "127.0.0.1", port, threads=1,
                     engine=llama_engine)  # fmt: skip
    proc = _spawn(run.argv, tmp_path / "engine.log")
    body = {
        "messages": [{"role": "user", "content": "Write a long story about a dragon."}],
        "max_tokens": 400, "temperature": 0, "stream": True,
    }  # fmt: skip
    try:
        _states_until_ready(run.health_url, proc)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        before = after = 0
        probes: list[Health] = []
        with httpx.stream("POST", url, json=body, timeout=120) as response:
            for line in response.iter_lines():
                if not line.startswith("data: {"):
                    continue
                if len(probes) < 3 and before >= 5:
                    probes.append(probe(run.health_url, timeout=1.0))
                elif len(probes) < 3:
                    before += 1
                else:
                    after += 1
        assert probes == ["ready"] * 3
        assert after > 20, "the answer ended before the probes were made"
    finally:
        _stop(proc)
