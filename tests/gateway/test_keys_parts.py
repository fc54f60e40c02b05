"""The parts of gateway keys on their own: the token bucket, the keyring built from the
manifest and the environment, and the key ledger's reservations (with clocks to drive)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from batuta.backends.types import InferenceRequest, InferenceResponse
from batuta.errors import AllTargetsFailed, Attempt, RoutingError
from batuta.gateway.errors import GatewayError, GatewaySetupError
from batuta.gateway.keys import Key, Keyring, digest
from batuta.gateway.keyspend import KEY_SPEND_FILE, KeySpend
from batuta.gateway.ratelimit import TokenBucket
from batuta.gateway.select import Selected
from batuta.manifest.gateway import Gateway as GatewayBlock
from batuta.manifest.gateway import parse_rate
from batuta.routing.table import TargetEntry
from tests.gateway.helpers import route_of

NOON = 1_767_225_600.0 + 12 * 3600  # 2026-01-01 12:00 UTC


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_rates_parse_to_a_count_per_seconds() -> None:
    assert parse_rate("60/min") == (60.0, 60.0)
    assert parse_rate("10/s") == (10.0, 1.0)
    assert parse_rate(" 1000 / h ") == (1000.0, 3600.0)
    with pytest.raises(ValueError, match="is not a rate"):
        parse_rate("60 per minute")
    with pytest.raises(ValueError, match="allows no request"):
        parse_rate("0/min")


def test_the_bucket_allows_a_burst_then_refills_continuously() -> None:
    clock = Clock()
    bucket = TokenBucket(*parse_rate("60/min"), clock=clock)
    assert [bucket.take() for _ in range(60)] == [0.0] * 60
    assert bucket.take() == pytest.approx(1.0)  # one token a second
    clock.now = 0.25
    assert bucket.take() == pytest.approx(0.75)
    clock.now = 1.0
    assert bucket.take() == 0.0 and bucket.take() == pytest.approx(1.0)
    clock.now = 1000.0  # refills up to the capacity only
    assert sum(bucket.take() == 0.0 for _ in range(100)) == 60


def _block(**keys: dict[str, object]) -> GatewayBlock:
    return GatewayBlock.model_validate({"listen": "0.0.0.0:8080", "keys": keys})


def test_keyring_keeps_digests_and_disables_keys_whose_variable_is_unset() -> None:
    warned: list[str] = []
    block = _block(a={"key_env": "A_KEY", "routes": ["default"], "rate": "10/s",
                      "budget": {"daily_usd": 5}}, b={"key_env": "B_KEY"})  # fmt: skip
    ring = Keyring.from_manifest(block, {"A_KEY": " secret-a\n"}, warned.append)
    assert warned == ["⚠ gateway.keys.b: $B_KEY is not set, so key 'b' is disabled"]
    (key,) = ring.by_digest.values()
    assert key.digest == digest("secret-a") and key.name == "a"
    assert key.routes == {"default"} and key.daily_usd == 5 and key.budgeted
    assert key.bucket is not None and key.bucket.capacity == 10
    assert "secret-a" not in repr(ring.by_name)


def test_keyring_refuses_when_no_key_is_usable_or_two_share_a_value() -> None:
    block = _block(a={"key_env": "A_KEY"}, b={"key_env": "B_KEY"})
    with pytest.raises(GatewaySetupError, match=r"none of the keys' variables is set \(\$A_KEY"):
        Keyring.from_manifest(block, {"A_KEY": ""}, lambda line: None)
    with pytest.raises(GatewaySetupError, match=r"'a' and 'b' have the same value") as caught:
        Keyring.from_manifest(block, {"A_KEY": "same-value", "B_KEY": "same-value"}, print)
    assert "same-value" not in str(caught.value)


def _headers(**headers: str) -> list[tuple[bytes, bytes]]:
    return [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]


def test_admit_takes_a_bearer_token_or_x_api_key() -> None:
    ring = Keyring([Key("a", digest("ka")), Key("b", digest("kb"))])
    assert ring.admit(_headers(authorization="Bearer ka")).name == "a"
    assert ring.admit(_headers(authorization="bearer  kb ")).name == "b"
    assert ring.admit(_headers(x_api_key="kb")).name == "b"
    # a bearer token counts over x-api-key; another scheme is no key at all
    assert ring.admit(_headers(x_api_key="kb", authorization="Bearer ka")).name == "a"
    for headers, code in [
        ({}, "missing_api_key"),
        ({"authorization": "Basic ka"}, "missing_api_key"),
        ({"authorization": "Bearer"}, "missing_api_key"),
        ({"authorization": "Bearer kc"}, "invalid_api_key"),
        ({"x_api_key": "ka "[:1]}, "invalid_api_key"),
    ]:
        with pytest.raises(GatewayError) as caught:
            ring.admit(_headers(**headers))
        assert (caught.value.status, caught.value.code) == (401, code)


def test_admit_refuses_over_the_rate_with_the_wait_for_one_token() -> None:
    clock = Clock()
    ring = Keyring([Key("a", digest("ka"), bucket=TokenBucket(2, 60, clock=clock))])
    ring.admit(_headers(x_api_key="ka"))
    ring.admit(_headers(x_api_key="ka"))
    with pytest.raises(GatewayError) as caught:
        ring.admit(_headers(x_api_key="ka"))
    assert caught.value.status == 429 and caught.value.code == "rate_limit_exceeded"
    assert caught.value.retry_after == pytest.approx(30.0)
    assert (b"retry-after", b"30") in caught.value.headers()
    clock.now = 30.0
    assert ring.admit(_headers(x_api_key="ka")).name == "a"


def _paid(name: str, pricing: tuple[float, float] = (1000.0, 2000.0)) -> TargetEntry:
    return TargetEntry(name, "groq", "openai", "https://x/v1", "m", False, pricing=pricing)


def _free(name: str = "free") -> TargetEntry:
    return TargetEntry(name, "llamacpp", "openai", "http://127.0.0.1:1", "m", True)


def _ask(max_tokens: int = 10) -> InferenceRequest:
    return InferenceRequest(prompt="abcd", max_tokens=max_tokens)  # 1 + 4 input tokens


def test_a_key_without_budget_or_a_free_route_holds_nothing(tmp_path: Path) -> None:
    spend = KeySpend(tmp_path)
    budgeted = Key("a", b"", daily_usd=1.0)
    free = Selected(route_of("r", _free()))
    assert spend.reserve(budgeted, free, _ask()) == (free, None)
    paid = Selected(route_of("r", _paid("p")))
    assert spend.reserve(Key("b", b""), paid, _ask()) == (paid, None)
    assert not (tmp_path / KEY_SPEND_FILE).exists()


def test_reserve_holds_the_worst_case_and_settles_the_actual_cost(tmp_path: Path) -> None:
    clock = Clock(NOON)
    spend = KeySpend(tmp_path, clock=clock)
    key = Key("a", b"", daily_usd=0.06)
    worst = (5 * 1000 + 10 * 2000) / 1e6  # 0.025
    selected = Selected(route_of("r", _paid("p")))
    kept, booking = spend.reserve(key, selected, _ask())
    assert kept == selected and booking is not None and booking.hold.usd == pytest.approx(worst)
    _, second = spend.reserve(key, selected, _ask())
    assert second is not None
    with pytest.raises(GatewayError) as caught:  # 0.025 + 0.025 held, 0.025 more is over
        spend.reserve(key, selected, _ask())
    error = caught.value
    assert (error.status, error.code, error.retry) == (429, "key_budget", False)
    assert error.retry_after == 12 * 3600  # until the next UTC day
    assert "held for requests in flight" in error.message
    assert dict(error.headers())[b"x-should-retry"] == b"false"
    spend.ledger.settle(booking.hold, 0.001)
    spend.ledger.settle(second.hold, 0.002)
    assert spend.spent_today("a") == pytest.approx(0.003)
    assert KeySpend(tmp_path, clock=clock).spent_today("a") == pytest.approx(0.003)
    clock.now += 24 * 3600  # a new UTC day
    assert spend.spent_today("a") == 0.0


def test_over_budget_the_route_keeps_its_free_targets(tmp_path: Path) -> None:
    spend = KeySpend(tmp_path, clock=Clock(NOON))
    key = Key("a", b"", daily_usd=0.01)  # under one worst case (0.025)
    selected = Selected(route_of("r", _paid("p"), _free()))
    kept, booking = spend.reserve(key, selected, _ask())
    assert [t.name for t in kept.route.targets] == ["free"] and booking is None


def test_the_per_request_cap_drops_the_targets_it_cannot_afford(tmp_path: Path) -> None:
    spend = KeySpend(tmp_path, clock=Clock(NOON))
    key = Key("a", b"", daily_usd=1.0, per_request_usd=0.01)
    cheap = _paid("cheap", (100.0, 200.0))  # 0.0025
    selected = Selected(route_of("r", _paid("dear"), cheap))
    kept, booking = spend.reserve(key, selected, _ask())
    assert [t.name for t in kept.route.targets] == ["cheap"]
    assert booking is not None and booking.hold.usd == pytest.approx(0.0025)
    with pytest.raises(GatewayError) as caught:
        spend.reserve(Key("a", b"", per_request_usd=0.01), Selected(route_of("r", _paid("d"))),
                      _ask())  # fmt: skip
    assert caught.value.status == 429 and caught.value.retry_after is None
    assert "per-request cap" in caught.value.message and caught.value.retry is False


def test_bookings_price_failures_and_abandoned_calls(tmp_path: Path) -> None:
    spend = KeySpend(tmp_path, clock=Clock(NOON))
    _, booking = spend.reserve(Key("a", b"", daily_usd=1.0),
                               Selected(route_of("r", _paid("p"), _paid("q", (1.0, 1.0)))),
                               _ask())  # fmt: skip
    assert booking is not None
    failed = AllTargetsFailed("r", [Attempt("p", "cut", tokens_before_failure=3),
                                    Attempt("q", "refused")])  # fmt: skip
    assert booking.failed(failed) == pytest.approx((5 * 1000 + 3 * 2000) / 1e6)
    assert booking.abandoned(2) == pytest.approx((5 * 1000 + 2 * 2000) / 1e6)


def _routed(spend: KeySpend, key: Key, selected: Selected, call: Any, on_text: Any = None) -> Any:
    """What the gateway does: reserve, then the call with its booking settled."""
    selected, booking = spend.reserve(key, selected, _ask())
    assert booking is not None
    return asyncio.run(spend.settled(booking, selected, _ask(), on_text, call))


def test_routed_settles_answers_failures_and_refusals(tmp_path: Path) -> None:
    clock = Clock(NOON)
    spend = KeySpend(tmp_path, clock=clock)
    key = Key("a", b"", daily_usd=1.0)
    selected = Selected(route_of("r", _paid("p")))
    seen: list[str] = []

    async def answer(chosen: Selected, on_text: Any, request: InferenceRequest) -> Any:
        on_text("Hel")
        on_text("lo")
        return InferenceResponse("Hello", 2, 1.0, 1.0, cost_usd=0.004)

    assert _routed(spend, key, selected, answer, seen.append).text == "Hello"
    assert seen == ["Hel", "lo"] and spend.spent_today("a") == pytest.approx(0.004)

    async def cut(chosen: Selected, on_text: Any, request: InferenceRequest) -> Any:
        raise AllTargetsFailed("r", [Attempt("p", "cut", tokens_before_failure=3)])

    with pytest.raises(AllTargetsFailed):
        _routed(spend, key, selected, cut)
    assert spend.spent_today("a") == pytest.approx(0.004 + (5 * 1000 + 3 * 2000) / 1e6)

    async def refused(chosen: Selected, on_text: Any, request: InferenceRequest) -> Any:
        raise RoutingError("the route breaks its privacy tier")

    before = spend.spent_today("a")
    with pytest.raises(RoutingError):
        _routed(spend, key, selected, refused)
    assert spend.spent_today("a") == before and spend.ledger.held_today("a") == 0


def test_an_abandoned_request_is_booked_at_its_input_and_streamed_text(tmp_path: Path) -> None:
    spend = KeySpend(tmp_path, clock=Clock(NOON))
    key = Key("a", b"", daily_usd=1.0)

    async def main() -> None:
        started = asyncio.Event()

        async def slow(chosen: Selected, on_text: Any, request: InferenceRequest) -> Any:
            for piece in ("a", "b", "c", "d"):
                on_text(piece)
            started.set()
            await asyncio.sleep(30)

        selected, booking = spend.reserve(key, Selected(route_of("r", _paid("p"))), _ask())
        assert booking is not None
        task = asyncio.ensure_future(spend.settled(booking, selected, _ask(), lambda t: None, slow))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert spend.spent_today("a") == pytest.approx((5 * 1000 + 4 * 2000) / 1e6)
    assert spend.ledger.held_today("a") == 0


def test_an_unwritable_spend_file_refuses_rather_than_spends_unrecorded(tmp_path: Path) -> None:
    spend = KeySpend(tmp_path, clock=Clock(NOON))
    key = Key("a", b"", daily_usd=1.0)
    selected = Selected(route_of("r", _paid("p")))
    (tmp_path / (KEY_SPEND_FILE + ".lock")).mkdir()  # the lock cannot be opened
    with pytest.raises(GatewayError) as caught:
        spend.reserve(key, selected, _ask())
    assert (caught.value.status, caught.value.code) == (503, "key_spend_unwritable")
    (tmp_path / (KEY_SPEND_FILE + ".lock")).rmdir()

    async def answer(chosen: Selected, on_text: Any, request: InferenceRequest) -> Any:
        lock = tmp_path / (KEY_SPEND_FILE + ".lock")
        lock.unlink()
        lock.mkdir()  # it breaks while the call runs
        return InferenceResponse("ok", 1, 1.0, 1.0, cost_usd=0.001)

    assert _routed(spend, key, selected, answer).text == "ok"  # the answer is not lost
    assert spend.ledger.held_today("a") > 0  # the hold stays until its ttl
