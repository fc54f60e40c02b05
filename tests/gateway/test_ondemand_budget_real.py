"""The memory budget with the REAL engine (llama.cpp serving SmolLM2-135M).

The estimate from the GGUF is within 25 % of the RSS the running engine has after an
answer; a budget that fits one server evicts the idle one when the other is asked for;
a budget held by an always-on server answers 503 naming the budget and what uses it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from batuta.apply.execute import apply_loaded
from batuta.manifest import load_manifest
from batuta.routing.table import table_path
from batuta.runtime import Runtime
from batuta.runtime import ondemand as runtime_ondemand
from batuta.runtime.state import read_state
from tests.conftest import _free_port
from tests.gateway.helpers import GatewayThread
from tests.gateway.test_ondemand_real import SOURCE

pytestmark = pytest.mark.engine


def server(name: str, extra: str = "") -> str:
    return (
        f"  {name}: {{backend: llamacpp, model: smollm2, port: {_free_port()}, ctx: 512,"
        f" threads: 1{extra}}}\n"
    )


@pytest.fixture
def apply_text(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    def write(body: str) -> Path:
        (tmp_path / "batuta.yaml").write_text(
            f"models:\n  smollm2: {{source: {SOURCE}, quantization: Q4_1}}\n{body}"
        )
        apply_loaded(load_manifest(tmp_path / "batuta.yaml"), echo=lambda _: None)
        return tmp_path / ".batuta"

    yield write
    Runtime(tmp_path / ".batuta").stop_all()


def ask(gw: GatewayThread, route: str) -> httpx.Response:
    body = {"model": route, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    return httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=60)


@pytest.mark.parametrize("engine", ["server", "python"])
def test_estimate_within_25_percent_of_rss(
    apply_text: Callable[[str], Path], smollm2_path: Path, engine: str
) -> None:
    state = apply_text(
        "servers:\n"
        + server("a", f", engine: {engine}")
        + "routes:\n  r: {targets: [a]}\ndefaults: {memory_budget: 1GiB}\n"
    )
    rec = read_state(state).servers["a"]
    assert rec.spec.memory is not None and rec.pid is not None
    with GatewayThread(table_path(state)) as gw:
        assert ask(gw, "r").status_code == 200
    rss = psutil.Process(rec.pid).memory_info().rss
    assert abs(rec.spec.memory - rss) <= 0.25 * rss, (rec.spec.memory, rss)


def test_budget_for_one_evicts_the_idle_one(
    apply_text: Callable[[str], Path], smollm2_path: Path
) -> None:
    od = ", start: on-demand, idle_timeout: 10m"
    state = apply_text(
        "servers:\n" + server("a", od) + server("b", od)
        + "routes:\n  ra: {targets: [a]}\n  rb: {targets: [b]}\n"
        + "defaults: {memory_budget: 250MiB}\n"  # one fits (about 140MiB each), two do not
    )  # fmt: skip
    before = runtime_ondemand.counts.evictions
    with GatewayThread(table_path(state)) as gw:
        assert ask(gw, "ra").status_code == 200
        first = read_state(state).servers["a"]
        assert first.state == "ready"
        answer = ask(gw, "rb")
        assert answer.status_code == 200, answer.text
        servers = read_state(state).servers
        assert servers["a"].state == "idle" and servers["b"].state == "ready"
        assert servers["a"].message == "stopped to make room for 'b' within the memory budget"
        assert not psutil.pid_exists(first.pid or 0) or (
            psutil.Process(first.pid).status() == psutil.STATUS_ZOMBIE
        )
    assert runtime_ondemand.counts.evictions == before + 1
    log = (state / "logs" / "a.log").read_text()
    assert "to make room for 'b' within the memory budget" in log


def test_budget_in_use_answers_503_naming_it(
    apply_text: Callable[[str], Path], smollm2_path: Path
) -> None:
    state = apply_text(
        "servers:\n" + server("always", ", memory: 200MiB")
        + server("od", ", start: on-demand")
        + "routes:\n  r: {targets: [od]}\n"
        + "defaults: {memory_budget: 300MiB}\n"
    )  # fmt: skip
    with GatewayThread(table_path(state)) as gw:
        answer = ask(gw, "r")
    assert answer.status_code == 503, answer.text
    message = answer.json()["error"]["message"]
    assert "memory_budget of 300MiB" in message and "always: 200MiB" in message
    assert read_state(state).servers["od"].state == "idle"
