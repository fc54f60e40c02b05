"""``max_concurrency``, queues and strategies through the gateway, on REAL llama.cpp servers
(SmolLM2-135M): 20 concurrent requests into ``max_concurrency: 2`` are all answered with
never more than 2 in flight at the server; a full queue answers 429 with Retry-After;
least-busy sends a new request to the replica with fewer in flight; round-robin takes
turns; a dead replica is failed over."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from batuta.apply.execute import apply_loaded
from batuta.manifest import load_manifest
from batuta.routing.table import table_path
from batuta.runtime import Runtime
from batuta.runtime.state import read_state
from tests.conftest import _free_port
from tests.gateway.helpers import GatewayThread
from tests.gateway.test_ondemand_real import SOURCE, wait_for

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("concurrency")
    ports = {"a": _free_port(), "b": _free_port()}
    (root / "batuta.yaml").write_text(
        f"models:\n  smollm2: {{source: {SOURCE}, quantization: Q4_1}}\n"
        "servers:\n"
        f"  a: {{backend: llamacpp, model: smollm2, port: {ports['a']}, ctx: 2048, threads: 1,\n"
        "      max_concurrency: 2, queue: {max: 64, timeout: 120s}}\n"
        f"  b: {{backend: llamacpp, model: smollm2, port: {ports['b']}, ctx: 2048, threads: 1,\n"
        "      max_concurrency: 1, queue: {max: 0}}\n"
        "routes:\n"
        "  lim: {targets: [a], timeout: 120s}\n"
        "  tight: {targets: [b], timeout: 60s}\n"
        "  spread: {targets: [a, b], strategy: least-busy, timeout: 60s}\n"
        "  turns: {targets: [a, b], strategy: round-robin, timeout: 60s}\n"
    )
    apply_loaded(load_manifest(root / "batuta.yaml"), echo=lambda _: None)
    yield root / ".batuta"
    Runtime(root / ".batuta").stop_all()


@pytest.fixture
def gw(state: Path) -> Iterator[GatewayThread]:
    with GatewayThread(table_path(state)) as gateway:
        yield gateway


def ask(gw: GatewayThread, route: str, tokens: int = 4) -> httpx.Response:
    body = {"model": route, "messages": [{"role": "user", "content": "Tell me a story"}],
            "max_tokens": tokens, "temperature": 0.0}  # fmt: skip
    return httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=180)


def busy_slots(url: str) -> int:
    try:
        slots = httpx.get(url + "/slots", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return 0
    return sum(1 for s in slots if s.get("is_processing"))


def test_twenty_requests_into_two_slots(gw: GatewayThread, state: Path) -> None:
    url = read_state(state).servers["a"].spec.url
    # The server itself would run more at once: the limit of 2 is the gateway's.
    assert len(httpx.get(url + "/slots", timeout=5).json()) > 2
    peak, done = [0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], busy_slots(url))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(lambda _: ask(gw, "lim", 8), range(20)))
    finally:
        done.set()
        watcher.join()
    assert [a.status_code for a in answers] == [200] * 20, [a.text for a in answers][:3]
    assert 1 <= peak[0] <= 2, peak[0]
    gate = gw.app.router.gates.gate(gw.app.table.current().routes["lim"].targets[0])
    assert gate is not None and gate.in_flight == 0 and gate.waiting == 0


def test_full_queue_answers_429_with_retry_after(gw: GatewayThread) -> None:
    with ThreadPoolExecutor(1) as pool:
        long = pool.submit(ask, gw, "tight", 200)
        wait_for(lambda: gw.app.router.gates.busy.get("b"), 30, "the first request in flight")
        refused = ask(gw, "tight")
        assert long.result().status_code == 200
    assert refused.status_code == 429, refused.text
    assert refused.headers["retry-after"] == "1"
    assert "max_concurrency of 1" in refused.json()["error"]["message"]
    assert gw.app.router.gates.queue_full >= 1


def test_least_busy_picks_the_replica_with_fewer_in_flight(gw: GatewayThread) -> None:
    with ThreadPoolExecutor(1) as pool:
        long = pool.submit(ask, gw, "lim", 200)  # a is busy with it
        wait_for(lambda: gw.app.router.gates.busy.get("a"), 30, "a request in flight on a")
        picked = ask(gw, "spread")
        assert long.result().status_code == 200
    assert picked.status_code == 200 and picked.headers["x-batuta-target"] == "b"
    idle = ask(gw, "spread")  # nothing in flight: the declared order decides
    assert idle.headers["x-batuta-target"] == "a"


def test_round_robin_takes_turns(gw: GatewayThread) -> None:
    targets = [ask(gw, "turns").headers["x-batuta-target"] for _ in range(4)]
    assert targets in (["a", "b", "a", "b"], ["b", "a", "b", "a"]), targets


def test_a_dead_replica_is_failed_over(gw: GatewayThread, state: Path) -> None:
    Runtime(state).stop("b")  # last: the module's servers are not needed after this
    answers = [ask(gw, "turns") for _ in range(4)]
    assert [a.status_code for a in answers] == [200] * 4
    assert {a.headers["x-batuta-target"] for a in answers} == {"a"}
    assert any(a.headers["x-batuta-fallbacks"] == "1" for a in answers)
