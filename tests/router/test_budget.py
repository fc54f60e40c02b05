"""Cost budget: prices, estimates, the daily ledger and the checks before a paid target."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from batuta.backends.types import InferenceRequest, Usage
from batuta.router.budget import (
    DEFAULT_OUTPUT_ESTIMATE,
    Hold,
    SpendLedger,
    cost_usd,
    estimate_tokens,
    pricing_for,
    request_input_tokens,
    usage_cost,
)
from batuta.routing.table import RouteEntry, TargetEntry

DAY1 = datetime(2026, 3, 1, 23, 59, tzinfo=timezone.utc).timestamp()
DAY2 = DAY1 + 120  # two minutes later: the next UTC day


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _entry(backend: str = "groq", *, local: bool = False, pricing=None) -> TargetEntry:
    return TargetEntry("t", backend, "openai", "https://x/v1", "m", local, pricing=pricing)


def _route(daily=None, per_request=None) -> RouteEntry:
    return RouteEntry(
        "paid",
        "interactive",
        "standard",
        "balanced",
        (),
        daily_usd=daily,
        per_request_usd=per_request,
    )


def test_pricing_sources() -> None:
    assert pricing_for(_entry(pricing=(1.0, 2.0))) == (1.0, 2.0)
    assert pricing_for(_entry("groq")) == (0.05, 0.08)  # catalogue default
    assert pricing_for(_entry("groq", local=True)) is None  # local is free
    assert pricing_for(_entry("llamacpp")) is None  # local backend in the catalogue
    assert pricing_for(_entry("modal")) is None  # priced 0/0
    assert pricing_for(_entry("nonexistent")) is None
    assert pricing_for(_entry("groq", pricing=(0.0, 0.0))) is None


def test_estimates_and_cost() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2
    req = InferenceRequest("x" * 40, system="y" * 8)
    assert request_input_tokens(req) == (10 + 4) + (2 + 4)
    assert cost_usd((2.0, 10.0), 1_000_000, 100_000) == pytest.approx(3.0)
    assert cost_usd(None, 10, 10) == 0.0
    # usage from the server wins; missing counts are estimated
    assert usage_cost((1.0, 1.0), req, Usage(100, 50), "zz") == pytest.approx(150e-6)
    assert usage_cost((1.0, 1.0), req, Usage(None, None), "z" * 8) == pytest.approx(22e-6)


def test_ledger_per_route_per_utc_day(tmp_path: Path) -> None:
    clock = Clock(DAY1)
    path = tmp_path / "spend.json"
    ledger = SpendLedger(path, clock=clock)
    ledger.record("paid", 0.25)
    ledger.record("paid", 0.5)
    ledger.record("other", 1.0)
    ledger.record("paid", 0.0)  # nothing to record
    assert ledger.spent_today("paid") == pytest.approx(0.75)
    assert SpendLedger(path, clock=clock).spent_today("other") == pytest.approx(1.0)
    clock.now = DAY2
    assert ledger.spent_today("paid") == 0.0
    data = json.loads(path.read_text())
    assert data["days"]["2026-03-01"]["paid"] == pytest.approx(0.75)


def test_ledger_keeps_a_month(tmp_path: Path) -> None:
    clock = Clock(DAY1)
    ledger = SpendLedger(tmp_path / "spend.json", clock=clock)
    for _ in range(40):
        ledger.record("r", 0.01)
        clock.now += 86400
    assert len(json.loads((tmp_path / "spend.json").read_text())["days"]) == 31


def test_ledger_in_memory_and_corrupt_values(tmp_path: Path) -> None:
    mem = SpendLedger(clock=Clock(DAY1))
    mem.record("r", 2.0)
    assert mem.spent_today("r") == 2.0
    path = tmp_path / "spend.json"
    path.write_text(json.dumps({"days": {"2026-03-01": {"r": "lots"}, "x": 1}}))
    ledger = SpendLedger(path, clock=Clock(DAY1))
    assert ledger.spent_today("r") == 0.0
    ledger.record("r", 0.5)
    assert ledger.spent_today("r") == 0.5
    path.write_text(json.dumps({"days": []}))
    assert ledger.spent_today("r") == 0.0
    ledger.record("r", 0.5)
    assert ledger.spent_today("r") == 0.5


def test_check_daily_limit() -> None:
    ledger = SpendLedger(clock=Clock(DAY1))
    req = InferenceRequest("hi", max_tokens=10)
    route = _route(daily=1.0)
    assert ledger.check(route, (1.0, 1.0), req) is None
    ledger.record("paid", 1.0)
    reason = ledger.check(route, (1.0, 1.0), req)
    assert reason is not None and "daily limit is $1.00" in reason and "'paid'" in reason
    assert ledger.check(route, None, req) is None  # free targets are never limited
    assert ledger.check(_route(), (1.0, 1.0), req) is None  # no limits at all


def test_check_per_request_cap_uses_max_tokens_or_a_default() -> None:
    ledger = SpendLedger(clock=Clock(DAY1))
    price = (1.0, 100.0)  # $100 per million output tokens
    cap = _route(per_request=0.01)  # 100 output tokens at most
    assert ledger.check(cap, price, InferenceRequest("hi", max_tokens=50)) is None
    reason = ledger.check(cap, price, InferenceRequest("hi", max_tokens=500))
    assert reason is not None and "per-request cap" in reason and "500 output tokens" in reason
    reason = ledger.check(cap, price, InferenceRequest("hi"))
    assert reason is not None and f"{DEFAULT_OUTPUT_ESTIMATE} output tokens" in reason


def test_unwritable_ledger_is_a_state_error(tmp_path: Path) -> None:
    from batuta.errors import StateError

    (tmp_path / "file").write_text("")
    with pytest.raises(StateError, match="cannot write"):
        SpendLedger(tmp_path / "file" / "spend.json").record("r", 1.0)
    (tmp_path / "spend.json").mkdir()
    with pytest.raises(StateError, match="cannot write"):
        SpendLedger(tmp_path / "spend.json").record("r", 1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "spend.json", "spend.json.lock"]


def test_reserve_holds_the_worst_case_until_settled(tmp_path: Path) -> None:
    clock = Clock(DAY1 - 3600)
    path = tmp_path / "spend.json"
    ledger = SpendLedger(path, clock=clock)
    route = _route(daily=1.0)
    price = (0.0, 1e5)  # $0.1 per output token
    req = InferenceRequest("hi", max_tokens=3)  # $0.30 at worst
    first = ledger.reserve(route, price, req, ttl=60)
    second = ledger.reserve(route, price, req, ttl=60)
    third = ledger.reserve(route, price, req, ttl=60)
    assert isinstance(first, Hold) and isinstance(second, Hold) and isinstance(third, Hold)
    assert first.usd == pytest.approx(0.3) and first.day == "2026-03-01"
    refused = ledger.reserve(route, price, req, ttl=60)
    assert isinstance(refused, str)
    assert refused == (
        "budget: this request may cost up to $0.3000 here; route 'paid' has spent $0.0000"
        " today (UTC) and $0.9000 held for queries in flight, its daily limit is $1.00"
    )
    other = SpendLedger(path, clock=clock)  # another process sees the same holds
    assert other.held_today("paid") == pytest.approx(0.9) and other.spent_today("paid") == 0.0
    ledger.settle(first, 0.1)  # it cost less than its worst case
    other.settle(second, 0.0)  # it failed before any output
    assert ledger.spent_today("paid") == pytest.approx(0.1)
    assert ledger.held_today("paid") == pytest.approx(0.3)
    assert isinstance(ledger.reserve(route, price, req, ttl=60), Hold)  # 0.1 + 0.6 + 0.3
    data = json.loads(path.read_text())
    assert data["days"]["2026-03-01"]["paid"] == pytest.approx(0.1) and len(data["holds"]) == 2


def test_a_hold_never_settled_lapses(tmp_path: Path) -> None:
    clock = Clock(DAY1 - 3600)
    ledger = SpendLedger(tmp_path / "spend.json", clock=clock)
    route = _route(daily=0.5)
    req = InferenceRequest("hi", max_tokens=4)
    hold = ledger.reserve(route, (0.0, 1e5), req, ttl=30)  # a query killed mid-call
    assert isinstance(hold, Hold)
    assert isinstance(ledger.reserve(route, (0.0, 1e5), req, ttl=30), str)
    clock.now += 31
    assert ledger.held_today("paid") == 0.0
    assert isinstance(ledger.reserve(route, (0.0, 1e5), req, ttl=30), Hold)
    ledger.settle(hold, 0.2)  # a late settle still books what was spent
    assert ledger.spent_today("paid") == pytest.approx(0.2)


def test_reserve_without_a_daily_limit_or_price_holds_nothing() -> None:
    ledger = SpendLedger(clock=Clock(DAY1))
    req = InferenceRequest("hi", max_tokens=10)
    assert ledger.reserve(_route(), (1.0, 1.0), req, ttl=1) is None
    assert ledger.reserve(_route(daily=1.0), None, req, ttl=1) is None
    capped = ledger.reserve(_route(per_request=1e-9), (1.0, 1.0), req, ttl=1)
    assert isinstance(capped, str) and "per-request cap" in capped
    ledger.record("paid", 2.0)
    over = ledger.reserve(_route(daily=1.0), (1.0, 1.0), req, ttl=1)
    assert isinstance(over, str) and "has spent $2.0000 today" in over
    hold = ledger.reserve(_route(daily=3.0), (1.0, 1.0), req, ttl=1)  # in memory too
    assert isinstance(hold, Hold) and ledger.held_today("paid") == pytest.approx(hold.usd)
    ledger.settle(hold, 0.5)
    assert ledger.spent_today("paid") == pytest.approx(2.5) and ledger.held_today("paid") == 0


def test_corrupt_holds_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "spend.json"
    path.write_text(json.dumps({"days": {}, "holds": {"a": "x", "b": {"usd": "lots"}}}))
    ledger = SpendLedger(path, clock=Clock(DAY1))
    assert ledger.held_today("paid") == 0.0
    assert isinstance(
        ledger.reserve(_route(daily=1.0), (1.0, 1.0), InferenceRequest("h"), ttl=5), Hold
    )
    assert set(json.loads(path.read_text())["holds"]) != {"a", "b"}
