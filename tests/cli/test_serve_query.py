"""``batuta serve query`` end to end: the real CLI entry point against loopback fakes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from batuta.cli.main import main
from batuta.routing.table import RouteEntry, RoutingTable, TargetEntry, write_table
from tests.fakes.openai_server import OpenAIFake
from tests.fakes.scripted import DEFAULT_TEXT, tokenize

ALPHA = "Alpha speaks first and then stops. " + DEFAULT_TEXT


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[OpenAIFake, OpenAIFake]]:
    a, b = OpenAIFake().start(), OpenAIFake().start()
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture
def fakes(servers) -> tuple[OpenAIFake, OpenAIFake]:
    for fake, text in zip(servers, (ALPHA, DEFAULT_TEXT), strict=True):
        fake.requests.clear()
        fake.script.clear()
        fake.text, fake.api_key = text, None
    return servers


@pytest.fixture
def state(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("BATUTA_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("BATUTA_SERVE_PORT", raising=False)
    return tmp_path / "state"


def entry(name: str, fake: OpenAIFake, **kw) -> TargetEntry:
    kw.setdefault("local", True)
    return TargetEntry(name, kw.pop("backend", "llamacpp"), "openai", fake.url, "fake-model", **kw)


def write_routes(state: Path, **routes: tuple[TargetEntry, ...] | RouteEntry) -> None:
    table = {}
    for name, value in routes.items():
        if isinstance(value, RouteEntry):
            table[name] = value
        else:
            table[name] = RouteEntry(
                name, "interactive", "standard", "balanced", value, timeout=10.0, retries=0
            )
    write_table(state / "routes.json", RoutingTable("batuta.yaml", table))


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["serve", "query", *args])
    out, err = capsys.readouterr()
    return code, out, err


def generations(fake: OpenAIFake) -> list:
    return [r for r in fake.requests if r.path.endswith("/chat/completions")]


def test_default_route(fakes, state, capsys) -> None:
    a, b = fakes
    write_routes(state, default=(entry("local-a", a), entry("local-b", b)))
    code, out, err = cli(capsys, "What is the capital of France?")
    assert code == 0
    assert out == ALPHA + "\n"
    assert "── local-a:" in err and "tokens" in err and "1 attempt, 0 fallbacks" in err
    assert generations(a)[0].json()["stream"] is False  # not a terminal: one blocking call


def test_named_route_and_unknown_route(fakes, state, capsys) -> None:
    a, b = fakes
    write_routes(state, default=(entry("local-a", a),), fast=(entry("local-b", b),))
    code, out, _ = cli(capsys, "Hi", "--route", "fast")
    assert code == 0 and out.strip() == DEFAULT_TEXT
    code, _, err = cli(capsys, "Hi", "--route", "nope")
    assert code == 1 and "no route 'nope'" in err and "default, fast" in err
    assert "Traceback" not in err


def test_missing_routing_table(state, capsys) -> None:
    code, out, err = cli(capsys, "Hi")
    assert code == 1 and out == ""
    assert "no routing table" in err and "batuta apply" in err and "--endpoint" in err


def test_state_dir_next_to_the_manifest(fakes, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("BATUTA_STATE_DIR", raising=False)
    a, _ = fakes
    project = tmp_path / "proj"
    write_routes(project / ".batuta", default=(entry("local-a", a),))
    code, out, _ = cli(capsys, "Hi", "-f", str(project / "batuta.yaml"))
    assert code == 0 and out.strip() == ALPHA
    monkeypatch.setenv("BATUTA_FILE", str(project / "batuta.yaml"))
    assert cli(capsys, "Hi")[0] == 0


def test_streaming_failover_is_seamless_and_announced(fakes, state, capsys) -> None:
    a, b = fakes
    write_routes(state, default=(entry("local-a", a), entry("local-b", b)))
    a.cut_after(3)
    code, out, err = cli(capsys, "Hi", "--stream")
    shown = "".join(tokenize(ALPHA)[:3])
    assert code == 0 and out == shown + DEFAULT_TEXT + "\n"
    assert "↪ local-a failed after 3 tokens (stream_cut); continued on local-b" in err
    assert "── local-b:" in err and "1 fallback" in err
    assert generations(b)[0].json()["messages"][-1] == {"role": "assistant", "content": shown}


def test_json_output(fakes, state, capsys) -> None:
    a, b = fakes
    write_routes(state, default=(entry("local-a", a), entry("local-b", b)))
    a.fail_next(500)
    code, out, err = cli(
        capsys,
        "Hi",
        "--json",
        "--max-tokens",
        "4",
        "--temperature",
        "0",
        "--top-p",
        "0.5",
        "--stop",
        "zzz",
        "--seed",
        "7",
        "--system",
        "Be brief",
    )
    assert code == 0 and err == ""
    data = json.loads(out)
    for key in (
        "text",
        "tokens_generated",
        "latency_ms",
        "tokens_per_second",
        "target",
        "ttft_ms",
        "attempts",
        "fallbacks",
        "failed_over_from",
        "events",
    ):
        assert key in data
    assert data["target"] == "local-b" and data["fallbacks"] == 1 and data["tokens_generated"] == 4
    assert data["events"][0].startswith("✗ local-a:")
    body = generations(b)[0].json()
    assert body["max_tokens"] == 4 and body["temperature"] == 0 and body["top_p"] == 0.5
    assert body["stop"] == ["zzz"] and body["seed"] == 7
    assert body["messages"][0] == {"role": "system", "content": "Be brief"}


def test_all_targets_fail(fakes, state, capsys, free_port) -> None:
    a, _ = fakes
    dead = TargetEntry("dead", "llamacpp", "openai", f"http://127.0.0.1:{free_port}", "m", True)
    write_routes(state, default=(entry("local-a", a), dead))
    a.fail_next(500)
    code, out, err = cli(capsys, "Hi")
    assert code == 1 and out == ""
    assert "every target failed" in err and "local-a: server: HTTP 500" in err
    assert "dead: connect:" in err and "Traceback" not in err
    a.fail_next(500)
    code, out, _ = cli(capsys, "Hi", "--json")
    data = json.loads(out)
    assert code == 1 and [x["target"] for x in data["attempts"]] == ["local-a", "dead"]
    assert data["attempts"][1]["kind"] == "connect"


def test_partial_answer_then_total_failure_ends_the_line(fakes, state, capsys) -> None:
    a, _ = fakes
    write_routes(state, default=(entry("local-a", a),))
    a.cut_after(2)
    code, out, err = cli(capsys, "Hi", "--stream")
    assert code == 1 and out == "".join(tokenize(ALPHA)[:2]) + "\n"
    assert "stream_cut" in err


def test_sovereign_route_with_a_remote_target_is_refused(fakes, state, capsys) -> None:
    a, b = fakes
    remote = TargetEntry("cloud", "together", "openai", a.url, "m", False)
    route = RouteEntry(
        "default", "interactive", "sovereign", "balanced", (entry("local-b", b), remote)
    )
    write_routes(state, default=route)
    code, _, err = cli(capsys, "Hi")
    assert code == 1 and "'cloud'" in err and "sovereign" in err
    assert generations(a) == [] and generations(b) == []


def test_endpoint_host_port_discovers_the_model(fakes, state, capsys) -> None:
    a, _ = fakes
    code, out, err = cli(capsys, "Hi", "--endpoint", f"127.0.0.1:{a.port}")
    assert code == 0 and out.strip() == ALPHA and f"── 127.0.0.1:{a.port}:" in err
    assert generations(a)[0].json()["model"] == "fake-model"


def test_endpoint_url_and_explicit_model(fakes, state, capsys) -> None:
    a, _ = fakes
    code, out, _ = cli(capsys, "Hi", "--endpoint", f"{a.url}/v1", "--model", "mine")
    assert code == 0 and out.strip() == ALPHA
    assert generations(a)[0].json()["model"] == "mine"
    assert not any(r.path.endswith("/models") for r in a.requests)


def test_endpoint_names_a_table_target(fakes, state, capsys) -> None:
    a, b = fakes
    write_routes(state, default=(entry("local-a", a), entry("local-b", b)))
    code, out, _ = cli(capsys, "Hi", "--endpoint", "local-b")
    assert code == 0 and out.strip() == DEFAULT_TEXT and generations(a) == []


def test_endpoint_ignores_a_broken_table(fakes, state, capsys) -> None:
    a, _ = fakes
    state.mkdir(parents=True)
    (state / "routes.json").write_text("{broken")
    assert cli(capsys, "Hi", "--endpoint", f"127.0.0.1:{a.port}")[0] == 0
    code, _, err = cli(capsys, "Hi")
    assert code == 1 and "unreadable" in err


def test_provider_without_its_key_names_the_variable(state, capsys, monkeypatch) -> None:
    monkeypatch.delenv("TOGETHER_API_KEY", raising=False)
    code, out, err = cli(capsys, "Hi", "--endpoint", "together", "--model", "mistral-7b")
    assert code == 1 and out == "" and "TOGETHER_API_KEY" in err
    code, _, err = cli(capsys, "Hi", "--endpoint", "together")
    assert code == 1 and "--model" in err


def test_unknown_endpoint_suggests(state, capsys) -> None:
    code, _, err = cli(capsys, "Hi", "--endpoint", "togther", "--model", "m")
    assert code == 1 and "did you mean 'together'" in err


def test_backend_on_serve_port(fakes, state, capsys, monkeypatch) -> None:
    a, _ = fakes
    monkeypatch.setenv("BATUTA_SERVE_PORT", str(a.port))
    code, out, err = cli(capsys, "Hi", "--backend", "llamacpp")
    assert code == 0 and out.strip() == ALPHA and f"llamacpp@127.0.0.1:{a.port}" in err
    monkeypatch.setenv("BATUTA_SERVE_PORT", "eighty")
    code, _, err = cli(capsys, "Hi", "--backend", "llamacpp")
    assert code == 2 and "BATUTA_SERVE_PORT" in err


def test_prompt_from_stdin(fakes, state, capsys, monkeypatch) -> None:
    a, _ = fakes
    monkeypatch.setattr(sys, "stdin", io.StringIO("from stdin\n"))
    code, _, _ = cli(capsys, "-", "--endpoint", f"127.0.0.1:{a.port}", "--model", "m")
    assert code == 0
    assert generations(a)[0].json()["messages"][-1]["content"] == "from stdin\n"


def test_usage_errors(state, capsys) -> None:
    code, _, err = cli(capsys, "  ")
    assert code == 2 and "prompt is empty" in err
    code, _, err = cli(capsys, "Hi", "--route", "x", "--endpoint", "y")
    assert code == 2 and "not both" in err
    code, _, err = cli(capsys, "Hi", "--max-tokens", "0")
    assert code == 2


def test_key_never_shown_or_stored(fakes, state, capsys, monkeypatch) -> None:
    secret = "sk-live-CLI-SECRET-9931"
    monkeypatch.setenv("GROQ_API_KEY", secret)
    a, b = fakes
    a.api_key = secret
    paid = TargetEntry(
        "groq",
        "groq",
        "openai",
        a.url + "/v1",
        "m",
        False,
        api_key_env="GROQ_API_KEY",
        pricing=(1.0, 1.0),
    )
    write_routes(
        state,
        default=RouteEntry(
            "default",
            "interactive",
            "standard",
            "balanced",
            (paid, entry("local-b", b)),
            retries=0,
            daily_usd=5.0,
        ),
    )
    outputs = [cli(capsys, "Hi", "--json")]
    assert json.loads(outputs[0][1])["target"] == "groq"  # paid and recorded
    a.api_key = "another-key"  # now 401s, whose message quotes the key it was sent
    outputs += [cli(capsys, "Hi", "--stream"), cli(capsys, "Hi", "--json")]
    b.fail_next(500)
    outputs.append(cli(capsys, "Hi"))
    assert [o[0] for o in outputs] == [0, 0, 0, 1]
    assert "groq: auth: HTTP 401" in outputs[-1][2]
    assert all(r.headers.get("authorization") == f"Bearer {secret}" for r in generations(a))
    for _, out, err in outputs:
        assert secret not in out and secret not in err
    files = [p for p in state.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"routes.json", "breakers.json", "spend.json"}
    for path in files:
        assert secret not in path.read_text()


def test_real_process_streams_to_its_stdout(fakes, state) -> None:
    a, _ = fakes
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from batuta.cli.main import run; run()",
            "serve",
            "query",
            "Hi",
            "--endpoint",
            f"127.0.0.1:{a.port}",
            "--model",
            "m",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ALPHA and "tokens/s" in proc.stderr


def test_dead_bare_endpoint(state, capsys, free_port) -> None:
    code, out, err = cli(capsys, "Hi", "--endpoint", f"127.0.0.1:{free_port}", "--timeout", "5")
    assert code == 1 and out == ""
    assert f"127.0.0.1:{free_port}: connect:" in err and "Traceback" not in err
    # Two attempts (one retry), each failure printed once as it happens, then what failed:
    # an endpoint, not a route.
    lines = err.strip().splitlines()
    assert [line[:2] for line in lines] == ["↻ ", "✗ ", "Er"], err
    assert lines[-1] == f"Error: endpoint '127.0.0.1:{free_port}' failed (2 attempts)"
    assert err.count("All connection attempts failed") == 2 and "route" not in err


def test_partial_answer_then_every_target_failing_is_told_once(fakes, state, capsys) -> None:
    a, _ = fakes
    write_routes(state, default=(entry("local-a", a),))
    a.cut_after(2)
    code, _, err = cli(capsys, "Hi", "--stream")
    assert code == 1 and err.count("stream_cut") == 1, err
    assert "✗ local-a: stream_cut:" in err and "(after 2 tokens)" in err
    assert err.strip().splitlines()[-1] == "Error: route 'default': every target failed"


def test_a_blocking_answer_reports_no_first_token_time(fakes, state, capsys) -> None:
    a, _ = fakes
    write_routes(state, default=(entry("local-a", a),))
    code, _, err = cli(capsys, "Hi", "--no-stream")
    assert code == 0 and "── local-a:" in err and "first token" not in err
    code, out, _ = cli(capsys, "Hi", "--no-stream", "--json")
    assert code == 0 and json.loads(out)["ttft_ms"] is None
    code, _, err = cli(capsys, "Hi", "--stream")
    assert code == 0 and "first token" in err  # measured when the first text arrived
    code, _, err = cli(capsys, "Hi", "--endpoint", f"127.0.0.1:{a.port}", "--no-stream")
    assert code == 0 and "first token" not in err
