"""The routing table in the rendered ConfigMap is the one ``batuta gateway`` reads: the
gateway runs as the rendered Deployment runs it (its command, arguments and plain
variables), on the ConfigMap's table, with each in-cluster Service name resolved to a REAL
local llama.cpp server (SmolLM2-135M). Only the targets' host:port is rewritten, as the
cluster's DNS and Service would; routes, model ids, timeouts and order are as rendered.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import _free_port
from tests.render.helpers import SOVEREIGN, of_kind, render_text, routes_json
from tests.router.test_real_failover import LlamaServer, english

pytestmark = pytest.mark.engine


@pytest.fixture
def servers(smollm2_path: Path, tmp_path: Path) -> Iterator[dict[str, LlamaServer]]:
    started: dict[str, LlamaServer] = {}
    try:
        for name in ("a", "b"):
            started[name] = LlamaServer(smollm2_path, tmp_path / f"{name}.log")
        yield started
    finally:
        for server in started.values():
            server.stop()


def _gateway_argv(container: dict[str, object], table: Path, port: int) -> list[str]:
    argv = [*container["command"], *container["args"]]  # type: ignore[misc]
    assert argv[:2] == ["batuta", "gateway"]
    batuta = shutil.which("batuta", path=str(Path(sys.executable).parent))
    assert batuta is not None
    rendered_table = argv[argv.index("--table") + 1]
    listen = argv[argv.index("--listen") + 1]
    assert listen == "0.0.0.0:8080" and "--any-address" in argv
    swapped = {rendered_table: str(table), listen: f"0.0.0.0:{port}"}
    return [batuta, *(swapped.get(a, a) for a in argv[1:])]


def test_the_gateway_answers_on_the_configmaps_table(
    servers: dict[str, LlamaServer], tmp_path: Path
) -> None:
    files = render_text(tmp_path, SOVEREIGN)
    data = json.loads(routes_json(files))
    services = of_kind(files, "Service")
    for route in data["routes"].values():
        for target in route["targets"]:
            host, port = target["base_url"].removeprefix("http://").rsplit(":", 1)
            service = services[host.split(".")[0]]
            assert host == f"{service['metadata']['name']}.team-a.svc.cluster.local"
            assert int(port) == service["spec"]["ports"][0]["port"]
            target["base_url"] = servers[target["name"]].url  # what the Service leads to
    table = tmp_path / "mounted" / "routes.json"
    table.parent.mkdir()
    table.write_text(json.dumps(data))
    deployment = of_kind(files, "Deployment")["batuta-gateway"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env["BATUTA_STATE_DIR"] = str(tmp_path / "state")  # the pod's emptyDir
    port = _free_port()
    proc = subprocess.Popen(
        _gateway_argv(container, table, port), cwd=tmp_path, env={**os.environ, **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        end = time.monotonic() + 30
        while True:
            assert proc.poll() is None and time.monotonic() < end, proc.communicate()
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        body = {
            "model": "local", "messages": [{"role": "user", "content": "Why is the sky blue?"}],
            "max_tokens": 24, "temperature": 0.0,
        }  # fmt: skip
        first = httpx.post(url + "/v1/chat/completions", json=body, timeout=120)
        assert first.status_code == 200, first.text
        assert english(first.json()["choices"][0]["message"]["content"])
        servers["a"].kill()  # the route's first Service goes away: the second answers
        second = httpx.post(url + "/v1/chat/completions", json=body, timeout=120)
        assert second.status_code == 200, second.text
        assert english(second.json()["choices"][0]["message"]["content"])
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0
