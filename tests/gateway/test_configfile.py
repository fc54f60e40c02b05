"""``batuta gateway --gateway-config FILE``: the gateway block read alone from JSON, as a
cluster pod reads it from its ConfigMap, instead of a manifest's: a bad file is refused
naming the file and the field (never the value), its keys allow any address and are
enforced, and what it says about recording holds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from batuta.cli.main import main
from batuta.gateway.configfile import read_gateway_config
from batuta.gateway.errors import GatewaySetupError
from batuta.gateway.server import serve
from tests.conftest import _free_port
from tests.fakes.openai_server import OpenAIFake
from tests.gateway.helpers import local, route_of, wait_healthy, write_routes

ARGV = [sys.executable, "-c", "from batuta.cli.main import run; run()", "gateway"]
VALUE = "gw-config-value-8c41e07b"
SECRETISH = "sk-live-abcdef0123456789abcdef"
KEYED = {"keys": {"ops": {"key_env": "OPS_GATEWAY_KEY", "rate": "100/s"}}, "metrics": False}


def _write(tmp_path: Path, data: object, name: str = "gateway.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("data", "said"),
    [
        ({"keys": {"ops": {"key_env": SECRETISH}}}, "keys.ops.key_env: String should match"),
        ({"keys": {"ops": {"key_env": "OPS", "rate": "lots"}}}, "keys.ops.rate: Value error"),
        ({"request_log_files": 0}, "request_log_files: Input should be greater than"),
        ({"kys": {}}, "kys: Extra inputs are not permitted"),
        ([1, 2], "(the file): Input should be a valid dictionary"),
    ],
)
def test_a_bad_block_names_the_file_and_field_not_the_value(
    tmp_path: Path, data: object, said: str
) -> None:
    path = _write(tmp_path, data)
    with pytest.raises(GatewaySetupError) as caught:
        read_gateway_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: --gateway-config: not a gateway block: ")
    assert said in message and SECRETISH not in message


def test_not_json_or_no_file_is_said_with_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, '{\n  "keys": {,\n}')
    with pytest.raises(GatewaySetupError, match=rf"^{path}:2: --gateway-config: not JSON \("):
        read_gateway_config(path)
    with pytest.raises(GatewaySetupError, match=r"^--gateway-config: cannot read .*none\.json"):
        read_gateway_config(tmp_path / "none.json")
    (tmp_path / "latin.json").write_bytes(b'{"keys": "\xff"}')
    with pytest.raises(GatewaySetupError, match="not UTF-8 text"):
        read_gateway_config(tmp_path / "latin.json")


def test_the_cli_says_it_in_one_line_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, {"keys": {"ops": {"key_env": SECRETISH}}})
    argv = ["gateway", "--gateway-config", str(path), "--table", str(tmp_path / "routes.json")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"Error: {path}: --gateway-config: not a gateway block: keys.ops.key_env")
    assert SECRETISH not in err


def test_its_keys_allow_any_address_and_the_manifest_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "batuta.yaml").write_text("version: 1\ngateway:\n  listen: [not, valid]\n")
    monkeypatch.setenv("OPS_GATEWAY_KEY", VALUE)
    table = tmp_path / "none.json"
    listen = "0.0.0.0:8080"
    # Keys: past the address check, to the missing table (the broken manifest is not read).
    with pytest.raises(GatewaySetupError, match="--table: no routing table at"):
        serve(listen=listen, table=table, gateway_config=_write(tmp_path, KEYED))
    # No keys: an open gateway stays on loopback unless told it may not.
    with pytest.raises(GatewaySetupError, match="is not this machine"):
        serve(listen=listen, table=table, gateway_config=_write(tmp_path, {}, "open.json"))
    monkeypatch.delenv("OPS_GATEWAY_KEY")
    with pytest.raises(GatewaySetupError, match="none of the keys' variables is set"):
        serve(listen=listen, table=table, gateway_config=_write(tmp_path, KEYED))


def test_the_gateway_enforces_the_files_keys_and_recording(tmp_path: Path) -> None:
    port = _free_port()
    config = _write(tmp_path, KEYED)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_GATEWAY_KEY")}
    env |= {"BATUTA_STATE_DIR": str(tmp_path / "state"), "OPS_GATEWAY_KEY": VALUE}
    with OpenAIFake() as fake:
        table = write_routes(tmp_path / "mounted", route_of("default", local("a", fake)))
        argv = [*ARGV, "--table", str(table), "--gateway-config", str(config),
                "--listen", f"0.0.0.0:{port}"]  # fmt: skip
        proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, proc)
            body = {"model": "default", "messages": [{"role": "user", "content": "Hi"}]}
            chat = url + "/v1/chat/completions"
            assert httpx.post(chat, json=body, timeout=10).status_code == 401
            auth = {"authorization": f"Bearer {VALUE}"}
            assert httpx.post(chat, json=body, headers=auth, timeout=10).status_code == 200
            metrics = httpx.get(url + "/metrics", timeout=10)
            assert metrics.status_code == 404 and "gateway.metrics: false" in metrics.text
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    text = err.decode()
    assert f"listening on http://0.0.0.0:{port} (routes: default; keys: ops)" in text
    assert VALUE not in text
