"""The result JSON (vLLM's keys and shape), the table and the plot."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime

import pytest
from rich.console import Console

from batuta.benchmark import report
from batuta.benchmark.metrics import RequestRecord, percentile, summarize
from batuta.benchmark.runner import RunResult, RunSpec
from batuta.errors import BatutaError, NotInstalledError

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


# ---------------------------------------------------------------------------- plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module", autouse=True)
def _matplotlib_config(tmp_path_factory):
    # matplotlib reads MPLCONFIGDIR on first import: its font cache goes to a scratch
    # directory, not the home directory.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MPLCONFIGDIR", str(tmp_path_factory.mktemp("mplconfig")))
        yield


def assert_png(path, width=1200, height=1300):
    """A real PNG of the figure's size with something drawn on it."""
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert 20_000 < len(data) < 1_500_000
    pixels = imread(path)
    assert pixels.shape == (height, width, 4)
    rgb = pixels[:, :, :3]
    assert (rgb.min(axis=2) < 0.9).mean() > 0.03  # text, axes, boxes: not a blank page
    assert ((rgb.max(axis=2) - rgb.min(axis=2)) > 0.3).mean() > 0.002  # coloured marks
    return pixels


def _records(ttfts, tokens=4, gap=0.01):
    return [
        RequestRecord(i, success=True, start=0.1 * i, ttft=t, itl=[gap] * (tokens - 1),
                      latency=t + gap * (tokens - 1), chunks=tokens, usage_output_tokens=tokens,
                      usage_input_tokens=10)
        for i, t in enumerate(ttfts)
    ]  # fmt: skip


def _sweep(concurrencies=(1, 4), goodput=None, fail_last=0, **spec):
    runs = []
    for n, c in enumerate(concurrencies):
        records = _records([0.02 * (n + 1) + 0.001 * i for i in range(20)])
        if n == len(concurrencies) - 1:
            records += [RequestRecord(99 + i, error="cut", error_kind="stream_cut")
                        for i in range(fail_last)]  # fmt: skip
        run_spec = RunSpec(max_concurrency=c, goodput=goodput or {}, **spec)
        metrics = summarize(records, 1.0 + n, run_spec.percentiles, goodput)
        runs.append(RunResult(run_spec, records, 1.0 + n, metrics))
    when = datetime(2026, 1, 2, 3, 4, 5)
    docs = [report.result_document(r, backend="llamacpp", label="sweep", model_id="m", date=when)
            for r in runs]  # fmt: skip
    return runs, docs


def test_latency_samples_are_the_metrics_samples_in_ms():
    records = _records([0.1, 0.2], tokens=3) + _records([0.3], tokens=1)
    records.append(RequestRecord(9, error="refused", error_kind="connect", ttft=5.0))
    run = RunResult(RunSpec(), records, 1.0, {})
    samples = report.latency_samples(run)
    assert samples["ttft"] == pytest.approx([100.0, 200.0, 300.0])  # the failure is left out
    assert samples["itl"] == pytest.approx([10.0] * 4)  # gaps of all requests pooled
    assert samples["tpot"] == pytest.approx([10.0, 10.0])  # a one-token answer has no TPOT
    assert samples["e2el"] == pytest.approx([120.0, 220.0, 300.0])


def test_box_stats_use_the_tables_percentiles():
    values = [float(v) for v in range(1, 201)]
    stats = report.box_stats(values)
    assert stats["med"] == pytest.approx(percentile(values, 50.0))
    assert (stats["q1"], stats["q3"]) == (pytest.approx(50.75), pytest.approx(150.25))
    assert stats["whishi"] == pytest.approx(percentile(values, 99.0))  # the P99 printed
    assert stats["whislo"] == pytest.approx(percentile(values, 1.0))
    assert stats["mean"] == pytest.approx(100.5)
    assert stats["fliers"] == [1.0, 2.0, 199.0, 200.0]
    assert report.box_stats([]) is None


def test_runs_are_named_by_their_cap_and_their_failures():
    _, docs = _sweep((1, 8), fail_last=2)
    assert report.run_ticks(docs) == (True, ["1", "8\n(2 failed)"])
    uncapped = [dict(d, max_concurrency=None) for d in docs]
    uncapped[0]["request_rate"] = 2.0
    assert report.run_ticks(uncapped) == (False, ["rate 2.0", "run 2\n(2 failed)"])


def _texts(artists):
    return [t.get_text() for t in artists]


def test_the_figure_shows_four_latency_panels_and_two_throughputs():
    runs, docs = _sweep((1, 2, 4), goodput={"ttft": 45.0}, fail_last=1)
    fig = report.figure(runs, docs)
    axes = fig.get_axes()
    titles = [ax.get_title() for ax in axes]
    assert titles == [
        "Time to First Token", "Time per Output Token (excl. 1st token)",
        "Inter-token Latency", "End-to-end Latency",
        "Output token throughput", "Request throughput",
    ]  # fmt: skip
    ylabels = [ax.get_ylabel() for ax in axes]
    assert ylabels == ["TTFT (ms)", "TPOT (ms per token)", "ITL (ms)", "E2EL (ms)", "tokens/s",
                       "requests/s"]  # fmt: skip
    ttft = axes[0]
    assert _texts(ttft.get_xticklabels()) == ["1", "2", "4\n(1 failed)"]
    assert ttft.get_xlabel() == "max concurrency"
    assert ttft.get_yscale() == "linear"
    assert ttft.get_ylim() == pytest.approx((0, 79 * 1.1))  # from zero to the slowest, plus room
    # The median of each box is written beside it: 20 requests at 20 ms + 0..19 ms.
    assert _texts(ttft.texts) == ["29.5", "49.5", "69.5"]
    assert len(ttft.patches) == 3  # one box per run

    tokens, requests = axes[4], axes[5]
    (line,) = tokens.get_lines()
    assert list(line.get_xdata()) == [1.0, 2.0, 4.0]
    assert list(line.get_ydata()) == pytest.approx([d["output_throughput"] for d in docs])
    assert _texts(tokens.get_legend().get_texts()) == ["output tokens/s"]
    assert _texts(requests.get_legend().get_texts()) == [
        "requests/s", "goodput (TTFT <= 45 ms)"
    ]  # fmt: skip
    goodput = requests.get_lines()[1]
    assert list(goodput.get_ydata()) == pytest.approx(
        [20.0, 6 / 2, 0.0]
    )  # TTFT 40..45 of 40..59 ms
    assert "20.0" in _texts(requests.texts)  # both lines equal there: written once
    assert _texts(requests.texts).count("20.0") == 1

    legend = fig.subfigs[0].legends[0]
    assert legend.get_title().get_text() == "Latency of successful requests, one box per run"
    assert "whiskers: p1 to p99" in _texts(legend.get_texts())
    assert fig.get_suptitle() == (
        "Serving benchmark: sweep (m)\n20 requests per run, request rate: inf, "
        "max tokens: 128, 2026-01-02 03:04:05"
    )


def test_wide_spreads_get_log_axes_and_empty_runs_say_so():
    runs, docs = _sweep((1, 8, 64))
    runs[1].records[:] = [RequestRecord(0, error="boom", error_kind="server")]
    runs[2].records[:] = _records([2.0, 3.0], tokens=1)
    docs[1].update(failed=1, output_throughput=0.0, request_throughput=0.0)
    fig = report.figure(runs, docs)
    ttft, tpot, _, _, tokens, _ = fig.get_axes()
    assert ttft.get_yscale() == "log"  # 20 ms next to 3 s
    assert "no data" in _texts(ttft.texts)  # the run where every request failed
    assert _texts(tpot.texts).count("no data") == 2  # ... and one-token answers have no TPOT
    assert tokens.get_xscale() == "log"  # caps 1, 8, 64 spaced evenly
    assert _texts(tokens.get_xticklabels()) == ["1", "8\n(1 failed)", "64"]


def test_a_run_without_cap_or_output():
    runs, docs = _sweep((1,), request_rate=2.5)
    runs[0].records[:] = [RequestRecord(0, error="boom", error_kind="server")]
    docs[0].update(max_concurrency=None, output_throughput=0.0, request_throughput=0.0)
    docs[0]["date"] = "yesterday"  # a document written elsewhere: its date is shown as is
    fig = report.figure(runs, docs)
    ttft, *_, tokens, requests = fig.get_axes()
    assert _texts(ttft.texts) == ["no data"] and ttft.get_ylim() == (0.0, 1.0)
    assert ttft.get_xlabel() == "run" and tokens.get_xlabel() == "run"
    assert _texts(tokens.get_xticklabels()) == ["rate 2.5"]
    assert ttft.get_xlim() == pytest.approx((-0.6, 2.6))  # one box, as wide as one of three
    assert tokens.get_ylim() == (0.0, 1.0)
    assert fig.get_suptitle().endswith("request rate: 2.5/s, max tokens: 128, yesterday")
    assert requests.get_legend() is not None


def test_plot_writes_a_png(tmp_path):
    runs, docs = _sweep((1, 2, 4, 8), goodput={"e2el": 60.0}, fail_last=3)
    path = tmp_path / "charts" / "bench.png"
    report.plot(path, runs, docs)
    assert_png(path)
    assert [p.name for p in path.parent.iterdir()] == ["bench.png"]  # no temporary left


def test_the_suffix_picks_the_format(tmp_path):
    runs, docs = _sweep((1,))
    report.plot(tmp_path / "bench.svg", runs, docs)
    assert (tmp_path / "bench.svg").read_text().lstrip().startswith("<?xml")
    report.plot(tmp_path / "bench", runs, docs)  # no suffix: PNG
    assert (tmp_path / "bench").read_bytes()[:8] == PNG_MAGIC


def test_a_plot_that_cannot_be_written_is_a_clean_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    runs, docs = _sweep((1,))
    with pytest.raises(BatutaError, match="cannot write"):
        report.plot(blocker / "p.png", runs, docs)


def test_files_are_replaced_whole_and_get_the_umasks_mode(tmp_path):
    path = tmp_path / "r.json"
    path.write_text("old")
    with pytest.raises(RuntimeError), report._replacing(path) as fh:
        fh.write(b"half")
        raise RuntimeError("interrupted")
    assert path.read_text() == "old"  # the old file stays until the new one is complete
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
    old = os.umask(0o027)
    try:
        report.save(path, [_doc(RunSpec())])
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640  # not mkstemp's 0600


SHADOW = """raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")\n"""


def shadow_matplotlib(directory):
    """A directory whose ``matplotlib`` fails to import as an absent package does."""
    package = directory / "matplotlib"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(SHADOW)
    return directory


def test_plot_without_matplotlib_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(shadow_matplotlib(tmp_path)))
    monkeypatch.delitem(sys.modules, "matplotlib", raising=False)
    with pytest.raises(NotInstalledError, match=r"pip install 'batuta\[plot\]'"):
        report.require_plot()
    runs, docs = _sweep((1,))
    with pytest.raises(NotInstalledError):
        report.plot(tmp_path / "p.png", runs, docs)
    assert not (tmp_path / "p.png").exists()
