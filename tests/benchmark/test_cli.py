"""``batuta serve bench`` end to end against the timeline server (its own process)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from batuta.cli.main import main
from batuta.cli.serve_bench import _spread_values
from batuta.routing.table import RouteEntry, RoutingTable, TargetEntry, table_path, write_table
from tests.benchmark.test_report import assert_png, shadow_matplotlib
from tests.fakes.timeline_server import MODEL, ROOT, stats, timeline_server


@pytest.fixture(scope="module")
def server():
    with timeline_server("--ttft-ms", "5", "--itl-ms", "2", "--tokens", "6") as url:
        yield url


@pytest.fixture
def endpoint(server):
    return server.removeprefix("http://")


def _prompts(tmp_path, lines):
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD = [
    '{"prompt": "Say hi"}',
    '{"prompt": "Count", "max_tokens": 3}',
    '{"messages": [{"role": "user", "content": "Hello"}], "system": "Be brief."}',
]


def test_a_benchmark_with_two_concurrencies(server, endpoint, tmp_path, capsys):
    out = tmp_path / "result.json"
    before = stats(server)["chat"]
    argv = ["serve", "bench", "--endpoint", endpoint, "--prompts", str(_prompts(tmp_path, GOOD)),
            "--num-prompts", "6", "--max-tokens", "4", "--concurrency", "1", "2",
            "--goodput", "ttft:500", "tpot:50", "--percentiles", "50,99.9", "--label", "smoke",
            "--save-result", str(out), "--save-detailed", "--seed", "1", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert stats(server)["chat"] - before == 12
    docs = json.loads(out.read_text())
    assert [d["max_concurrency"] for d in docs] == [1, 2]
    for doc in docs:
        assert (doc["label"], doc["backend"], doc["model_id"]) == ("smoke", "llamacpp", MODEL)
        assert (doc["completed"], doc["failed"], doc["num_prompts"]) == (6, 0, 6)
        assert doc["total_output_tokens"] == 4 + 3 + 4 + 4 + 3 + 4  # a line's max_tokens wins
        assert doc["request_goodput"] == pytest.approx(doc["request_throughput"])
        assert {"p50_ttft_ms", "p99.9_itl_ms", "p99.9_e2el_ms", "std_tpot_ms"} <= set(doc)
        assert len(doc["itls"]) == len(doc["ttfts"]) == len(doc["errors"]) == 6
    text = capsys.readouterr().out
    assert "concurrency 1" in text and "concurrency 2" in text and "P99.9 TTFT (ms)" in text


def test_json_to_stdout_and_the_progress_bar(endpoint, capsys):
    argv = ["serve", "bench", "--endpoint", endpoint, "--dataset", "random", "--input-len", "5",
            "--num-prompts", "3", "--max-tokens", "2", "--json"]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["completed"] == 3 and "itls" not in doc  # per-request arrays only on request
    assert "run 1/1" in captured.err


def test_sharegpt_file_after_the_dataset_name(endpoint, tmp_path, capsys):
    data = [{"conversations": [{"from": "human", "value": f"Q{i}"}, {"from": "gpt", "value": "A"}]}
            for i in range(4)]  # fmt: skip
    path = tmp_path / "sg.json"
    path.write_text(json.dumps(data))
    argv = ["serve", "bench", "--endpoint", endpoint, "--dataset", "sharegpt", str(path),
            "--num-prompts", "5", "--max-tokens", "2", "--json", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["completed"] == 5


def test_a_time_boxed_run(endpoint, capsys):
    argv = ["serve", "bench", "--endpoint", endpoint, "--dataset", "random", "--input-len", "3",
            "--request-rate", "50", "--burstiness", "inf", "--duration", "0.21", "--max-tokens",
            "1", "--json", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["completed"] == 10  # due at 20, 40, ... 200 ms


def test_a_bad_prompts_file_sends_nothing(server, endpoint, tmp_path, capsys):
    path = _prompts(tmp_path, [GOOD[0], '{"prompt": 7}', '{"max_tokens": 3}', "{oops"])
    before = stats(server)["total"]
    argv = ["serve", "bench", "--endpoint", endpoint, "--prompts", str(path), "--no-progress"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"{path}:2:2: prompt: must be a non-empty string" in err
    assert f"{path}:3:1: prompt: missing" in err
    assert f"{path}:4:2: invalid JSON" in err
    assert "Traceback" not in err
    assert stats(server)["total"] == before


def test_a_sweep_with_a_plot(server, endpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mplconfig"))  # read if not yet imported
    path = tmp_path / "sweep.png"
    argv = ["serve", "bench", "--endpoint", endpoint, "--dataset", "random", "--input-len", "3",
            "--num-prompts", "6", "--max-tokens", "5", "--concurrency", "1", "2", "4",
            "--goodput", "ttft:500", "--label", "plotted", "--plot", str(path), "--json",
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    docs = json.loads(capsys.readouterr().out)
    assert [d["completed"] for d in docs] == [6, 6, 6]
    assert_png(path)
    assert [p.name for p in tmp_path.iterdir() if p.suffix] == ["sweep.png"]


SHADOWED_CLI = """
import sys
sys.path.insert(0, sys.argv.pop(1))  # a matplotlib that is not there
from batuta.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_plot_without_the_extra_fails_before_sending(server, endpoint, tmp_path):
    shadow = shadow_matplotlib(tmp_path / "shadow")
    before = stats(server)["total"]
    argv = ["serve", "bench", "--endpoint", endpoint, "--num-prompts", "2",
            "--plot", str(tmp_path / "p.png")]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", SHADOWED_CLI, str(shadow), *argv],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "--plot needs matplotlib: pip install 'batuta[plot]'" in done.stderr
    assert "Traceback" not in done.stderr
    assert stats(server)["total"] == before
    assert not (tmp_path / "p.png").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--concurrency", "2", "--max-concurrency", "3"], "not both"),
        (["--concurrency", "0"], "not a positive integer"),
        (["--prompts", "PROMPTS", "--dataset", "random"], "--prompts or --dataset, not both"),
        (["--dataset", "sharegpt"], "needs the ShareGPT JSON file"),
        (["--dataset", "random", "--dataset-path", "PROMPTS"], "takes no file"),
        (["--input-len", "0"], "--input-len must be at least 1"),
        (["--duration", "5"], "needs --request-rate or a concurrency cap"),
        (["--percentiles", "50,abc"], "is not a number"),
        (["--goodput", "itl:5"], "METRIC:MS"),
        (["--burstiness", "0", "--request-rate", "3"], "burstiness"),
        (["--route", "x"], "give --endpoint"),
    ],
)
def test_bad_options_send_nothing(server, endpoint, tmp_path, capsys, extra, message):
    prompts = str(_prompts(tmp_path, GOOD))
    extra = [prompts if a == "PROMPTS" else a for a in extra]
    before = stats(server)["total"]
    assert main(["serve", "bench", "--endpoint", endpoint, *extra]) == 2  # usage errors
    assert message in capsys.readouterr().err
    assert stats(server)["total"] == before


def test_neither_endpoint_nor_route(capsys):
    assert main(["serve", "bench", "--num-prompts", "1"]) == 2
    assert "give --endpoint" in capsys.readouterr().err


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_request_failing_is_an_error(capsys):
    argv = ["serve", "bench", "--endpoint", f"127.0.0.1:{_free_port()}", "--model", "m",
            "--num-prompts", "2", "--input-len", "3", "--no-progress"]  # fmt: skip
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "every request failed" in captured.err and "cannot reach" in captured.err
    assert "2 (connect 2)" in captured.out


def _routes(tmp_path, url):
    entry = TargetEntry(name="local", backend="llamacpp", protocol="openai", base_url=url,
                        model=MODEL, local=True)  # fmt: skip
    route = RouteEntry("fast", "interactive", "sovereign", "balanced", (entry,))
    write_table(table_path(tmp_path / ".batuta"), RoutingTable("batuta.yaml", {"fast": route}))
    return tmp_path / "batuta.yaml"


def test_a_route_benchmark(server, tmp_path, capsys):
    manifest = _routes(tmp_path, server)
    before = stats(server)["chat"]
    argv = ["serve", "bench", "-f", str(manifest), "--route", "fast", "--num-prompts", "4",
            "--input-len", "3", "--max-concurrency", "2", "--max-tokens", "2", "--json",
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["backend"], doc["model_id"], doc["completed"]) == ("route:fast", MODEL, 4)
    assert stats(server)["chat"] - before == 4


def test_an_endpoint_can_be_a_target_of_the_routing_table(server, tmp_path, capsys):
    manifest = _routes(tmp_path, server)
    argv = ["serve", "bench", "-f", str(manifest), "--endpoint", "local", "--num-prompts", "2",
            "--input-len", "3", "--max-tokens", "2", "--json", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["completed"] == 2


def test_unknown_route_and_missing_table(server, tmp_path, capsys):
    manifest = _routes(tmp_path, server)
    argv = ["serve", "bench", "-f", str(manifest), "--route", "nope", "--no-progress"]
    assert main(argv) == 1
    assert "no route 'nope'" in capsys.readouterr().err
    argv = ["serve", "bench", "-f", str(tmp_path / "other" / "batuta.yaml"), "--route", "fast"]
    assert main(argv) == 1
    assert "run `batuta apply` first" in capsys.readouterr().err


def test_the_manifest_is_file_and_manifest_is_a_deprecated_alias(
    server, tmp_path, capsys, monkeypatch
):
    manifest = _routes(tmp_path, server)
    argv = ["serve", "bench", "--route", "fast", "--num-prompts", "1", "--input-len", "3",
            "--max-tokens", "2", "--json", "--no-progress"]  # fmt: skip
    assert main([*argv, "--file", str(manifest)]) == 0
    assert json.loads(capsys.readouterr().out)["completed"] == 1
    assert main([*argv, "--manifest", str(manifest)]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["completed"] == 1
    assert "--manifest is deprecated: use -f/--file" in err
    monkeypatch.setenv("BATUTA_FILE", str(manifest))  # the default, as for every command
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["completed"] == 1
    assert main(["serve", "bench", "--help"]) == 0
    text = capsys.readouterr().out
    assert "-f, --file" in text and "--manifest" not in text


def test_the_state_dir_variable_is_honoured_as_by_serve_query(
    server, tmp_path, capsys, monkeypatch
):
    _routes(tmp_path, server)
    monkeypatch.setenv("BATUTA_STATE_DIR", str(tmp_path / ".batuta"))
    argv = ["serve", "bench", "-f", str(tmp_path / "elsewhere" / "batuta.yaml"), "--route",
            "fast", "--num-prompts", "1", "--input-len", "3", "--max-tokens", "2", "--json",
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["completed"] == 1


def test_help_lists_the_options(capsys):
    assert main(["serve", "bench", "--help"]) == 0
    text = capsys.readouterr().out
    for option in ("--endpoint", "--route", "--concurrency", "--goodput", "--save-result"):
        assert option in text


@pytest.mark.parametrize(
    ("given", "spread"),
    [
        (["--concurrency", "1", "2", "4"],
         ["--concurrency", "1", "--concurrency", "2", "--concurrency", "4"]),
        (["--goodput", "ttft:5", "tpot:1", "--seed", "3"],
         ["--goodput", "ttft:5", "--goodput", "tpot:1", "--seed", "3"]),
        (["--concurrency=1", "--num-prompts", "2"], ["--concurrency=1", "--num-prompts", "2"]),
        (["--dataset", "sharegpt", "f.json", "--seed", "1"],
         ["--dataset", "sharegpt", "--dataset-path", "f.json", "--seed", "1"]),
        (["--dataset", "random", "--seed", "-1"], ["--dataset", "random", "--seed", "-1"]),
        (["--dataset"], ["--dataset"]),
        (["--concurrency", "1", "--", "2"], ["--concurrency", "1", "--", "2"]),
        (["stray"], ["stray"]),
    ],
)  # fmt: skip
def test_space_separated_values_are_spread(given, spread):
    assert _spread_values(given) == spread
