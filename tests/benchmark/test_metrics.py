"""The metric definitions, checked against hand-computed values and against numpy (which
vLLM's benchmark uses for its statistics)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batuta.benchmark.metrics import (
    BenchOptionError,
    RequestRecord,
    mean,
    median,
    parse_goodput,
    parse_percentiles,
    percentile,
    percentile_label,
    std,
    summarize,
)

samples = st.lists(st.floats(0, 1e4, allow_nan=False), min_size=1, max_size=60)


@settings(max_examples=200, deadline=None)
@given(samples, st.floats(0, 100))
def test_statistics_match_numpy(values, p):
    assert percentile(values, p) == pytest.approx(np.percentile(values, p), rel=1e-9, abs=1e-9)
    assert median(values) == pytest.approx(np.median(values), rel=1e-9, abs=1e-9)
    assert mean(values) == pytest.approx(np.mean(values), rel=1e-9, abs=1e-9)
    assert std(values) == pytest.approx(np.std(values), rel=1e-7, abs=1e-7)


def test_empty_samples_are_zero_like_vllm():
    # vLLM computes np.mean(values or 0): an empty sample reads as 0, not NaN.
    assert (mean([]), median([]), std([]), percentile([], 99)) == (0.0, 0.0, 0.0, 0.0)


def test_percentile_labels_follow_vllm():
    assert [percentile_label(p) for p in (50.0, 99.0, 99.9, 0.5)] == ["50", "99", "99.9", "0.5"]


def _ok(index, ttft, itl, usage=None, start=0.0, input_tokens=None):
    """A successful record whose chunks arrived ttft, then itl gaps after the start."""
    return RequestRecord(
        index,
        success=True,
        start=start,
        ttft=ttft,
        itl=list(itl),
        latency=ttft + sum(itl),
        chunks=1 + len(itl),
        usage_output_tokens=usage,
        usage_input_tokens=input_tokens,
        estimated_input_tokens=5,
    )


def test_summary_follows_vllm_definitions():
    records = [
        _ok(0, 0.100, [0.010, 0.030], usage=3, input_tokens=7),  # tpot (0.04)/2 = 0.02
        _ok(1, 0.200, [0.020] * 4, usage=9, input_tokens=8, start=0.05),  # tpot 0.08/8 = 0.01
        _ok(2, 0.050, [], usage=1, input_tokens=6, start=0.1),  # one token: no tpot
        RequestRecord(3, error="connect: refused", error_kind="connect"),
        RequestRecord(4, error="HTTP 500", error_kind="server"),
        RequestRecord(5, error="HTTP 503", error_kind="server"),
    ]
    out = summarize(records, duration=2.0, percentiles=[50, 99.9])
    assert out["completed"] == 3 and out["failed"] == 3
    assert out["error_kinds"] == {"connect": 1, "server": 2}
    assert out["total_input_tokens"] == 7 + 8 + 6
    assert out["total_output_tokens"] == 3 + 9 + 1
    assert out["request_throughput"] == pytest.approx(1.5)
    assert out["output_throughput"] == pytest.approx(13 / 2)
    assert out["total_token_throughput"] == pytest.approx((21 + 13) / 2)
    assert out["request_goodput"] is None
    assert out["token_count_source"] == "usage"
    assert out["input_token_count_source"] == "usage"
    # TTFT over successes only; TPOT only where more than one token; ITL pooled.
    assert out["mean_ttft_ms"] == pytest.approx(1000 * (0.1 + 0.2 + 0.05) / 3)
    assert out["median_tpot_ms"] == pytest.approx(15.0)
    assert out["mean_tpot_ms"] == pytest.approx(15.0)
    assert out["std_tpot_ms"] == pytest.approx(5.0)
    pooled = [0.010, 0.030] + [0.020] * 4
    assert out["mean_itl_ms"] == pytest.approx(1000 * np.mean(pooled))
    assert out["p99.9_itl_ms"] == pytest.approx(1000 * np.percentile(pooled, 99.9))
    assert out["p50_e2el_ms"] == pytest.approx(1000 * np.median([0.14, 0.28, 0.05]))
    assert out["max_concurrent_requests"] == 3  # all three overlap at t = 0.1
    assert "input_lens" not in out


def test_goodput_counts_requests_meeting_every_slo():
    records = [
        _ok(0, 0.100, [0.010, 0.030], usage=3),  # ttft 100, tpot 20, e2el 140
        _ok(1, 0.200, [0.020] * 4, usage=9),  # ttft 200, tpot 10, e2el 280
        _ok(2, 0.050, [], usage=1),  # ttft 50, tpot counts as 0, e2el 50
    ]
    assert summarize(records, 1.0, [99], {"ttft": 150})["request_goodput"] == 2
    assert summarize(records, 1.0, [99], {"ttft": 150, "tpot": 15})["request_goodput"] == 1
    assert summarize(records, 2.0, [99], {"e2el": 280})["request_goodput"] == 1.5
    assert summarize(records, 1.0, [99], {"tpot": 9.99})["request_goodput"] == 1


def test_chunk_counts_stand_in_for_missing_usage():
    records = [_ok(0, 0.1, [0.01] * 3), _ok(1, 0.1, [0.01], usage=0)]
    out = summarize(records, 1.0, [99], detailed=True)
    assert out["token_count_source"] == "chunks"
    assert out["input_token_count_source"] == "estimate"
    assert out["output_lens"] == [4, 2]  # a usage of 0 is no count, as in vLLM
    assert out["input_lens"] == [5, 5]
    assert out["mean_tpot_ms"] == pytest.approx(10.0)
    mixed = summarize([*records, _ok(2, 0.1, [0.01], usage=5)], 1.0, [99])
    assert mixed["token_count_source"] == "mixed"


def test_detailed_arrays_keep_failures_in_place():
    records = [_ok(0, 0.1, [0.02]), RequestRecord(1, start=0.3, error="boom", error_kind="x")]
    out = summarize(records, 1.0, [99], detailed=True)
    assert out["ttfts"] == [0.1, 0.0]
    assert out["itls"] == [[0.02], []]
    assert out["output_lens"] == [2, 0]
    assert out["errors"] == ["", "boom"]
    assert out["latencies"] == [pytest.approx(0.12), 0.0]
    assert out["start_times"] == [0.0, 0.3]


def test_no_duration_means_no_throughput():
    out = summarize([_ok(0, 0.1, [])], 0.0, [99], {"ttft": 1000})
    assert out["request_throughput"] == out["request_goodput"] == 0.0
    assert out["max_concurrent_requests"] == 1


def test_parse_percentiles():
    assert parse_percentiles("50, 90,99.9,50") == [50.0, 90.0, 99.9]
    with pytest.raises(BenchOptionError, match="'x' is not a number"):
        parse_percentiles("50,x")
    with pytest.raises(BenchOptionError, match=r"outside 0\.\.100"):
        parse_percentiles("101")


def test_parse_goodput():
    assert parse_goodput(["ttft:500", "TPOT:50,e2el:2000"]) == {
        "ttft": 500.0,
        "tpot": 50.0,
        "e2el": 2000.0,
    }
    assert parse_goodput([]) == {}
    for bad, message in [
        ("itl:5", "METRIC:MS"),
        ("ttft", "METRIC:MS"),
        ("ttft:fast", "not a number"),
        ("ttft:-1", "non-negative"),
    ]:
        with pytest.raises(BenchOptionError, match=message):
            parse_goodput([bad])
