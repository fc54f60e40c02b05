"""The result JSON (vLLM's keys and shape), the table and the plot."""

from __future__ import annotations

import json
import math
import sys
from datetime import datetime

import pytest
from rich.console import Console

from batuta.benchmark import report
from batuta.benchmark.metrics import RequestRecord, summarize
from batuta.benchmark.runner import RunResult, RunSpec
from batuta.errors import NotInstalledError

VLLM_KEYS = {
    "date", "backend", "label", "model_id", "num_prompts", "request_rate", "burstiness",
    "max_concurrency", "duration", "completed", "failed", "total_input_tokens",
    "total_output_tokens", "request_throughput", "request_goodput", "output_throughput",
    "total_token_throughput",
}  # fmt: skip


def _run(spec, n=3, fail=0):
    records = [
        RequestRecord(i, success=True, start=0.1 * i, ttft=0.05 * (i + 1), itl=[0.01, 0.02],
                      latency=0.05 * (i + 1) + 0.03, chunks=3, usage_output_tokens=3,
                      usage_input_tokens=10)
        for i in range(n)
    ] + [RequestRecord(n + i, error="refused", error_kind="connect") for i in range(fail)]  # fmt: skip
    metrics = summarize(records, 2.0, spec.percentiles, spec.goodput or None)
    return RunResult(spec, records, 2.0, metrics)


def _doc(spec, **kw):
    when = datetime(2026, 1, 2, 3, 4, 5)
    return report.result_document(
        _run(spec, **kw), backend="llamacpp", label=None, model_id="m", date=when
    )


def test_the_document_has_vllms_keys_and_values():
    doc = _doc(RunSpec(percentiles=(50.0, 99.9), goodput={"ttft": 100.0}, max_concurrency=2))
    assert set(doc) >= VLLM_KEYS
    for metric in ("ttft", "tpot", "itl", "e2el"):
        for stat in ("mean", "median", "std", "p50", "p99.9"):
            assert f"{stat}_{metric}_ms" in doc
    assert doc["date"] == "20260102-030405"
    assert doc["request_rate"] == "inf"  # as vLLM writes an infinite rate
    assert (doc["num_prompts"], doc["max_concurrency"], doc["burstiness"]) == (3, 2, 1.0)
    assert doc["goodput_slos_ms"] == {"ttft": 100.0}
    assert doc["request_goodput"] == 1.0  # two of three under 100 ms, over 2 s
    assert json.loads(json.dumps(doc)) == doc  # plain JSON: no NaN, no objects


def test_a_finite_rate_is_a_number():
    assert _doc(RunSpec(request_rate=2.5))["request_rate"] == 2.5


def test_save_writes_an_object_for_one_run_and_a_list_for_several(tmp_path):
    one, two = _doc(RunSpec(max_concurrency=1)), _doc(RunSpec(max_concurrency=2))
    path = tmp_path / "out" / "result.json"
    report.save(path, [one])
    assert json.loads(path.read_text()) == one
    report.save(path, [one, two])
    assert json.loads(path.read_text()) == [one, two]
    assert sorted(p.name for p in path.parent.iterdir()) == ["result.json"]  # no temp left


def test_save_into_an_unwritable_place_is_a_clean_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(Exception, match="cannot write") as info:
        report.save(blocker / "result.json", [_doc(RunSpec())])
    assert type(info.value).__name__ == "BatutaError"


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    with pytest.raises(TypeError):
        report.save(tmp_path / "r.json", [{"not json": object()}])
    assert list(tmp_path.iterdir()) == []


def _render(table):
    console = Console(width=200, record=True)
    console.print(table)
    return console.export_text()


def test_the_table_puts_runs_side_by_side():
    docs = [
        _doc(RunSpec(max_concurrency=1, percentiles=(50.0, 99.0))),
        _doc(RunSpec(max_concurrency=4, percentiles=(50.0, 99.0)), fail=2),
    ]
    text = _render(report.table(docs))
    assert "concurrency 1" in text and "concurrency 4" in text
    assert "P99 TTFT (ms)" in text and "Median E2EL (ms)" in text
    assert "2 (connect 2)" in text
    assert "Request goodput" not in text  # no SLO given
    assert "9 (usage)" in text  # total generated tokens and where the count came from


def test_table_columns_without_a_cap():
    docs = [_doc(RunSpec(request_rate=2.0, goodput={"e2el": 1000.0})), _doc(RunSpec())]
    text = _render(report.table(docs))
    assert "rate 2.0" in text and "run 2" in text
    assert "Request goodput (req/s)" in text


def test_plot_without_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as when the extra is absent
    with pytest.raises(NotInstalledError, match=r"pip install 'batuta\[plot\]'"):
        report.require_plot()
    with pytest.raises(NotInstalledError):
        report.plot(None, [], [])


class Axes:
    """Records what the plot draws."""

    def __init__(self):
        self.calls = []

    def step(self, x, y, *, where, label):
        self.calls.append(("step", label, x, y))

    def plot(self, x, y, *, marker, label):
        self.calls.append(("plot", label, x, y))

    def set(self, **kwargs):
        self.calls.append(("set", kwargs.get("title")))

    def legend(self, *, fontsize):
        self.calls.append(("legend",))


def test_draw_plots_latency_distributions_and_throughput():
    runs = [_run(RunSpec(max_concurrency=c)) for c in (1, 4)]
    docs = [report.result_document(r, backend="b", label="x", model_id="m") for r in runs]
    left, right = Axes(), Axes()
    report.draw(left, right, runs, docs)
    steps = [c for c in left.calls if c[0] == "step"]
    assert [c[1] for c in steps] == [
        "TTFT concurrency 1", "E2EL concurrency 1", "TTFT concurrency 4", "E2EL concurrency 4"
    ]  # fmt: skip
    assert steps[0][2] == pytest.approx([50.0, 100.0, 150.0])
    assert steps[0][3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    lines = {c[1]: (c[2], c[3]) for c in right.calls if c[0] == "plot"}
    assert lines["output tok/s"] == ([1.0, 4.0], [4.5, 4.5])
    assert lines["requests/s"] == ([1.0, 4.0], [1.5, 1.5])
    assert ("set", "Throughput vs concurrency") in right.calls


def test_cdf_of_nothing_is_empty():
    assert report.cdf([]) == ([], [])
    assert math.isclose(report.cdf([0.002])[0][0], 2.0)
