"""OllamaAdapter against the loopback Ollama, plus the fake's own model-management routes."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from batuta.backends.types import InferenceRequest, Target
from batuta.errors import FailureKind
from tests.backends._support import (
    SECRET,
    complete,
    complete_error,
    drain,
    health,
    odd_server,
    text_of,
)
from tests.fakes.ollama_server import OllamaFake
from tests.fakes.scripted import DEFAULT_TEXT, tokenize
from tests.fakes.specs import assert_valid

TOKENS = tokenize(DEFAULT_TEXT)


@pytest.fixture(scope="module")
def server():
    with OllamaFake(models=["smollm2:135m"], pullable={"llama3.2": 40_000}) as running:
        yield running


@pytest.fixture
def fake(server):
    server.first_byte_delay = server.chunk_delay = 0.0
    return server.reset()


def target(fake, model="smollm2:135m", **options) -> Target:
    return Target("olla", "ollama", "ollama", fake.url, model, options=options, local=True)


def last_body(fake) -> dict:
    return json.loads(fake.requests[-1].body)


def test_stream_is_ndjson_until_done_with_usage(fake):
    request = InferenceRequest(
        prompt="Hi",
        system="Be brief.",
        max_tokens=50,
        temperature=0.1,
        top_p=0.8,
        seed=3,
        stop=("zzz",),
    )
    chunks, error = drain(target(fake, keep_alive="10m", **{"param.num_ctx": "4096"}), request)
    assert error is None
    assert [c.text for c in chunks[:-1]] == TOKENS
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage.input_tokens == 3 and chunks[-1].usage.output_tokens == len(TOKENS)
    body = last_body(fake)
    assert fake.requests[-1].path == "/api/chat"
    assert body["stream"] is True and body["keep_alive"] == "10m"
    assert body["options"] == {
        "num_predict": 50,
        "temperature": 0.1,
        "top_p": 0.8,
        "seed": 3,
        "stop": ["zzz"],
        "num_ctx": 4096,
    }
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert_valid("ollama", fake.requests[-1])


def test_typed_options_are_sent_as_numbers(fake):
    # What the manifest gives: keep_alive in whole seconds, param.* as JSON values.
    opts = {"keep_alive": 600, "param.num_ctx": 4096, "param.mirostat": 0}
    complete(target(fake, **opts), InferenceRequest(prompt="Hi", max_tokens=4))
    body = last_body(fake)
    assert body["keep_alive"] == 600 and body["options"]["num_ctx"] == 4096
    assert body["options"]["mirostat"] == 0
    assert_valid("ollama", fake.requests[-1])


def test_complete_is_one_object(fake):
    done = complete(target(fake, keep_alive="-1"), InferenceRequest(prompt="Hi", max_tokens=4))
    assert done.text == "".join(TOKENS[:4]) and done.finish_reason == "length"
    assert done.usage.output_tokens == 4
    assert last_body(fake)["stream"] is False and last_body(fake)["keep_alive"] == -1
    assert_valid("ollama", fake.requests[-1])


def test_stop_sequence_is_honoured(fake):
    chunks, _ = drain(target(fake), InferenceRequest(prompt="Hi", stop=("this",)))
    assert text_of(chunks) == "Hello world, " and chunks[-1].finish_reason == "stop"


def test_assistant_prefix_is_a_trailing_assistant_message(fake):
    drain(target(fake), InferenceRequest(prompt="Q", assistant_prefix="Hello"))
    assert last_body(fake)["messages"][-1] == {"role": "assistant", "content": "Hello"}
    assert_valid("ollama", fake.requests[-1])


def test_unknown_model_is_a_client_error_with_ollamas_message(fake):
    error = complete_error(target(fake, model="nope"))
    assert error.kind is FailureKind.CLIENT and error.status == 404
    assert "try pulling it first" in str(error)


def test_server_busy_503_is_overloaded_and_429_keeps_retry_after(fake):
    fake.fail_next(503)
    error = complete_error(target(fake))
    assert error.kind is FailureKind.OVERLOADED and "server busy" in str(error)
    fake.fail_next(429, retry_after="2")
    _, error = drain(target(fake))
    assert error.kind is FailureKind.RATE_LIMIT and error.retry_after == 2.0
    fake.fail_next(500)
    assert complete_error(target(fake)).kind is FailureKind.SERVER


def test_error_line_under_the_200_fails_the_stream(fake):
    fake.error_event_after(
        2, message="an error was encountered while running the model: unexpected EOF"
    )
    chunks, error = drain(target(fake))
    assert text_of(chunks) == "".join(TOKENS[:2])
    assert error.kind is FailureKind.SERVER and "unexpected EOF" in str(error)


def test_busy_error_line_is_overloaded(fake):
    fake.error_event_after(
        0, message="server busy, please try again.  maximum pending requests exceeded"
    )
    _, error = drain(target(fake))
    assert error.kind is FailureKind.OVERLOADED


def test_cut_mid_stream_is_stream_cut_after_partial_text(fake):
    fake.cut_after(4)
    chunks, error = drain(target(fake))
    assert text_of(chunks) == "".join(TOKENS[:4]) and error.kind is FailureKind.STREAM_CUT


def test_malformed_line_and_body(fake):
    fake.malformed_next()
    chunks, error = drain(target(fake))
    assert error.kind is FailureKind.MALFORMED and chunks == []
    fake.malformed_next()
    assert complete_error(target(fake)).kind is FailureKind.MALFORMED


def test_first_byte_timeout(fake):
    fake.first_byte_delay = 1.0
    started = time.monotonic()
    _, error = drain(target(fake), first_byte_timeout=0.2)
    assert error.kind is FailureKind.TIMEOUT and time.monotonic() - started < 0.9


def test_connection_refused(free_port):
    t = Target("olla", "ollama", "ollama", f"http://127.0.0.1:{free_port}", "m", local=True)
    assert drain(t)[1].kind is FailureKind.CONNECT
    assert health(t) is False


def test_health_and_hosted_bearer_auth(fake, monkeypatch):
    assert health(target(fake)) is True and fake.requests[-1].path == "/api/version"
    with OllamaFake(api_key=SECRET) as hosted:
        t = Target(
            "cloud",
            "ollama",
            "ollama",
            hosted.url + "/api",
            "smollm2:135m",
            api_key_env="OLLAMA_API_KEY",
        )
        monkeypatch.setenv("OLLAMA_API_KEY", "wrong-key-value")
        error = complete_error(t)
        assert error.kind is FailureKind.AUTH and "wrong-key-value" not in str(error)
        monkeypatch.setenv("OLLAMA_API_KEY", SECRET)
        assert complete(t).text == DEFAULT_TEXT
        assert hosted.requests[-1].path == "/api/chat"
        assert hosted.requests[-1].headers["authorization"] == f"Bearer {SECRET}"
        assert health(t) is True
        assert hosted.requests[-1].headers["authorization"] == f"Bearer {SECRET}"
        misspelt = Target("cloud", "ollama", "ollama", hosted.url, "m", "OLLAMA_API_KEY",
                          {"auth_header": "x-api-kee"})  # fmt: skip
        sent = len(hosted.requests)
        assert health(misspelt) is False and len(hosted.requests) == sent  # nothing sent


# ---------------------------------------------------------------------------- the fake's routes


def test_fake_serves_model_management_routes(fake):
    with httpx.Client(base_url=fake.url) as http:
        assert http.get("/").text == "Ollama is running"
        assert http.get("/api/version").json()["version"]
        names = [m["name"] for m in http.get("/api/tags").json()["models"]]
        assert names == ["smollm2:135m"]
        assert (
            http.post("/api/show", json={"model": "smollm2:135m"}).json()["details"]["format"]
            == "gguf"
        )
        assert http.post("/api/show", json={"model": "nope"}).status_code == 404
        http.post("/api/chat", json={"model": "smollm2:135m", "messages": [], "stream": False})
        assert [m["name"] for m in http.get("/api/ps").json()["models"]] == ["smollm2:135m"]
        generated = http.post(
            "/api/generate", json={"model": "smollm2:135m", "prompt": "x", "stream": False}
        )
        assert generated.json()["response"] == DEFAULT_TEXT


def test_fake_pull_streams_progress_like_ollama():
    with (
        OllamaFake(models=[], pullable={"llama3.2": 40_000}) as fake,
        httpx.Client(base_url=fake.url) as http,
    ):
        lines = [
            json.loads(x)
            for x in http.post("/api/pull", json={"model": "llama3.2"}).text.splitlines()
        ]
        statuses = [line["status"] for line in lines]
        assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
        assert statuses[-4:-1] == [
            "verifying sha256 digest",
            "writing manifest",
            "removing any unused layers",
        ]
        layer = [
            line for line in lines if line["status"].startswith("pulling ") and "digest" in line
        ]
        assert "completed" not in layer[0] and layer[4]["completed"] == layer[4]["total"]
        assert sum({x["digest"]: x["total"] for x in layer}.values()) == 40_000
        assert "llama3.2:latest" in [m["name"] for m in http.get("/api/tags").json()["models"]]
        assert http.post("/api/pull", json={"model": "llama3.2", "stream": False}).json() == {
            "status": "success"
        }
        missing = http.post("/api/pull", json={"model": "nope"})
        assert missing.status_code == 200
        assert missing.json() == {"error": "pull model manifest: file does not exist"}
        assert http.post("/api/pull", json={"model": "nope", "stream": False}).status_code == 500
        for request in fake.requests:
            if request.path == "/api/pull":
                assert_valid("ollama", request)


def test_odd_ndjson_lines():
    from tests.fakes.base import ndjson

    t = lambda server: Target("o", "ollama", "ollama", server.url, "m", local=True)  # noqa: E731
    with odd_server("/api/chat", [ndjson([1])], stream=True) as server:
        assert drain(t(server))[1].kind is FailureKind.MALFORMED
    line = {"message": {"role": "assistant", "content": "a"}, "done": False}
    with odd_server("/api/chat", [ndjson(line)], stream=True) as server:
        chunks, error = drain(t(server))
    assert text_of(chunks) == "a" and error.kind is FailureKind.STREAM_CUT
