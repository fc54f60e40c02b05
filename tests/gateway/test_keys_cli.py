"""``batuta gateway`` with ``gateway.keys`` in the manifest, in its own process: it listens
beyond loopback, warns once about a key whose variable is unset, and refuses to start when
no key is usable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import _free_port
from tests.fakes.openai_server import OpenAIFake
from tests.gateway.helpers import local, route_of, wait_healthy, write_routes

ARGV = [sys.executable, "-c", "from batuta.cli.main import run; run()", "gateway"]
VALUE = "gw-cli-value-3d9a5c7e"
MANIFEST = """\
version: 1
gateway:
  listen: 0.0.0.0:{port}
  keys:
    ops:
      key_env: OPS_GATEWAY_KEY
    later:
      key_env: LATER_GATEWAY_KEY
"""


def _env(state: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_GATEWAY_KEY")}
    return {**env, "BATUTA_STATE_DIR": str(state), **extra}


def test_with_keys_it_listens_on_every_address_and_wants_a_key(tmp_path: Path) -> None:
    port = _free_port()
    (tmp_path / "batuta.yaml").write_text(MANIFEST.format(port=port))
    with OpenAIFake() as fake:
        write_routes(tmp_path / "state", route_of("default", local("a", fake)))
        proc = subprocess.Popen(ARGV, cwd=tmp_path, env=_env(tmp_path / "state",
                                OPS_GATEWAY_KEY=VALUE), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, proc)
            body = {"model": "default", "messages": [{"role": "user", "content": "Hi"}]}
            chat = url + "/v1/chat/completions"
            assert httpx.post(chat, json=body, timeout=10).status_code == 401
            auth = {"authorization": f"Bearer {VALUE}"}
            assert httpx.post(chat, json=body, headers=auth, timeout=10).status_code == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    text = err.decode()
    assert f"listening on http://0.0.0.0:{port} (routes: default; keys: ops)" in text
    warning = "gateway.keys.later: $LATER_GATEWAY_KEY is not set, so key 'later' is disabled"
    assert text.count(warning) == 1 and VALUE not in text


def test_without_a_usable_key_it_does_not_start(tmp_path: Path) -> None:
    (tmp_path / "batuta.yaml").write_text(MANIFEST.format(port=_free_port()))
    write_routes(tmp_path / "state", route_of("default"))
    done = subprocess.run(ARGV, cwd=tmp_path, env=_env(tmp_path / "state"), capture_output=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 1
    assert b"none of the keys' variables is set ($OPS_GATEWAY_KEY, $LATER_GATEWAY_KEY)" in (
        done.stderr
    )


def test_serve_in_process_reads_the_keys_before_anything_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from batuta.gateway import serve
    from batuta.gateway.server import GatewaySetupError

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPS_GATEWAY_KEY", raising=False)
    monkeypatch.delenv("LATER_GATEWAY_KEY", raising=False)
    (tmp_path / "batuta.yaml").write_text(MANIFEST.format(port=8080))
    with pytest.raises(GatewaySetupError, match="none of the keys' variables is set"):
        serve(state_dir=tmp_path / "state")  # no announce: the warnings go nowhere
    monkeypatch.setenv("OPS_GATEWAY_KEY", VALUE)
    told: list[str] = []
    # keys make 0.0.0.0 acceptable; what is missing now is the routing table
    with pytest.raises(GatewaySetupError, match="no routing table at") as caught:
        serve(state_dir=tmp_path / "state", announce=told.append)
    assert told == ["⚠ gateway.keys.later: $LATER_GATEWAY_KEY is not set, so key 'later' is"
                    " disabled"]  # fmt: skip
    assert VALUE not in str(caught.value)
