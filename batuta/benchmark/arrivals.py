"""When each benchmark request is sent: all at once, or gamma-distributed arrivals.

The schedule is vLLM's (``get_request`` in ``vllm bench serve``): at rate ``inf`` every
request goes at time 0; otherwise the gaps between requests are drawn from a gamma
distribution with shape ``burstiness`` and scale ``1 / (rate * burstiness)``, so the mean
gap is ``1 / rate`` whatever the burstiness. Burstiness 1 is a Poisson process, below 1
burstier, above 1 more even, ``inf`` perfectly regular. As vLLM does for a fixed number of
requests, the cumulative offsets are rescaled so the last one lands at exactly
``n / rate``: different seeds then give the same offered load, not one 2 % off.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Iterator

from batuta.benchmark.metrics import BenchOptionError

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


def check_rate(rate: float, burstiness: float) -> None:
    """Reject a rate or burstiness that no schedule can follow."""
    if math.isnan(rate) or rate <= 0:
        raise BenchOptionError(f"--request-rate must be positive or inf, not {rate}")
    if math.isnan(burstiness) or burstiness <= 0:
        raise BenchOptionError(f"--burstiness must be positive, not {burstiness}")


def _gap(rate: float, burstiness: float, rng: random.Random) -> float:
    if math.isinf(rate):
        return 0.0
    if math.isinf(burstiness):
        return 1.0 / rate
    return rng.gammavariate(burstiness, 1.0 / (rate * burstiness))


def arrival_offsets(
    n: int, rate: float, burstiness: float = 1.0, rng: random.Random | None = None
) -> list[float]:
    """Seconds after the start of the run at which each of ``n`` requests is sent."""
    check_rate(rate, burstiness)
    rng = rng or random.Random(0)
    offsets: list[float] = []
    total = 0.0
    for _ in range(n):
        total += _gap(rate, burstiness, rng)
        offsets.append(total)
    if offsets and offsets[-1] > 0:
        scale = (n / rate) / offsets[-1]
        offsets = [t * scale for t in offsets]
    return offsets


def open_offsets(rate: float, burstiness: float, rng: random.Random) -> Iterator[float]:
    """Endless offsets for a time-boxed run (``--duration``): the same gaps, unscaled,
    since the number of requests is not known in advance."""
    check_rate(rate, burstiness)
    total = 0.0
    while True:
        total += _gap(rate, burstiness, rng)
        yield total


async def paced(
    offsets: Iterable[float],
    *,
    clock: Clock = time.perf_counter,
    sleep: Sleep = asyncio.sleep,
    until: float | None = None,
) -> AsyncGenerator[tuple[int, float], None]:
    """Yield ``(index, due)`` for 0, 1, 2, ... each at its offset after the first call;
    ``due`` is the clock time it was scheduled for. Offsets are absolute, so a late wake-up
    does not push back the requests after it. ``until`` (seconds) ends the schedule: what is
    due before it is sent (however late the loop wakes), what is due after it is not."""
    start = clock()
    for index, offset in enumerate(offsets):
        if until is not None and offset >= until:
            return
        delay = start + offset - clock()
        if delay > 0:
            await sleep(delay)
        yield index, start + offset
