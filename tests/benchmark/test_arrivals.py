"""The arrival schedule: vLLM's gamma gaps, its rescaling, and pacing on a fake clock."""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import statistics

import pytest

from batuta.benchmark.arrivals import arrival_offsets, open_offsets, paced
from batuta.benchmark.metrics import BenchOptionError


def test_infinite_rate_sends_everything_at_once():
    assert arrival_offsets(5, math.inf) == [0.0] * 5


def test_offsets_are_rescaled_to_end_at_n_over_rate():
    for seed in range(5):
        offsets = arrival_offsets(40, 8.0, 1.0, random.Random(seed))
        assert offsets == sorted(offsets)
        assert offsets[-1] == pytest.approx(40 / 8.0)
        assert offsets[0] > 0  # as vLLM, even the first request waits one gap


def test_same_seed_same_schedule():
    a = arrival_offsets(20, 3.0, 0.5, random.Random(7))
    b = arrival_offsets(20, 3.0, 0.5, random.Random(7))
    c = arrival_offsets(20, 3.0, 0.5, random.Random(8))
    assert a == b != c


@pytest.mark.parametrize("burstiness", [0.25, 1.0, 4.0])
def test_gaps_are_gamma_with_mean_one_over_rate(burstiness):
    # Gamma(shape=b, scale=1/(rate*b)): mean 1/rate, coefficient of variation 1/sqrt(b).
    rate = 10.0
    offsets = list(itertools.islice(open_offsets(rate, burstiness, random.Random(1)), 20000))
    gaps = [b - a for a, b in zip([0.0, *offsets], offsets, strict=False)]
    assert statistics.fmean(gaps) == pytest.approx(1 / rate, rel=0.05)
    cv = statistics.pstdev(gaps) / statistics.fmean(gaps)
    assert cv == pytest.approx(1 / math.sqrt(burstiness), rel=0.06)


def test_infinite_burstiness_is_perfectly_regular():
    offsets = arrival_offsets(4, 2.0, math.inf)
    assert offsets == pytest.approx([0.5, 1.0, 1.5, 2.0])


@pytest.mark.parametrize(
    ("rate", "burstiness", "message"),
    [(0.0, 1.0, "request-rate"), (-1.0, 1.0, "request-rate"), (math.nan, 1.0, "request-rate"),
     (1.0, 0.0, "burstiness"), (1.0, -2.0, "burstiness")],
)  # fmt: skip
def test_impossible_schedules_are_refused(rate, burstiness, message):
    with pytest.raises(BenchOptionError, match=message):
        arrival_offsets(3, rate, burstiness)


class FakeTime:
    """A clock that only moves when the code under test sleeps (a late wake-up can be
    simulated with ``lag``)."""

    def __init__(self, lag: float = 0.0) -> None:
        self.now = 100.0
        self.lag = lag
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds + self.lag


def _collect(offsets, fake, until=None):
    dues = []

    async def go():
        seen = []
        async for i, due in paced(offsets, clock=fake.clock, sleep=fake.sleep, until=until):
            seen.append((i, round(fake.now - 100.0, 9)))
            dues.append(round(due - 100.0, 9))
        return seen

    seen = asyncio.run(go())
    fake.dues = dues
    return seen


def test_paced_yields_each_index_at_its_offset():
    fake = FakeTime()
    assert _collect([0.0, 0.5, 0.5, 2.0], fake) == [(0, 0.0), (1, 0.5), (2, 0.5), (3, 2.0)]
    assert fake.sleeps == [0.5, 1.5]


def test_a_late_wake_up_does_not_push_back_later_requests():
    fake = FakeTime(lag=0.3)  # every sleep overshoots by 300 ms
    seen = _collect([1.0, 1.2, 3.0], fake)
    assert [t for _, t in seen] == [1.3, 1.3, 3.3]  # the second is sent at once, not 0.2 later
    assert fake.dues == [1.0, 1.2, 3.0]  # what the schedule asked for
    assert fake.sleeps == [1.0, pytest.approx(1.7)]


def test_paced_stops_at_until():
    fake = FakeTime()
    assert _collect(open_offsets(1.0, math.inf, random.Random(0)), fake, until=3.5) == [
        (0, 1.0),
        (1, 2.0),
        (2, 3.0),
    ]
    late = FakeTime(lag=0.6)  # due before the end: sent, even though the wake-up is late
    assert _collect([1.0, 2.0, 2.5], late, until=2.5) == [(0, 1.6), (1, 2.6)]
