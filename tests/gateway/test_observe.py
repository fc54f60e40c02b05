"""Metrics, the request log and ``batuta spend`` agree, after requests made with the official
``openai`` SDK through the gateway to strict OpenAI fakes standing for a paid provider.

The metrics are parsed with Prometheus' own parser; a fallback (the first target answering
500) and a stream (for the time to first token) are among the requests.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from batuta.cli.main import main
from batuta.gateway.observe import ObserveSettings
from batuta.gateway.requestlog import log_path, read_records
from batuta.routing.table import TargetEntry
from batuta.runtime.state import ServerRecord, State, write_state
from tests.fakes.openai_server import OpenAIFake
from tests.fakes.scripted import DEFAULT_TEXT, tokenize
from tests.gateway.helpers import GatewayThread, route_of, write_routes
from tests.runtime.test_state import _spec

KEY = "sk-observe-test-secret"
ALPHA = "Alpha answers first. " + DEFAULT_TEXT
HI = [{"role": "user", "content": "Hi there"}]
PRICE = (3.0, 15.0)  # USD per million tokens in, out


def paid(name: str, fake: OpenAIFake) -> TargetEntry:
    return TargetEntry(name, "groq", "openai", fake.url + "/v1", "m", False,
                       api_key_env="OBSERVE_TEST_KEY", pricing=PRICE)  # fmt: skip


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[OpenAIFake, OpenAIFake]]:
    a, b = OpenAIFake(text=ALPHA, api_key=KEY).start(), OpenAIFake(api_key=KEY).start()
    yield a, b
    a.stop()
    b.stop()


def start(
    state: Path, fakes: tuple[OpenAIFake, OpenAIFake], monkeypatch: pytest.MonkeyPatch,
    **settings: object,
) -> GatewayThread:  # fmt: skip
    monkeypatch.setenv("OBSERVE_TEST_KEY", KEY)
    monkeypatch.setenv("BATUTA_STATE_DIR", str(state))
    for fake in fakes:
        fake.reset()
    a, b = fakes
    table = write_routes(state, route_of("default", paid("a", a), paid("b", b)))
    return GatewayThread(table, observe=ObserveSettings(**settings)).start()  # type: ignore[arg-type]


def sdk(gw: GatewayThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="client", max_retries=0)


def scrape(gw: GatewayThread) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of ``GET /metrics``: (name, labels) → value."""
    resp = gw.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }


def total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:  # fmt: skip
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def spend_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    capsys.readouterr()
    assert main(["spend", "--json", "--since", "all", *args]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_metrics_request_log_and_spend_agree(
    tmp_path: Path, fakes: tuple[OpenAIFake, OpenAIFake], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    a = fakes[0]
    gw = start(tmp_path, fakes, monkeypatch)
    try:
        client = sdk(gw)
        for _ in range(3):
            client.chat.completions.create(model="default", messages=HI)
        a.fail_next(500)
        fell = client.chat.completions.with_raw_response.create(model="default", messages=HI)
        assert fell.headers["x-batuta-target"] == "b"
        chunks = list(client.chat.completions.create(
            model="default", messages=HI, stream=True, stream_options={"include_usage": True}
        ))  # fmt: skip
        assert chunks[-1].usage is not None
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="nonesuch", messages=HI)
        samples = scrape(gw)
    finally:
        gw.stop()

    records = list(read_records(tmp_path))
    assert len(records) == 6
    out_tokens = 4 * len(tokenize(ALPHA)) + len(tokenize(DEFAULT_TEXT))
    assert sum(r["tokens"]["output"] for r in records) == out_tokens
    in_tokens = sum(r["tokens"]["input"] for r in records)
    assert in_tokens > 0
    usd = sum(r["cost_usd"] for r in records)
    assert usd == pytest.approx((in_tokens * PRICE[0] + out_tokens * PRICE[1]) / 1e6)

    # the fallback: tried a (server error), answered by b
    fallback = records[3]
    assert fallback["target"] == "b" and fallback["status"] == 200
    assert fallback["tried"] == [{"target": "a", "class": "server"}, {"target": "b", "class": "ok"}]
    streamed = records[4]
    assert streamed["stream"] is True and streamed["ttft_ms"] is not None
    assert 0 < streamed["ttft_ms"] <= streamed["total_ms"]
    missing = records[5]
    assert missing["status"] == 404 and missing["route"] == "-" and missing["model"] == "nonesuch"
    assert all(r["key"] == "-" and r["time"].endswith("Z") for r in records)
    assert not any("prompt" in r or "answer" in r for r in records)  # content is off by default
    text = log_path(tmp_path).read_text()
    assert KEY not in text and "Hi there" not in text
    assert stat.S_IMODE(os.stat(log_path(tmp_path)).st_mode) == 0o600

    # metrics: the same counts
    assert total(samples, "batuta_requests_total", route="default", target="a", code="200") == 4
    assert total(samples, "batuta_requests_total", route="default", target="b", key="-") == 1
    assert total(samples, "batuta_requests_total", route="-", target="-", code="404") == 1
    assert total(samples, "batuta_requests_total") == len(records)
    assert total(samples, "batuta_tokens_total", direction="output") == out_tokens
    assert total(samples, "batuta_tokens_total", direction="input") == in_tokens
    assert total(samples, "batuta_tokens_total", target="b", direction="output") == len(
        tokenize(DEFAULT_TEXT)
    )
    assert total(samples, "batuta_spend_usd_total", key="-", route="default") == pytest.approx(usd)
    assert total(samples, "batuta_fallbacks_total") == 1
    assert total(samples, "batuta_fallbacks_total", route="default", **{"from": "a", "to": "b",
                 "reason": "server"}) == 1  # fmt: skip
    assert total(samples, "batuta_request_duration_seconds_count") == len(records)
    assert total(samples, "batuta_time_to_first_token_seconds_count", route="default",
                 target="a") == 1  # fmt: skip
    ttft = total(samples, "batuta_time_to_first_token_seconds_sum")
    assert ttft == pytest.approx(streamed["ttft_ms"] / 1000, abs=1e-5)
    # read at scrape time: a's breaker saw one failure (still closed), nothing in flight
    assert samples[("batuta_breaker_state", frozenset({("target", "a")}))] == 0
    assert samples[("batuta_inflight", frozenset({("target", "a")}))] == 0

    # batuta spend: the same sums
    by_key = spend_json(capsys)
    assert by_key["rows"] == {"-": {"requests": 6, "input": in_tokens, "output": out_tokens,
                                    "usd": pytest.approx(usd)}}  # fmt: skip
    by_target = spend_json(capsys, "--by", "target")["rows"]
    assert isinstance(by_target, dict)
    assert by_target["b"]["output"] == len(tokenize(DEFAULT_TEXT))
    assert by_target["a"]["requests"] == 4 and by_target["-"]["requests"] == 1
    assert main(["spend", "--by", "route"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["ROUTE", "REQUESTS", "IN", "OUT", "USD"]
    assert table[-1].split()[:4] == ["total", "6", str(in_tokens), str(out_tokens)]
    assert main(["logs", "--requests", "-n", "2"]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert len(shown) == 2 and "404" in shown[1] and "default → a" in shown[0]
    assert main(["logs", "--requests", "--json", "-n", "1"]) == 0
    assert json.loads(capsys.readouterr().out) == records[-1]


def test_a_stream_that_fails_after_its_headers_is_recorded_with_its_error_status(
    tmp_path: Path, fakes: tuple[OpenAIFake, OpenAIFake], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = fakes
    gw = start(tmp_path, fakes, monkeypatch)
    try:
        a.cut_after(3)
        b.fail_next(500)
        stream = sdk(gw).chat.completions.create(model="default", messages=HI, stream=True)
        with pytest.raises(openai.APIError, match="every target failed"):
            list(stream)
        samples = scrape(gw)
    finally:
        gw.stop()
    (record,) = read_records(tmp_path)
    assert record["target"] is None and record["status"] == 502
    assert [t["target"] for t in record["tried"]] == ["a", "b"]
    assert record["tried"][0]["class"] == "stream_cut"
    assert "every target failed" in record["error"]
    assert total(samples, "batuta_requests_total", target="-", code="502") == 1
    assert total(samples, "batuta_fallbacks_total", **{"from": "a", "to": "b"}) == 1
    assert total(samples, "batuta_fallbacks_total", **{"from": "b", "to": "-"}) == 1


def test_content_is_logged_only_when_asked_and_servers_come_from_the_state(
    tmp_path: Path, fakes: tuple[OpenAIFake, OpenAIFake], monkeypatch: pytest.MonkeyPatch
) -> None:
    up = ServerRecord(_spec("local"), state="ready", pid=os.getpid(), restarts=2)
    write_state(tmp_path, State(servers={"local": up, "down": ServerRecord(_spec("down"),
                                                                           state="exited")}))  # fmt: skip
    gw = start(tmp_path, fakes, monkeypatch, log_content=True)
    try:
        sdk(gw).chat.completions.create(model="default", messages=HI)
        samples = scrape(gw)
    finally:
        gw.stop()
    (record,) = read_records(tmp_path)
    assert record["prompt"] == [{"role": "user", "content": "Hi there"}]
    assert record["answer"] == ALPHA
    assert KEY not in log_path(tmp_path).read_text()
    assert samples[("batuta_server_up", frozenset({("server", "local")}))] == 1
    assert samples[("batuta_server_up", frozenset({("server", "down")}))] == 0
    assert samples[("batuta_server_restarts_total", frozenset({("server", "local")}))] == 2


def test_metrics_and_request_log_can_be_turned_off(
    tmp_path: Path, fakes: tuple[OpenAIFake, OpenAIFake], monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = start(tmp_path, fakes, monkeypatch, metrics=False, request_log=False)
    try:
        assert sdk(gw).chat.completions.create(model="default", messages=HI).choices
        resp = gw.get("/metrics")
        status = gw.get("/status.json").json()
    finally:
        gw.stop()
    assert resp.status_code == 404 and "gateway.metrics: false" in resp.text
    assert not log_path(tmp_path).exists()
    assert gw.app.observer is None and status["recent"] == []
    assert [t["name"] for t in status["routes"][0]["targets"]] == ["a", "b"]


def test_status_json_shows_the_last_requests_and_spend_today(
    tmp_path: Path, fakes: tuple[OpenAIFake, OpenAIFake], monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = start(tmp_path, fakes, monkeypatch)
    try:
        sdk(gw).chat.completions.create(model="default", messages=HI)
        before = gw.get("/status.json").json()["spend_today"]["-"]
    finally:
        gw.stop()
    # a gateway started later counts the day's earlier spend from the log
    gw = start(tmp_path, fakes, monkeypatch)
    try:
        sdk(gw).chat.completions.create(model="default", messages=HI)
        status = httpx.get(gw.url + "/status.json", timeout=10).json()
    finally:
        gw.stop()
    assert status["spend_today"]["-"] == pytest.approx(2 * before)
    (last,) = status["recent"]
    assert last["target"] == "a" and last["route"] == "default" and last["status"] == 200
    assert status["tokens_per_second"] > 0 and status["inflight"] == 0
    assert status["routes"][0]["targets"][0] == {
        "name": "a", "backend": "groq", "local": False, "breaker": "closed", "inflight": 0,
    }  # fmt: skip


def test_inflight_counts_the_upstream_call_in_progress(
    tmp_path: Path, fakes: tuple[OpenAIFake, OpenAIFake], monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    a = fakes[0]
    gw = start(tmp_path, fakes, monkeypatch)
    a.first_byte_delay = 1.5
    inflight = ("batuta_inflight", frozenset({("target", "a")}))
    try:
        call = threading.Thread(
            target=lambda: sdk(gw).chat.completions.create(model="default", messages=HI)
        )
        call.start()
        end = time.monotonic() + 5
        while scrape(gw).get(inflight) != 1:
            assert time.monotonic() < end, "the call in flight was never counted"
            time.sleep(0.05)
        assert gw.get("/status.json").json()["inflight"] == 1
        call.join(10)
        assert scrape(gw)[inflight] == 0
    finally:
        a.first_byte_delay = 0.0
        gw.stop()


def test_anthropic_clients_and_clients_that_leave_are_recorded(
    tmp_path: Path, fakes: tuple[OpenAIFake, OpenAIFake], monkeypatch: pytest.MonkeyPatch
) -> None:
    import anthropic

    a = fakes[0]
    gw = start(tmp_path, fakes, monkeypatch)
    try:
        claude = anthropic.Anthropic(base_url=gw.url, api_key="client", max_retries=0)
        claude.messages.create(model="default", max_tokens=64, messages=HI)  # type: ignore[arg-type]
        a.chunk_delay = 0.2
        body = {"model": "default", "messages": HI, "stream": True}
        with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=10) as r:
            next(r.iter_lines())  # the first event, then the client hangs up
        end = time.monotonic() + 10
        while len(list(read_records(tmp_path))) < 2:
            assert time.monotonic() < end, "the abandoned stream was never recorded"
            time.sleep(0.05)
        samples = scrape(gw)
    finally:
        a.chunk_delay = 0.0
        gw.stop()
    answered, left = read_records(tmp_path)
    assert answered["api"] == "anthropic" and answered["status"] == 200
    assert answered["tokens"]["output"] == len(tokenize(ALPHA))
    assert left["api"] == "openai" and left["status"] == 499 and left["stream"] is True
    assert total(samples, "batuta_requests_total", code="499") == 1


def test_an_open_breaker_reads_as_two(tmp_path: Path) -> None:
    from batuta.gateway.metrics import Metrics, breaker_states
    from batuta.router.engine import Router
    from batuta.router.targets import target_of
    from batuta.routing.table import RoutingTable
    from tests.gateway.helpers import local

    fake = OpenAIFake()  # never started: only its address is used
    entry = local("gone", fake)
    table = RoutingTable("batuta.yaml", {"r": route_of("r", entry)})
    router = Router(state_dir=tmp_path)
    for _ in range(router.breakers.threshold):
        router.breakers.record_failure(target_of(entry))
    assert breaker_states(router, table) == {"gone": "open"}
    text = Metrics(router=lambda: router, table=lambda: table, state_dir=tmp_path).render()
    assert 'batuta_breaker_state{target="gone"} 2.0' in text.decode()
    assert breaker_states(router, None) == {}


def test_a_client_that_leaves_a_blocking_call_stops_it_and_is_recorded(
    tmp_path: Path, fakes: tuple[OpenAIFake, OpenAIFake], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The call runs in the request's own task, cancelled when the client hangs up: the
    upstream call ends at once (499), and the next request on the gateway is answered."""
    a = fakes[0]
    gw = start(tmp_path, fakes, monkeypatch)
    try:
        a.first_byte_delay = 3.0
        body = {"model": "default", "messages": HI}
        left = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):  # then the client hangs up
            httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=0.5)
        while not list(read_records(tmp_path)):
            assert time.monotonic() < left + 2.5, "the abandoned call was not stopped"
            time.sleep(0.02)
        assert gw.get("/status.json").json()["inflight"] == 0
        a.first_byte_delay = 0.0
        answered = httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=10)
        assert answered.status_code == 200 and answered.json()["choices"][0]["message"]["content"]
    finally:
        a.first_byte_delay = 0.0
        gw.stop()
    gone, ok = read_records(tmp_path)
    assert (gone["status"], gone["stream"], gone["target"]) == (499, False, None)
    assert ok["status"] == 200 and ok["target"] == "a"
