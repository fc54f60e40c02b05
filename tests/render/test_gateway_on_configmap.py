"""The routing table in the rendered ConfigMap is the one ``batuta gateway`` reads: the
gateway runs as the rendered Deployment runs it (its command, arguments and plain
variables), on the ConfigMap's table, with each in-cluster Service name resolved to a REAL
local llama.cpp server (SmolLM2-135M). Only the targets' host:port is rewritten, as the
cluster's DNS and Service would; routes, model ids, timeouts and order are as rendered.
With ``gateway.keys`` the gateway reads the ConfigMap's gateway block and the Secret's key,
and refuses a client without it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import _free_port
from tests.gateway.helpers import wait_healthy
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


KEY_VALUE = "team-a-gateway-key-6b2f90d1"
KEYED = SOVEREIGN.replace(
    "kubernetes:\n",
    "gateway:\n  keys:\n    team:\n      key_env: TEAM_A_GATEWAY_KEY\n      rate: 100/s\n"
    "kubernetes:\n",
)
BODY = {
    "model": "local", "messages": [{"role": "user", "content": "Why is the sky blue?"}],
    "max_tokens": 24, "temperature": 0.0,
}  # fmt: skip


def _gateway_argv(container: dict[str, Any], mounted: Path, port: int) -> list[str]:
    """The container's argv, with the ConfigMap's files at ``mounted`` and the port free."""
    argv = [*container["command"], *container["args"]]
    assert argv[:2] == ["batuta", "gateway"]
    batuta = shutil.which("batuta", path=str(Path(sys.executable).parent))
    assert batuta is not None
    listen = argv[argv.index("--listen") + 1]
    assert listen == "0.0.0.0:8080"
    swapped = {listen: f"0.0.0.0:{port}"}
    for option in ("--table", "--gateway-config"):
        rendered = argv[argv.index(option) + 1]
        swapped[rendered] = str(mounted / Path(rendered).name)
    return [batuta, *(swapped.get(a, a) for a in argv[1:])]


def _mount(files: dict[str, str], tmp_path: Path, urls: dict[str, str]) -> Path:
    """The ConfigMap's files, as its volume shows them, with each target at ``urls``."""
    configmap = of_kind(files, "ConfigMap")["batuta-routes"]["data"]
    data = json.loads(routes_json(files))
    services = of_kind(files, "Service")
    for route in data["routes"].values():
        for target in route["targets"]:
            host, port = target["base_url"].removeprefix("http://").rsplit(":", 1)
            service = services[host.split(".")[0]]
            assert host == f"{service['metadata']['name']}.team-a.svc.cluster.local"
            assert int(port) == service["spec"]["ports"][0]["port"]
            target["base_url"] = urls[target["name"]]  # what the Service leads to
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    for name, text in configmap.items():
        (mounted / name).write_text(text)
    (mounted / "routes.json").write_text(json.dumps(data))
    return mounted


@contextmanager
def _rendered_gateway(
    files: dict[str, str], tmp_path: Path, urls: dict[str, str], secret: dict[str, str]
) -> Iterator[str]:
    """The gateway run as its Deployment runs it: its argv, plain variables and the
    Secret's keys (``secret``) as ``secretKeyRef`` gives them; its URL."""
    mounted = _mount(files, tmp_path, urls)
    container = of_kind(files, "Deployment")["batuta-gateway"]["spec"]["template"]["spec"]
    container = container["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    for e in container["env"]:
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref and ref["key"] in secret:
            env[e["name"]] = secret[ref["key"]]
    env["BATUTA_STATE_DIR"] = str(tmp_path / "state")  # the pod's emptyDir
    inherited = {k: v for k, v in os.environ.items() if not k.endswith("_GATEWAY_KEY")}
    port = _free_port()
    proc = subprocess.Popen(
        _gateway_argv(container, mounted, port), cwd=tmp_path, env={**inherited, **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert not any(value.encode() in err for value in secret.values())


def test_the_gateway_answers_on_the_configmaps_table(
    servers: dict[str, LlamaServer], tmp_path: Path
) -> None:
    files = render_text(tmp_path, SOVEREIGN)
    args = of_kind(files, "Deployment")["batuta-gateway"]["spec"]["template"]["spec"]
    assert "--any-address" in args["containers"][0]["args"]  # no keys: open, and told so
    urls = {name: server.url for name, server in servers.items()}
    with _rendered_gateway(files, tmp_path, urls, {}) as url:
        first = httpx.post(url + "/v1/chat/completions", json=BODY, timeout=120)
        assert first.status_code == 200, first.text
        assert english(first.json()["choices"][0]["message"]["content"])
        servers["a"].kill()  # the route's first Service goes away: the second answers
        second = httpx.post(url + "/v1/chat/completions", json=BODY, timeout=120)
        assert second.status_code == 200, second.text
        assert english(second.json()["choices"][0]["message"]["content"])


def test_the_rendered_gateway_wants_the_manifests_key(smollm2_path: Path, tmp_path: Path) -> None:
    files = render_text(tmp_path, KEYED, env={"TEAM_A_GATEWAY_KEY": KEY_VALUE})
    assert all(KEY_VALUE not in text for text in files.values())
    server = LlamaServer(smollm2_path, tmp_path / "a.log")
    try:
        urls = {"a": server.url, "b": server.url}
        with _rendered_gateway(files, tmp_path, urls, {"TEAM_A_GATEWAY_KEY": KEY_VALUE}) as url:
            chat = url + "/v1/chat/completions"
            refused = httpx.post(chat, json=BODY, timeout=30)
            assert refused.status_code == 401 and "API key" in refused.text
            wrong = {"authorization": "Bearer not-the-key"}
            assert httpx.post(chat, json=BODY, headers=wrong, timeout=30).status_code == 401
            auth = {"authorization": f"Bearer {KEY_VALUE}"}
            answer = httpx.post(chat, json=BODY, headers=auth, timeout=120)
            assert answer.status_code == 200, answer.text
            assert english(answer.json()["choices"][0]["message"]["content"])
    finally:
        server.stop()
