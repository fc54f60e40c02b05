"""What each gateway key spends: its budget, reserved before a call and settled after.

The route ledger's machinery (:class:`~batuta.router.budget.SpendLedger`: prices, worst-case
estimates, holds under the file's lock) keeps a second file, ``.batuta/key-spend.json``,
whose names are the keys' names (never their values), per UTC day, so it survives a
restart of the gateway and holds across several gateway processes.

Only paid targets cost. For a request to a route with paid targets, a key with a budget
first drops each paid target whose worst case (estimated input + ``max_tokens`` at its
price) is over the key's ``per_request_usd``, then reserves the dearest remaining worst
case in ``daily_usd`` (refused: every paid target is dropped). The free targets of the route
still answer, as with a route's own budget; with nothing left the request is a 429 with
``x-should-retry: false`` (``Retry-After``: until the next UTC day, for the daily limit).
After the call the hold becomes the actual cost: the answer's, or for a route that failed
what its targets streamed before failing; an abandoned request is booked at its input and
the text streamed so far, at the dearest price. A request whose targets are all free (or a
key without a budget) touches no file.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from batuta.errors import AllTargetsFailed, RoutingError, StateError
from batuta.gateway.errors import GatewayError
from batuta.gateway.select import Selected
from batuta.router.budget import (
    DEFAULT_OUTPUT_ESTIMATE,
    Hold,
    Pricing,
    SpendLedger,
    cost_usd,
    pricing_for,
    request_input_tokens,
)

if TYPE_CHECKING:
    from batuta.backends.types import InferenceRequest, InferenceResponse
    from batuta.gateway.keys import Key

KEY_SPEND_FILE = "key-spend.json"
HOLD_GRACE = 60.0  # a hold outlives the route's deadline by this much, then lapses
TextSink = Callable[[str], None]
# The routed query itself: (what answers, where text goes, the request) -> the answer.
Call = Callable[[Selected, "TextSink | None", "InferenceRequest"], Awaitable["InferenceResponse"]]


@dataclass(frozen=True)
class Booking:
    """What one request set aside in its key's daily budget."""

    hold: Hold
    prices: dict[str, Pricing]  # the paid targets it may use, by name
    inputs: int  # estimated input tokens

    def failed(self, exc: AllTargetsFailed) -> float:
        """What the targets billed for the text they streamed before failing."""
        return sum(
            cost_usd(self.prices.get(a.target), self.inputs, a.tokens_before_failure)
            for a in exc.attempts
            if a.tokens_before_failure
        )

    def abandoned(self, chunks: int) -> float:
        """An upper guess for a call cut short: input and streamed chunks, dearest price."""
        return max(cost_usd(p, self.inputs, chunks) for p in self.prices.values())


class KeySpend:
    """The keys' daily spend, in ``state_dir`` (else in memory)."""

    def __init__(
        self,
        state_dir: Path | None,
        *,
        clock: Callable[[], float] = time.time,
        ledger: SpendLedger | None = None,  # gateway.state: the replicas' shared one
    ) -> None:
        path = state_dir / KEY_SPEND_FILE if state_dir is not None else None
        self.ledger = ledger or SpendLedger(path, clock=clock)
        self._clock = clock

    def spent_today(self, key: str) -> float:
        """USD the key ``key`` has spent today (UTC)."""
        return self.ledger.spent_today(key)

    async def settled(
        self,
        booking: Booking,
        selected: Selected,
        request: InferenceRequest,
        on_text: TextSink | None,
        call: Call,
    ) -> InferenceResponse:
        """``call`` (the routed query) with ``booking`` held, settled to what it cost."""
        chunks = 0

        def counted(text: str) -> None:
            nonlocal chunks
            chunks += 1
            if on_text is not None:
                on_text(text)

        cost = 0.0
        try:
            resp = await call(selected, counted if on_text is not None else None, request)
            cost = resp.cost_usd
            return resp
        except AllTargetsFailed as exc:
            cost = booking.failed(exc)
            raise
        except RoutingError:  # refused before any call (the route breaks its privacy tier)
            raise
        except BaseException:  # cancelled: the client went away
            cost = booking.abandoned(chunks)
            raise
        finally:
            # Unwritable: the hold lapses after its ttl; the answer is not lost for it.
            with contextlib.suppress(StateError):
                self.ledger.settle(booking.hold, cost)

    def reserve(
        self, key: Key, selected: Selected, request: InferenceRequest
    ) -> tuple[Selected, Booking | None]:
        """What may answer within ``key``'s budget, and the hold to settle (None when
        nothing is held); a 429 GatewayError when no target is left."""
        route = selected.route
        if not key.budgeted:
            return selected, None
        prices = {e.name: p for e in route.targets if (p := pricing_for(e)) is not None}
        if not prices:
            return selected, None
        inputs = request_input_tokens(request)
        out = request.max_tokens if request.max_tokens is not None else DEFAULT_OUTPUT_ESTIMATE
        worst = {name: cost_usd(p, inputs, out) for name, p in prices.items()}
        why = ""
        cap = key.per_request_usd
        if cap is not None and any(w > cap for w in worst.values()):
            dearest = max(worst.values())
            why = (f"budget: this request may cost up to ${dearest:.4f} ({out} output tokens),"
                   f" over key {key.name!r}'s ${cap:g} per-request cap; ask for fewer tokens")  # fmt: skip
            worst = {n: w for n, w in worst.items() if w <= cap}
        hold: Hold | None = None
        retry_after: float | None = None
        if worst and key.daily_usd is not None:
            usd = max(worst.values())
            ttl = route.timeout + HOLD_GRACE
            try:
                held = self.ledger.hold(key.name, key.daily_usd, usd, ttl=ttl)
            except StateError as exc:  # money: refuse rather than spend unrecorded
                raise GatewayError(503, f"cannot record key spend: {exc}", type_="server_error",
                                   code="key_spend_unwritable") from None  # fmt: skip
            if isinstance(held, Hold):
                hold = held
            else:
                spent, in_flight = held
                why = _over_daily(key, usd, spent, in_flight)
                retry_after = self._until_tomorrow()
                worst = {}
        kept = tuple(e for e in route.targets if e.name not in prices or e.name in worst)
        if not kept:
            raise GatewayError(429, why, type_="insufficient_quota", code="key_budget",
                               retry_after=retry_after, retry=False)  # fmt: skip
        if len(kept) < len(route.targets):
            selected = Selected(replace(route, targets=kept), selected.bare)
        if hold is None:
            return selected, None
        return selected, Booking(hold, {n: prices[n] for n in worst}, inputs)

    def _until_tomorrow(self) -> float:
        now = datetime.fromtimestamp(self._clock(), timezone.utc)
        midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        return math.ceil((midnight - now).total_seconds())


def _over_daily(key: Key, usd: float, spent: float, held: float) -> str:
    in_flight = f" and ${held:.4f} held for requests in flight" if held > 0 else ""
    return (
        f"budget: this request may cost up to ${usd:.4f}; key {key.name!r} has spent"
        f" ${spent:.4f} today (UTC){in_flight}, its daily limit is ${key.daily_usd:.2f}"
    )
