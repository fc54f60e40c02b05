"""The Ollama model client against the loopback Ollama fake, checked against the spec."""

from __future__ import annotations

import pytest

from batuta.errors import ModelSourceError
from batuta.runtime.ollama import find_model, list_models, normalize, pull
from tests.fakes.base import FakeServer, ndjson
from tests.fakes.ollama_server import OllamaFake
from tests.fakes.specs import assert_valid, load_spec


@pytest.fixture
def ollama():
    fake = OllamaFake(models=["smollm2:135m"], pullable={"codellama:13b": 7_000_000}).start()
    yield fake
    fake.stop()


def test_normalize() -> None:
    assert normalize("llama3.2") == "llama3.2:latest"
    assert normalize("ollama://llama3.2:1b") == "llama3.2:1b"
    assert (
        normalize("registry.example.com:5000/team/model")
        == "registry.example.com:5000/team/model:latest"
    )


def test_list_and_find(ollama) -> None:
    assert [m["name"] for m in list_models(ollama.url)] == ["smollm2:135m"]
    assert find_model(ollama.url, "smollm2:135m")["details"]["quantization_level"] == "Q4_1"
    assert find_model(ollama.url, "codellama:13b") is None


def test_pull_streams_progress_and_matches_the_spec(ollama) -> None:
    seen: list[tuple[str, int, int | None]] = []
    pull(ollama.url, "codellama:13b", lambda *a: seen.append(a))
    assert seen[0] == ("pulling manifest", 0, None) and seen[-1][0] == "success"
    layer = [s for s in seen if s[2]]
    assert layer and layer[-1][1] == layer[-1][2]
    request = next(r for r in ollama.requests if r.path == "/api/pull")
    assert request.method == "POST" and request.headers["content-type"] == "application/json"
    body = request.json()
    schema = load_spec("ollama")["components"]["schemas"]["PullRequest"]
    assert set(schema["required"]) <= set(body) and set(body) <= set(schema["properties"])
    assert body == {"model": "codellama:13b"}
    assert_valid("ollama", request)
    assert find_model(ollama.url, "codellama:13b") is not None


def test_pull_unknown_model_reports_ollamas_error(ollama) -> None:
    with pytest.raises(
        ModelSourceError,
        match="ollama pull nosuch:latest: pull model manifest: file does not exist",
    ):
        pull(ollama.url, "nosuch:latest")


def test_pull_http_error_and_bad_stream() -> None:
    fake = FakeServer()
    fake.route("POST", "/api/pull", lambda q, r: r.send_json(400, {"error": "invalid model name"}))
    fake.route("GET", "/api/tags", lambda q, r: r.send_bytes(500, b"oops", "text/plain"))
    with fake:
        with pytest.raises(ModelSourceError, match="HTTP 400: invalid model name"):
            pull(fake.url, "x")
        with pytest.raises(ModelSourceError, match="HTTP 500: oops"):
            list_models(fake.url)
    broken = FakeServer()
    broken.route(
        "POST",
        "/api/pull",
        lambda q, r: r.stream(
            200, [ndjson({"status": "pulling manifest"}), b"{not json\n"], "application/x-ndjson"
        ),
    )
    with broken, pytest.raises(ModelSourceError, match="malformed line"):
        pull(broken.url, "x")
    cut = FakeServer()
    cut.route(
        "POST",
        "/api/pull",
        lambda q, r: r.stream(
            200, [ndjson({"status": "pulling manifest"}), None], "application/x-ndjson"
        ),
    )
    with cut, pytest.raises(ModelSourceError, match="stream broke after 'pulling manifest'"):
        pull(cut.url, "x")
    short = FakeServer()
    short.route(
        "POST",
        "/api/pull",
        lambda q, r: r.stream(
            200, [ndjson({"status": "writing manifest"}), b"\n"], "application/x-ndjson"
        ),
    )
    with short, pytest.raises(ModelSourceError, match="not success"):
        pull(short.url, "x")


def test_unreachable_server(free_port) -> None:
    with pytest.raises(
        ModelSourceError, match=f"cannot reach Ollama at http://127.0.0.1:{free_port}"
    ):
        pull(f"http://127.0.0.1:{free_port}", "x")
    with pytest.raises(ModelSourceError, match="cannot reach Ollama"):
        list_models(f"http://127.0.0.1:{free_port}")
