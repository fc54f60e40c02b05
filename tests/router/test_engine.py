"""The router against real loopback OpenAI-protocol servers, through the real OpenAIAdapter."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from batuta.backends.base import Adapter
from batuta.backends.types import Chunk, Completion, InferenceRequest, Target, Usage
from batuta.errors import AllTargetsFailed, BackendError, FailureKind, RoutingError
from batuta.router.budget import Hold, SpendLedger
from batuta.router.engine import Router, run_query
from batuta.router.targets import target_of
from batuta.routing.table import RouteEntry, TargetEntry
from tests.fakes.openai_server import OpenAIFake
from tests.fakes.proxy import RecordingProxy
from tests.fakes.scripted import DEFAULT_TEXT, tokenize

N_TOKENS = len(tokenize(DEFAULT_TEXT))


ALPHA = "Alpha answers first. " + DEFAULT_TEXT


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[OpenAIFake, OpenAIFake]]:
    a, b = OpenAIFake().start(), OpenAIFake().start()
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture
def fakes(servers) -> tuple[OpenAIFake, OpenAIFake]:
    """The two module-wide fakes, reset to a clean script for each test."""
    for fake, text in zip(servers, (ALPHA, DEFAULT_TEXT), strict=True):
        fake.requests.clear()
        fake.script.clear()
        fake.text, fake.api_key = text, None
        fake.first_byte_delay = fake.chunk_delay = 0.0
    return servers


def local(name: str, fake: OpenAIFake) -> TargetEntry:
    return TargetEntry(name, "llamacpp", "openai", fake.url, "fake-model", True)


def route_of(*entries: TargetEntry, **kw) -> RouteEntry:
    kw.setdefault("timeout", 10.0)
    kw.setdefault("retries", 1)
    privacy = kw.pop("privacy", "standard")
    return RouteEntry("r", "interactive", privacy, "balanced", tuple(entries), **kw)


class Sleeps:
    """An injected sleep that records waits instead of sleeping."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def ask(router: Router, route: RouteEntry, request: InferenceRequest | None = None, **kw):
    async def main():
        async with router:
            return await router.query(route, request or InferenceRequest("Hi"), **kw)

    return asyncio.run(main())


def generations(fake: OpenAIFake) -> list:
    return [r for r in fake.requests if r.path.endswith("/chat/completions")]


def test_streamed_answer_with_server_usage(fakes) -> None:
    a, b = fakes
    pieces: list[str] = []
    resp = ask(Router(), route_of(local("a", a), local("b", b)), on_text=pieces.append)
    assert resp.text == a.text == "".join(pieces)
    assert resp.target == "a" and resp.attempts == 1 and resp.fallbacks == 0
    assert resp.tokens_generated == len(tokenize(a.text)) and resp.usage_source == "server"
    assert resp.input_tokens is not None and resp.input_tokens > 0
    assert resp.finish_reason == "stop" and resp.failed_over_from == []
    assert resp.ttft_ms is not None and 0 < resp.ttft_ms <= resp.latency_ms
    assert resp.tokens_per_second > 0 and resp.cost_usd == 0.0
    assert generations(b) == []


def test_blocking_answer(fakes) -> None:
    a, _b = fakes
    resp = ask(Router(), route_of(local("a", a)), InferenceRequest("Hi", stream=False))
    assert resp.text == a.text and resp.usage_source == "server"
    assert generations(a)[0].json()["stream"] is False
    assert resp.tokens_per_second == pytest.approx(resp.tokens_generated / (resp.latency_ms / 1000))


def test_500_retries_then_falls_over(fakes) -> None:
    a, b = fakes
    a.fail_next(500).fail_next(500)
    sleeps = Sleeps()
    events: list[str] = []
    resp = ask(
        Router(sleep=sleeps, random=lambda: 0.0),
        route_of(local("a", a), local("b", b)),
        on_event=events.append,
    )
    assert resp.target == "b" and resp.text == DEFAULT_TEXT
    assert resp.attempts == 3 and resp.fallbacks == 1 and resp.failed_over_from == ["a"]
    assert len(generations(a)) == 2  # one retry on the same target
    assert sleeps.waits == [0.5]  # backoff 0.5 s x 2^0, no jitter
    assert any(e.startswith("↻ a:") for e in events) and any(e.startswith("✗ a:") for e in events)


def test_429_retry_after_is_honoured(fakes) -> None:
    a, b = fakes
    a.fail_next(429, retry_after="1")
    started = time.monotonic()
    resp = ask(Router(), route_of(local("a", a), local("b", b)))
    waited = time.monotonic() - started
    assert resp.target == "a" and resp.attempts == 2
    assert 1.0 <= waited < 3.0
    assert generations(b) == []


def test_retry_after_past_the_deadline_falls_over_at_once(fakes) -> None:
    a, b = fakes
    a.fail_next(503, retry_after="30")
    started = time.monotonic()
    resp = ask(Router(), route_of(local("a", a), local("b", b), timeout=5.0))
    assert time.monotonic() - started < 2.0
    assert resp.target == "b" and len(generations(a)) == 1


@pytest.mark.parametrize("status", [401, 400, 404])
def test_client_and_auth_errors_fall_over_without_retry(fakes, status: int) -> None:
    a, b = fakes
    a.fail_next(status)
    sleeps = Sleeps()
    resp = ask(Router(sleep=sleeps), route_of(local("a", a), local("b", b), retries=3))
    assert resp.target == "b" and len(generations(a)) == 1 and sleeps.waits == []


def test_quota_falls_over_without_retry(fakes) -> None:
    a, b = fakes
    a.fail_next(429, error_type="insufficient_quota")
    resp = ask(Router(sleep=Sleeps()), route_of(local("a", a), local("b", b), retries=3))
    assert resp.target == "b" and len(generations(a)) == 1


def test_stream_cut_continues_on_the_next_target(fakes) -> None:
    a, b = fakes
    a.cut_after(3)
    pieces: list[str] = []
    events: list[str] = []
    resp = ask(
        Router(),
        route_of(local("a", a), local("b", b)),
        InferenceRequest("Tell me"),
        on_text=pieces.append,
        on_event=events.append,
    )
    shown = "".join(tokenize(a.text)[:3])
    sent = generations(b)[0].json()["messages"]
    assert sent[-1] == {"role": "assistant", "content": shown}
    assert sent[-2] == {"role": "user", "content": "Tell me"}
    assert len(generations(a)) == 1  # never re-sent to the target that showed output
    assert resp.text == shown + DEFAULT_TEXT == "".join(pieces)
    assert resp.target == "b" and resp.failed_over_from == ["a"] and resp.fallbacks == 1
    assert resp.tokens_generated == 3 + N_TOKENS and resp.usage_source == "estimate"
    assert events == ["↪ a failed after 3 tokens (stream_cut); continued on b"]


def test_a_restarted_answer_is_spliced_onto_the_shown_text(fakes) -> None:
    a, b = fakes
    a.text = b.text = DEFAULT_TEXT  # the same model on both: b starts the answer over
    a.cut_after(4)
    pieces: list[str] = []
    resp = ask(Router(), route_of(local("a", a), local("b", b)), on_text=pieces.append)
    assert resp.text == "".join(pieces) == DEFAULT_TEXT
    assert resp.tokens_generated == 4 + N_TOKENS  # what the servers generated
    assert resp.target == "b" and resp.failed_over_from == ["a"]


def test_max_tokens_is_a_total_across_targets(fakes) -> None:
    """The next target is asked only for what the shown tokens left (b would otherwise
    add max_tokens more), so the joined answer stays within max_tokens."""
    a, b = fakes
    a.cut_after(3)
    resp = ask(
        Router(), route_of(local("a", a), local("b", b)), InferenceRequest("Hi", max_tokens=10)
    )
    assert generations(b)[0].json()["max_tokens"] == 7
    shown = "".join(tokenize(a.text)[:3])
    assert resp.text == shown + "".join(tokenize(DEFAULT_TEXT)[:7])
    assert resp.tokens_generated == 10 and resp.finish_reason == "length"


def test_llamacpp_with_its_template_continues_the_answer_through_completions(fakes) -> None:
    """A llama.cpp target that knows its chat template gets the prompt with the assistant
    turn left open: a true continuation, so text that repeats the shown text is kept."""
    a, b = fakes
    a.text = b.text = DEFAULT_TEXT
    a.cut_after(4)
    template = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}[assistant] "
    b_entry = TargetEntry("b", "llamacpp", "openai", b.url, "fake-model", True,
                          options={"chat_template": template})  # fmt: skip
    pieces: list[str] = []
    request = InferenceRequest("Tell me", max_tokens=N_TOKENS)
    resp = ask(Router(), route_of(local("a", a), b_entry), request, on_text=pieces.append)
    shown = "".join(tokenize(DEFAULT_TEXT)[:4])
    sent = [r for r in b.requests if r.path == "/v1/completions"]
    assert generations(b) == [] and len(sent) == 1
    assert sent[0].json()["prompt"] == "[user] Tell me\n[assistant] " + shown
    assert sent[0].json()["max_tokens"] == N_TOKENS - 4
    # The fake "continues" with the answer's start: kept, not spliced off as a repeat.
    assert resp.text == "".join(pieces) == shown + "".join(tokenize(DEFAULT_TEXT)[: N_TOKENS - 4])
    assert resp.tokens_generated == N_TOKENS and resp.target == "b"


def test_in_stream_error_after_text_also_continues(fakes) -> None:
    a, b = fakes
    a.error_event_after(2)
    resp = ask(Router(), route_of(local("a", a), local("b", b)))
    assert resp.failed_over_from == ["a"] and resp.target == "b"
    assert generations(b)[0].json()["messages"][-1]["role"] == "assistant"


def test_continuation_target_fails_before_text_then_a_third_continues(fakes) -> None:
    a, b = fakes
    with OpenAIFake(text=" done.") as c:
        a.cut_after(2)
        b.fail_next(500)
        events: list[str] = []
        resp = ask(
            Router(sleep=Sleeps()),
            route_of(local("a", a), local("b", b), local("c", c), retries=0),
            on_event=events.append,
        )
        prefix = "".join(tokenize(a.text)[:2])
        assert resp.text == prefix + " done." and resp.target == "c"
        assert generations(b)[0].json()["messages"][-1]["content"] == prefix
        assert generations(c)[0].json()["messages"][-1]["content"] == prefix
        assert resp.failed_over_from == ["a", "b"] and resp.fallbacks == 2
        assert events[-1] == "↪ a failed after 2 tokens (stream_cut); continued on c"


def test_malformed_stream_is_retried(fakes) -> None:
    a, b = fakes
    a.malformed_next()
    resp = ask(Router(sleep=Sleeps()), route_of(local("a", a), local("b", b)))
    assert resp.target == "a" and resp.attempts == 2


def test_first_byte_timeout_falls_over(fakes) -> None:
    a, b = fakes
    a.first_byte_delay = 2.0
    started = time.monotonic()
    resp = ask(Router(), route_of(local("a", a), local("b", b), retries=0, first_byte_timeout=0.3))
    assert time.monotonic() - started < 1.8
    assert resp.target == "b" and resp.failed_over_from == ["a"]


def test_deadline_skips_the_rest(fakes) -> None:
    a, b = fakes
    a.first_byte_delay = 1.0
    with pytest.raises(AllTargetsFailed) as info:
        ask(Router(), route_of(local("a", a), local("b", b), retries=0, timeout=0.4))
    first, second = info.value.attempts
    assert first.kind is FailureKind.TIMEOUT
    assert second.target == "b" and "deadline" in (second.error or "")
    assert generations(b) == []


def test_a_dead_local_server_is_passed_over_without_a_backoff(fakes, free_port: int) -> None:
    # A killed (or restarting) local server refuses connections: the next target is asked
    # at once, not after a backoff and a second refused try.
    _, b = fakes
    dead = TargetEntry("dead", "llamacpp", "openai", f"http://127.0.0.1:{free_port}", "m", True)
    sleeps = Sleeps()
    resp = ask(Router(sleep=sleeps), route_of(dead, local("b", b), retries=2))
    assert resp.target == "b" and resp.text == DEFAULT_TEXT
    assert [(x.target, x.kind) for x in resp.tried] == [("dead", FailureKind.CONNECT)]
    assert sleeps.waits == [] and resp.attempts == 2 and len(generations(b)) == 1


def test_all_targets_fail_lists_every_attempt(fakes, free_port: int) -> None:
    a, _ = fakes
    a.fail_next(500).fail_next(500)
    dead = TargetEntry("dead", "llamacpp", "openai", f"http://127.0.0.1:{free_port}", "m", True)
    with pytest.raises(AllTargetsFailed) as info:
        ask(Router(sleep=Sleeps()), route_of(local("a", a), dead))
    kinds = [(x.target, x.kind) for x in info.value.attempts]
    assert kinds == [
        ("a", FailureKind.SERVER),
        ("a", FailureKind.SERVER),
        ("dead", FailureKind.CONNECT),
        ("dead", FailureKind.CONNECT),
    ]
    assert "route 'r': every target failed" in str(info.value)


def test_breaker_opens_and_later_queries_skip_the_target(fakes, tmp_path: Path) -> None:
    a, b = fakes
    for _ in range(3):
        a.fail_next(500)
    route = route_of(local("a", a), local("b", b), retries=0)
    for _ in range(3):
        assert ask(Router(state_dir=tmp_path), route).target == "b"
    assert len(generations(a)) == 3
    events: list[str] = []
    resp = ask(Router(state_dir=tmp_path), route, on_event=events.append)  # a new process
    assert resp.target == "b" and resp.fallbacks == 1 and resp.attempts == 1
    assert len(generations(a)) == 3  # not contacted
    assert events == ["· a skipped: circuit open"]
    assert (tmp_path / "breakers.json").is_file()
    # a failing route reports the skip among its attempts
    b.fail_next(500)
    with pytest.raises(AllTargetsFailed) as info:
        ask(Router(state_dir=tmp_path), route)
    assert info.value.attempts[0].target == "a"
    assert info.value.attempts[0].error == "circuit open"


def test_client_errors_do_not_trip_the_breaker(fakes, tmp_path: Path) -> None:
    a, b = fakes
    route = route_of(local("a", a), local("b", b), retries=0)
    for _ in range(4):
        a.fail_next(400)
        ask(Router(state_dir=tmp_path), route)
    assert ask(Router(state_dir=tmp_path), route).target == "a"


def _paid(fake: OpenAIFake, pricing=(1000.0, 2000.0)) -> TargetEntry:
    return TargetEntry(
        "paid",
        "groq",
        "openai",
        fake.url + "/v1",
        "m",
        False,
        api_key_env="BATUTA_TEST_KEY",
        pricing=pricing,
    )


def test_budget_records_spend_and_skips_when_over_the_daily_limit(
    fakes, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("BATUTA_TEST_KEY", "sk-test")
    a, b = fakes
    # The worst case of one request (input estimate + 3 tokens at $1000/$2000 per M) is
    # $0.011: the first fits in $0.015, the second no longer does after the first's cost.
    request = InferenceRequest("Hi", max_tokens=3)
    route = route_of(_paid(a), local("b", b), daily_usd=0.015)
    first = ask(Router(state_dir=tmp_path), route, request)
    assert first.target == "paid"
    inp, out = first.input_tokens, first.tokens_generated
    assert first.cost_usd == pytest.approx((inp * 1000 + out * 2000) / 1e6)
    ledger = SpendLedger(tmp_path / "spend.json")
    assert ledger.spent_today("r") == pytest.approx(first.cost_usd)
    assert ledger.held_today("r") == 0.0  # the reservation was settled
    events: list[str] = []
    second = ask(Router(state_dir=tmp_path), route, request, on_event=events.append)
    assert second.target == "b" and second.cost_usd == 0.0
    assert len(generations(a)) == 1
    assert "budget" in events[0] and "daily limit" in events[0]


def test_budget_per_request_cap(fakes, monkeypatch) -> None:
    monkeypatch.setenv("BATUTA_TEST_KEY", "sk-test")
    a, b = fakes
    route = route_of(_paid(a, (1.0, 100.0)), local("b", b), per_request_usd=0.001)
    assert ask(Router(), route, InferenceRequest("Hi", max_tokens=5)).target == "paid"
    resp = ask(Router(), route, InferenceRequest("Hi", max_tokens=500))
    assert resp.target == "b" and len(generations(a)) == 1


def test_partial_paid_stream_is_billed(fakes, monkeypatch) -> None:
    monkeypatch.setenv("BATUTA_TEST_KEY", "sk-test")
    a, b = fakes
    a.cut_after(4)
    ledger = SpendLedger()
    resp = ask(Router(ledger=ledger), route_of(_paid(a, (0.0, 1e6)), local("b", b)))
    assert resp.target == "b" and resp.cost_usd == pytest.approx(4.0)  # $1 per token shown
    assert ledger.spent_today("r") == pytest.approx(4.0)


def test_concurrent_queries_never_overshoot_the_daily_budget(fakes, tmp_path: Path, monkeypatch):
    """20 queries at once, each with its own Router (as 20 CLI runs would be), share one
    spend file. Each may cost at most $0.01 (10 output tokens at $1000/M, free input), the
    budget allows five: the reservations are atomic, so no more than that is ever spent."""
    monkeypatch.setenv("BATUTA_TEST_KEY", "sk-test")
    a, b = fakes
    a.chunk_delay = 0.02  # every call is still streaming while the others check the budget
    worst = 10 * 1000 / 1e6
    route = route_of(_paid(a, (0.0, 1000.0)), local("b", b), daily_usd=5 * worst, retries=0)
    request = InferenceRequest("Hi", max_tokens=10)
    answers: list[str] = []
    start = threading.Barrier(20)

    def one() -> None:
        start.wait()
        answers.append(ask(Router(state_dir=tmp_path), route, request).target)

    threads = [threading.Thread(target=one) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    ledger = SpendLedger(tmp_path / "spend.json")
    assert len(answers) == 20 and answers.count("paid") == 5 and answers.count("b") == 15
    assert ledger.spent_today("r") <= 5 * worst + worst
    assert ledger.spent_today("r") == pytest.approx(5 * worst)
    assert ledger.held_today("r") == 0.0
    assert len(generations(a)) == 5


def test_a_paid_stream_that_dies_is_billed_even_when_every_target_fails(
    fakes, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("BATUTA_TEST_KEY", "sk-test")
    a, _ = fakes
    a.cut_after(4)
    route = route_of(_paid(a, (0.0, 1e6)), daily_usd=100.0)  # $1 per output token
    with pytest.raises(AllTargetsFailed) as failed:
        ask(Router(state_dir=tmp_path), route, InferenceRequest("Hi", max_tokens=20))
    assert failed.value.attempts[0].tokens_before_failure == 4
    ledger = SpendLedger(tmp_path / "spend.json")
    assert ledger.spent_today("r") == pytest.approx(4.0) and ledger.held_today("r") == 0.0


def test_a_retry_must_fit_the_budget_too(fakes, tmp_path: Path, monkeypatch) -> None:
    """Each try is reserved: when another query takes the budget while this one waits to
    retry, the retry no longer fits and the route goes on to its next target."""
    monkeypatch.setenv("BATUTA_TEST_KEY", "sk-test")
    a, b = fakes
    a.fail_next(500)
    route = route_of(_paid(a, (0.0, 1e6)), local("b", b), daily_usd=8.0, retries=1)
    request = InferenceRequest("Hi", max_tokens=5)  # $5 at worst, at $1 per output token
    other = SpendLedger(tmp_path / "spend.json")

    async def meanwhile(seconds: float) -> None:  # the backoff: another query reserves
        assert isinstance(other.reserve(route, (0.0, 1e6), request, ttl=60), Hold)

    events: list[str] = []
    router = Router(state_dir=tmp_path, sleep=meanwhile)
    resp = ask(router, route, request, on_event=events.append)
    assert resp.target == "b" and len(generations(a)) == 1
    assert any(e.startswith("· paid: no retry, budget:") for e in events), events
    assert other.spent_today("r") == 0.0 and other.held_today("r") == pytest.approx(5.0)


def test_an_interrupted_paid_call_is_settled(fakes, tmp_path: Path, monkeypatch) -> None:
    """A query cancelled mid-stream (Ctrl-C) bills what was generated and holds nothing."""
    monkeypatch.setenv("BATUTA_TEST_KEY", "sk-test")
    a, _ = fakes
    a.chunk_delay = 0.05
    route = route_of(_paid(a, (0.0, 1e6)), daily_usd=100.0)
    seen: list[str] = []

    async def main() -> None:
        async with Router(state_dir=tmp_path) as router:
            task = asyncio.create_task(
                router.query(route, InferenceRequest("Hi", max_tokens=50), on_text=seen.append)
            )
            while len(seen) < 3:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
    ledger = SpendLedger(tmp_path / "spend.json")
    assert ledger.held_today("r") == 0.0
    assert ledger.spent_today("r") == pytest.approx(float(len(seen)), abs=1.0)


def test_sovereign_route_refuses_a_hand_edited_remote_target(fakes, monkeypatch) -> None:
    monkeypatch.setenv("BATUTA_TEST_KEY", "sk-test")
    a, b = fakes
    route = route_of(local("b", b), _paid(a), privacy="sovereign")
    with pytest.raises(RoutingError, match="'paid'"):
        ask(Router(), route)
    remote_llama = TargetEntry("lan", "llamacpp", "openai", "http://192.0.2.7:8080", "m", True)
    with pytest.raises(RoutingError, match=r"'lan'.*not this machine"):
        ask(Router(), route_of(local("b", b), remote_llama, privacy="sovereign"))
    assert generations(a) == [] and generations(b) == []  # not a byte sent, even locally


def test_private_route_allows_dedicated_but_not_public(fakes) -> None:
    _a, b = fakes
    dedicated = TargetEntry("az", "azure-openai", "azure", "https://x.openai.azure.com", "m", False)
    public = TargetEntry("oa", "openai", "openai", "https://api.openai.com/v1", "m", False)
    with pytest.raises(RoutingError, match="'oa'"):
        ask(Router(), route_of(local("b", b), dedicated, public, privacy="private"))
    assert ask(Router(), route_of(local("b", b), dedicated, privacy="private")).target == "b"


def test_query_target_ignores_the_breaker(fakes, tmp_path: Path) -> None:
    a, _ = fakes
    target = target_of(local("a", a))
    router = Router(state_dir=tmp_path)
    for _ in range(5):
        router.breakers.record_failure(target)

    async def main():
        async with router:
            return await router.query_target(target, InferenceRequest("Hi"))

    assert asyncio.run(main()).text == a.text


def test_run_query_sync(fakes) -> None:
    a, b = fakes
    assert run_query(route_of(local("b", b)), InferenceRequest("Hi")).target == "b"
    resp = run_query(target_of(local("a", a)), InferenceRequest("Hi", stream=False), retries=0)
    assert resp.text == a.text
    with pytest.raises(TypeError, match="bare target"):
        run_query(route_of(local("b", b)), InferenceRequest("Hi"), retries=3)


def test_key_value_never_leaks_into_errors_or_state(fakes, tmp_path: Path, monkeypatch) -> None:
    secret = "sk-live-DO-NOT-LEAK-4242"
    monkeypatch.setenv("BATUTA_TEST_KEY", secret)
    a, b = fakes
    a.api_key = "the-right-key"  # the fake echoes a wrong key back in its 401 message
    b.fail_next(500).fail_next(500)
    with pytest.raises(AllTargetsFailed) as info:
        ask(Router(state_dir=tmp_path, sleep=Sleeps()), route_of(_paid(a), local("b", b)))
    assert secret in generations(a)[0].headers["authorization"]  # it was really sent
    assert secret not in str(info.value)
    assert all(secret not in (x.error or "") for x in info.value.attempts)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret not in path.read_text()


def test_connection_pool_is_shared(fakes) -> None:
    a, _ = fakes
    route = route_of(local("a", a))

    async def main():
        async with Router() as router:
            for _ in range(3):
                await router.query(route, InferenceRequest("Hi", stream=False))
            return router

    router = asyncio.run(main())
    assert len(router._adapters) == 1
    assert sum(1 for r in generations(a)) == 3


def test_given_client_is_not_closed(fakes) -> None:
    import httpx

    a, _ = fakes

    async def main():
        async with httpx.AsyncClient() as client:
            async with Router(client) as router:
                await router.query(route_of(local("a", a)), InferenceRequest("Hi"))
            assert not client.is_closed
            return (await client.get(a.url + "/v1/models")).status_code

    assert asyncio.run(main()) == 200


def test_target_without_model_uses_targets_name(fakes) -> None:
    a, _ = fakes
    target = Target("bare", "llamacpp", "openai", a.url, "", local=True)
    resp = run_query(target, InferenceRequest("Hi", model="override"))
    assert resp.text == a.text
    assert generations(a)[0].json()["model"] == "override"


# ---------------------------------------------------------------- adapters without deadlines


class InMemoryAdapter(Adapter):
    """An adapter with no HTTP at all, for adapters that do not enforce deadlines
    themselves: the router must bound them."""

    def __init__(self, target: Target, client) -> None:
        super().__init__(target, client)
        self.script = SCRIPTS[target.name]

    async def stream(self, request, *, first_byte_timeout=None, deadline=None):
        for step in self.script:
            if isinstance(step, BaseException):
                raise step
            if step == "hang":
                await asyncio.sleep(60)
            elif isinstance(step, float):
                await asyncio.sleep(step)
            else:
                yield step

    async def complete(self, request, *, first_byte_timeout=None, deadline=None):
        if "hang" in self.script:
            await asyncio.sleep(60)
        return await super().complete(request)

    async def health(self) -> bool:
        return True


SCRIPTS: dict[str, list] = {}


def mem(name: str, *script) -> TargetEntry:
    SCRIPTS[name] = list(script)
    return TargetEntry(name, "llamacpp", "openai", f"http://127.0.0.1:1/{name}", "m", True)


def test_router_bounds_adapters_that_ignore_deadlines() -> None:
    route = route_of(
        mem("slow", "hang"), mem("ok", Chunk("fine", "stop")), retries=0, first_byte_timeout=0.2
    )
    started = time.monotonic()
    resp = ask(Router(adapter_factory=InMemoryAdapter), route)
    assert resp.text == "fine" and time.monotonic() - started < 2
    resp = ask(
        Router(adapter_factory=InMemoryAdapter),
        route_of(
            mem("slow2", "hang"), mem("ok2", Chunk("fine")), retries=0, first_byte_timeout=0.2
        ),
        InferenceRequest("x", stream=False),
    )
    assert resp.text == "fine" and resp.usage_source == "estimate" and resp.tokens_generated == 1


class SelfTimedAdapter(InMemoryAdapter):
    """Says it enforces deadlines, through a signature no probe could read (``**limits``):
    the router passes them and adds no bound of its own."""

    enforces_deadlines = True
    seen: ClassVar[list[dict]] = []

    async def stream(self, request, **limits):
        self.seen.append(limits)
        async for chunk in super().stream(request):
            yield chunk

    async def complete(self, request, **limits):
        self.seen.append(limits)
        return Completion("whole", "stop", Usage(1, 1))


def test_an_adapter_that_enforces_deadlines_gets_them_and_no_router_bound() -> None:
    SelfTimedAdapter.seen.clear()
    route = route_of(mem("own", 0.3, Chunk("late", "stop")), retries=0, first_byte_timeout=0.1)
    started = time.monotonic()
    resp = ask(Router(adapter_factory=SelfTimedAdapter), route)
    # A router bound of 0.1 s would have failed the target that answers after 0.3 s.
    assert resp.text == "late" and time.monotonic() - started >= 0.3
    resp = ask(Router(adapter_factory=SelfTimedAdapter), route, InferenceRequest("x", stream=False))
    assert resp.text == "whole"
    assert [sorted(limits) for limits in SelfTimedAdapter.seen] == [
        ["deadline", "first_byte_timeout"],
        ["deadline", "first_byte_timeout"],
    ]
    assert all(0 < limits["first_byte_timeout"] <= 0.1 for limits in SelfTimedAdapter.seen)


def test_adapters_list_no_models_unless_their_protocol_can() -> None:
    SCRIPTS["t"] = []
    adapter = InMemoryAdapter(Target("t", "llamacpp", "openai", "http://127.0.0.1:1", ""), None)
    assert asyncio.run(adapter.models()) == []
    assert adapter.capabilities().streaming is True
    assert adapter.capabilities().formats  # llamacpp's record: GGUF


def test_transport_errors_that_slip_through_count_as_connect() -> None:
    import httpx

    route = route_of(mem("leaky", httpx.ConnectError("refused")), mem("ok3", Chunk("x")), retries=0)
    with pytest.raises(AllTargetsFailed) as info:
        ask(
            Router(adapter_factory=InMemoryAdapter),
            route_of(mem("leaky2", httpx.ReadError("r")), retries=0),
        )
    assert info.value.attempts[0].kind is FailureKind.CONNECT
    assert ask(Router(adapter_factory=InMemoryAdapter), route).failed_over_from == ["leaky"]


def test_continuation_that_adds_no_text_is_still_reported() -> None:
    cut = BackendError(FailureKind.STREAM_CUT, "gone")
    route = route_of(
        mem("x1", Chunk("abc"), Chunk("def"), cut), mem("x2", Chunk("", "stop", Usage(7, 0)))
    )
    events: list[str] = []
    resp = ask(Router(adapter_factory=InMemoryAdapter), route, on_event=events.append)
    assert resp.text == "abcdef" and resp.tokens_generated == 2 and resp.finish_reason == "stop"
    assert events == ["↪ x1 failed after 2 tokens (stream_cut); continued on x2"]
    assert resp.input_tokens == 7


def test_a_target_that_dies_after_its_last_token_is_the_answer() -> None:
    """Nothing is left of max_tokens: no next target is asked (it would be asked for 0
    tokens, which llama.cpp reads as "no limit")."""
    cut = BackendError(FailureKind.STREAM_CUT, "gone")
    route = route_of(mem("y1", Chunk("ab"), Chunk("cd"), cut), mem("y2", Chunk("never")))
    events: list[str] = []
    resp = ask(
        Router(adapter_factory=InMemoryAdapter), route, InferenceRequest("x", max_tokens=2),
        on_event=events.append,
    )  # fmt: skip
    assert resp.text == "abcd" and resp.tokens_generated == 2 and resp.finish_reason == "length"
    assert resp.target == "y1" and resp.failed_over_from == ["y1"] and resp.attempts == 1
    assert events == ["↪ y1 failed after 2 tokens (stream_cut); the answer had reached max_tokens"]


def test_unknown_adapter_falls_over() -> None:
    odd = TargetEntry("odd", "nonexistent", "nope", "http://127.0.0.1:1", "m", True)
    with pytest.raises(AllTargetsFailed) as info:
        ask(Router(), route_of(odd, retries=3))
    assert [a.kind for a in info.value.attempts] == [FailureKind.CLIENT]


# ---------------------------------------------------------------- targets that cannot be used


def test_a_target_whose_key_is_unset_falls_over(fakes, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("BATUTA_UNSET_KEY", raising=False)
    a, b = fakes
    keyless = TargetEntry("keyless", "openai", "openai", a.url + "/v1", "m", False,
                          api_key_env="BATUTA_UNSET_KEY")  # fmt: skip
    events: list[str] = []
    sleeps = Sleeps()
    resp = ask(
        Router(state_dir=tmp_path, sleep=sleeps),
        route_of(keyless, local("b", b), retries=3),
        on_event=events.append,
    )
    assert resp.target == "b" and resp.failed_over_from == ["keyless"]
    assert generations(a) == [] and sleeps.waits == []  # never sent, never retried
    assert events == ["✗ keyless: auth: keyless: set BATUTA_UNSET_KEY to the API key"]


def test_a_vertex_target_without_google_auth_falls_over(fakes, tmp_path: Path, monkeypatch) -> None:
    import sys

    # Application Default Credentials need google-auth, an optional extra: make sure it is
    # absent here whatever this environment has installed.
    monkeypatch.setitem(sys.modules, "google", None)
    monkeypatch.setitem(sys.modules, "google.auth", None)
    monkeypatch.delenv("VERTEX_ACCESS_TOKEN", raising=False)
    a, b = fakes
    vertex = TargetEntry("vtx", "vertex", "gemini", a.url, "gemini-2.5-flash", False,
                         options={"project": "p", "location": "us-central1"})  # fmt: skip
    events: list[str] = []
    resp = ask(
        Router(state_dir=tmp_path, sleep=Sleeps()),
        route_of(vertex, local("b", b), retries=3),
        on_event=events.append,
    )
    assert resp.target == "b" and resp.text == b.text and resp.failed_over_from == ["vtx"]
    assert resp.attempts == 2 and a.requests == []  # one try of vtx, nothing sent
    assert len(events) == 1 and "google-auth" in events[0] and "batuta[vertex]" in events[0]
    breakers = tmp_path / "breakers.json"
    assert not breakers.exists() or "vtx" not in breakers.read_text()  # not the server's fault
    with pytest.raises(AllTargetsFailed) as info:
        ask(Router(sleep=Sleeps()), route_of(vertex, retries=3))
    [attempt] = info.value.attempts
    assert attempt.target == "vtx" and attempt.kind is FailureKind.CLIENT
    assert "vtx cannot be used" in attempt.error and "pip install" in attempt.error


_NO_BOTOCORE = """
import asyncio, os
from batuta.backends.types import InferenceRequest
from batuta.router.engine import Router
from batuta.routing.table import RouteEntry, TargetEntry
bedrock = TargetEntry("br", "bedrock", "bedrock", "http://127.0.0.1:1", "m", False,
                      "AWS_ACCESS_KEY_ID", {"region": "us-east-1"})
ok = TargetEntry("ok", "llamacpp", "openai", os.environ["OK_URL"], "m", True)
route = RouteEntry("r", "interactive", "standard", "balanced", (bedrock, ok), retries=2)
async def main():
    async with Router() as router:
        return await router.query(route, InferenceRequest("Hi"), on_event=print)
answer = asyncio.run(main())
print("ANSWER", answer.target, answer.failed_over_from, answer.attempts)
"""


def test_a_bedrock_target_without_botocore_falls_over(fakes, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    # A package named botocore that cannot be imported, ahead of the real one on the path.
    (tmp_path / "botocore").mkdir()
    (tmp_path / "botocore" / "__init__.py").write_text("raise ImportError('not here')\n")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{root}", "OK_URL": fakes[1].url,
           "AWS_ACCESS_KEY_ID": "AKIAFAKE", "AWS_SECRET_ACCESS_KEY": "fake",
           "PYTHONIOENCODING": "utf-8"}  # fmt: skip
    env.pop("AWS_BEARER_TOKEN_BEDROCK", None)
    done = subprocess.run(
        [sys.executable, "-c", _NO_BOTOCORE],
        env=env,
        capture_output=True,
        encoding="utf-8",
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "✗ br: client: br cannot be used: SigV4 signing for Bedrock needs botocore: "
        "pip install 'batuta[bedrock]'",
        "ANSWER ok ['br'] 2",
    ]


def test_any_batuta_error_from_an_adapter_falls_over() -> None:
    from batuta.errors import NotInstalledError, StateError

    route = route_of(
        mem("missing", NotInstalledError("needs an extra")),
        mem("broken", StateError("unusable settings")),
        mem("fine", Chunk("ok", "stop")),
        retries=2,
    )
    sleeps = Sleeps()
    resp = ask(Router(adapter_factory=InMemoryAdapter, sleep=sleeps), route)
    assert resp.text == "ok" and resp.failed_over_from == ["missing", "broken"]
    assert resp.attempts == 3 and sleeps.waits == []


def test_an_adapter_that_cannot_be_built_falls_over() -> None:
    from batuta.errors import NotInstalledError

    def factory(target, client):
        if target.name == "unbuildable":
            raise NotInstalledError("this backend needs an extra: pip install it")
        return InMemoryAdapter(target, client)

    route = route_of(mem("unbuildable"), mem("fine2", Chunk("ok", "stop")), retries=2)
    resp = ask(Router(adapter_factory=factory, sleep=Sleeps()), route)
    assert resp.text == "ok" and resp.failed_over_from == ["unbuildable"]


# ---------------------------------------------------------------- the shared client


def test_https_targets_get_tls_on_demand(fakes) -> None:
    a, b = fakes
    tls = TargetEntry("tls", "llamacpp", "openai", f"https://127.0.0.1:{a.port}", "m", True)
    resp = ask(Router(sleep=Sleeps()), route_of(tls, local("b", b), retries=0))
    assert resp.target == "b" and resp.failed_over_from == ["tls"]
    assert generations(a) == []  # a TLS handshake against a plain server: no request parsed


def test_environment_proxy_is_never_used_for_loopback(fakes, free_port, monkeypatch) -> None:
    a, _ = fakes
    dead_proxy = f"http://127.0.0.1:{free_port}"
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(var, dead_proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    away = TargetEntry("away", "llamacpp", "openai", "http://192.0.2.1:9", "m", False)
    with pytest.raises(AllTargetsFailed) as info:
        ask(Router(), route_of(away, retries=0))
    assert info.value.attempts[0].kind is FailureKind.CONNECT  # sent to the (dead) proxy
    assert ask(Router(), route_of(local("a", a))).text == a.text  # loopback: straight there


def test_a_sovereign_route_on_any_loopback_address_never_reaches_the_proxy(monkeypatch) -> None:
    """127.0.0.2 and foo.localhost are this machine for the privacy check, so the client
    must not hand them to HTTP_PROXY (httpx mounts only matched 127.0.0.1 and localhost)."""
    near = OpenAIFake(text=ALPHA)
    near.host = "127.0.0.2"
    with RecordingProxy() as proxy, near:
        proxy.install(monkeypatch)
        other = TargetEntry("other", "llamacpp", "openai", "http://127.0.0.2:9", "m", True)
        named = TargetEntry(
            "named", "llamacpp", "openai", f"http://batuta-test.localhost:{near.port}", "m", True
        )
        there = TargetEntry("there", "llamacpp", "openai", near.url, "fake-model", True)
        route = route_of(other, named, there, privacy="sovereign", retries=0)
        resp = ask(Router(sleep=Sleeps()), route)
        assert resp.target == "there" and resp.text == ALPHA
        assert resp.failed_over_from == ["other", "named"]  # refused / unresolvable, directly
        assert proxy.seen == []
        # The proxy is live: a target elsewhere does go through it.
        away = TargetEntry("away", "llamacpp", "openai", "http://192.0.2.1:9", "m", False)
        with pytest.raises(AllTargetsFailed):
            ask(Router(sleep=Sleeps()), route_of(away, retries=0))
        assert proxy.seen == ["POST http://192.0.2.1:9/v1/chat/completions"]


def test_unwritable_bookkeeping_does_not_lose_the_answer(
    fakes, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("BATUTA_TEST_KEY", "sk-test")
    a, b = fakes
    (tmp_path / "breakers.json").mkdir()
    (tmp_path / "spend.json").mkdir()
    b.fail_next(500)
    events: list[str] = []
    resp = ask(
        Router(state_dir=tmp_path),
        route_of(local("b", b), _paid(a), retries=0),
        on_event=events.append,
    )
    assert resp.target == "paid" and resp.text == a.text and resp.cost_usd > 0
    warnings = [e for e in events if e.startswith("⚠")]
    assert len(warnings) == 2 and all("cannot write" in w for w in warnings)


def test_targets_and_adapters_are_made_once_per_table_entry(fakes, monkeypatch) -> None:
    from batuta.router import engine

    a, b = fakes
    first, second, third = local("a", a), local("b", b), local("c", a)

    async def main() -> tuple[Router, list[str]]:
        async with Router() as router:
            answers = []
            for _ in range(2):
                resp = await router.query(route_of(first), InferenceRequest("Hi", stream=False))
                answers.append(resp.target)
            made = router.adapter(router._target(first))
            assert router._target(first) is router._target(first)
            assert router.adapter(router._target(first)) is made
            monkeypatch.setattr(engine, "_RESOLVED_MAX", 2)  # caches start over when full
            for entry in (second, third, first):
                resp = await router.query(route_of(entry), InferenceRequest("Hi", stream=False))
                answers.append(resp.target)
            assert len(router._resolved) <= 2 and len(router._by_target) <= 2
            return router, answers

    router, answers = asyncio.run(main())
    assert answers == ["a", "a", "b", "c", "a"]
    assert len(router._adapters) == 3  # a, b, c: one adapter each, however often asked
