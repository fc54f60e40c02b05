"""The gateway ``apply`` runs, in front of a REAL llama.cpp server (SmolLM2-135M): the CLI
applies a manifest with both, the ``openai`` SDK asks through the gateway, ``down`` stops
both and leaves no process behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import openai
import psutil
import pytest

from batuta.runtime import Runtime
from batuta.runtime.gateway import GATEWAY
from tests.conftest import _free_port

pytestmark = pytest.mark.engine

BATUTA = str(Path(sys.executable).parent / "batuta")


def run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATUTA_")}
    return subprocess.run([BATUTA, *args], cwd=root, env=env, capture_output=True, text=True,
                          timeout=180)  # fmt: skip


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_apply_query_through_the_gateway_and_down(smollm2_path: Path, tmp_path: Path) -> None:
    server_port, gateway_port = _free_port(), _free_port()
    (tmp_path / "batuta.yaml").write_text(
        f"models:\n  smollm2: {{source: {smollm2_path}}}\n"
        f"servers:\n  local: {{backend: llamacpp, model: smollm2, port: {server_port},"
        " ctx: 1024, threads: 1}\n"
        "routes:\n  default: {tier: {privacy: sovereign}, targets: [local]}\n"
        f"gateway:\n  listen: 127.0.0.1:{gateway_port}\n"
    )
    state = tmp_path / ".batuta"
    try:
        plan = run(tmp_path, "plan")
        assert plan.returncode == 0, plan.stderr
        assert f"+ gateway: listen on http://127.0.0.1:{gateway_port}" in plan.stdout
        assert "Plan: 3 to add, 0 to change, 0 to destroy." in plan.stdout
        applied = run(tmp_path, "apply")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        statuses = Runtime(state).status()
        server, gateway = statuses["local"].pid, statuses[GATEWAY].pid
        assert server and gateway
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{gateway_port}/v1", api_key="any", max_retries=0
        )
        answer = client.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=16,
            temperature=0.0,
        )
        assert answer.choices[0].message.content
        assert answer.choices[0].finish_reason in ("stop", "length")
        stream = client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=8, stream=True,
        )  # fmt: skip
        finishes = [c.choices[0].finish_reason for c in stream if c.choices]
        assert finishes[-1] in ("stop", "length")
        down = run(tmp_path, "down")
        assert down.returncode == 0, down.stderr
        assert "Destroy complete! Resources: 2 destroyed." in down.stdout
        assert down.stdout.index("gateway: Destroying") < down.stdout.index("server.local")
        assert gone(server) and gone(gateway)
        assert Runtime(state).status() == {}
    finally:
        if state.exists():
            Runtime(state).stop_all()
