"""RealizarAdapter against the loopback realizar server (native) and its OpenAI routes."""

from __future__ import annotations

import json
import time

import pytest

from batuta.backends.types import InferenceRequest, Target
from batuta.errors import FailureKind
from tests.backends._support import complete, complete_error, drain, health, odd_server, text_of
from tests.fakes.openai_server import OpenAIFake
from tests.fakes.realizar_server import RealizarFake
from tests.fakes.scripted import DEFAULT_TEXT, tokenize

TOKENS = tokenize(DEFAULT_TEXT)


@pytest.fixture(scope="module")
def server():
    with RealizarFake(model_ids=("default", "phi-2")) as running:
        yield running


@pytest.fixture
def fake(server):
    server.first_byte_delay = server.chunk_delay = 0.0
    server.text = DEFAULT_TEXT
    return server.reset()


def target(fake, **options) -> Target:
    return Target("rz", "realizar", "realizar", fake.url, "phi-2", options=options, local=True)


def last_body(fake) -> dict:
    return json.loads(fake.requests[-1].body)


def test_generate_strips_the_echoed_prompt_and_counts_tokens(fake):
    done = complete(target(fake), InferenceRequest(prompt="Why is the sky blue?", max_tokens=100))
    assert done.text == DEFAULT_TEXT and done.finish_reason == "stop"
    assert done.usage.input_tokens == 5 and done.usage.output_tokens == len(TOKENS)
    assert last_body(fake) == {"prompt": "Why is the sky blue?", "max_tokens": 100}


def test_generate_hits_max_tokens(fake):
    done = complete(target(fake), InferenceRequest(prompt="Hi", max_tokens=4))
    assert done.text == "".join(TOKENS[:4]) and done.finish_reason == "length"


def test_sampling_strategy_follows_the_request(fake):
    complete(target(fake), InferenceRequest(prompt="Hi", temperature=0.0, seed=9))
    assert last_body(fake) == {"prompt": "Hi", "max_tokens": 1024, "strategy": "greedy", "seed": 9}
    complete(target(fake), InferenceRequest(prompt="Hi", temperature=0.7, top_p=0.9))
    assert last_body(fake) == {
        "prompt": "Hi",
        "max_tokens": 1024,
        "temperature": 0.7,
        "strategy": "top_p",
        "top_p": 0.9,
    }
    complete(target(fake), InferenceRequest(prompt="Hi", temperature=0.7))
    assert last_body(fake)["strategy"] == "top_k"
    complete(target(fake, strategy="top_k", model_id="phi-2", **{"param.top_k": "20"}))
    assert last_body(fake) == {
        "prompt": "Hi",
        "max_tokens": 1024,
        "strategy": "top_k",
        "model_id": "phi-2",
        "top_k": 20,
    }


def test_max_tokens_is_always_sent_and_its_limit_reads_as_length(fake):
    # Left out, realizar stops after 50 tokens and the answer would look complete.
    fake.text = " ".join(f"w{i}" for i in range(60))
    done = complete(target(fake), InferenceRequest(prompt="Hi"))
    assert last_body(fake)["max_tokens"] == 1024
    assert done.text == fake.text and done.finish_reason == "stop"
    fake.text = " ".join(f"w{i}" for i in range(1030))
    done = complete(target(fake), InferenceRequest(prompt="Hi"))
    assert done.usage.output_tokens == 1024 and done.finish_reason == "length"
    chunks, error = drain(target(fake), InferenceRequest(prompt="Hi"))
    assert error is None and len(chunks) == 1025 and chunks[-1].finish_reason == "length"


def test_stream_tokens_until_done(fake):
    chunks, error = drain(target(fake), InferenceRequest(prompt="Hi", max_tokens=50))
    assert error is None and [c.text for c in chunks[:-1]] == TOKENS
    assert chunks[-1].finish_reason == "stop" and chunks[-1].usage.output_tokens == len(TOKENS)
    assert fake.requests[-1].path == "/stream/generate"


def test_stop_sequences_are_applied_client_side(fake):
    request = InferenceRequest(prompt="Hi", stop=("is a",))
    chunks, error = drain(target(fake), request)
    assert error is None and text_of(chunks) == "Hello world, this "
    assert chunks[-1].finish_reason == "stop"
    assert complete(target(fake), request).text == "Hello world, this "
    assert "stop" not in last_body(fake)  # realizar has no such field


def test_assistant_prefix_continues_the_prompt(fake):
    complete(target(fake), InferenceRequest(prompt="Say hi.", assistant_prefix=" Hi"))
    assert last_body(fake)["prompt"] == "Say hi. Hi"


def test_chat_template_option_formats_the_prompt(fake, smollm2_path):
    from batuta.runtime.gguf import read_gguf

    template = read_gguf(smollm2_path).chat_template
    t = target(fake, chat_template=template, bos_token="<|im_start|>", eos_token="<|im_end|>")
    request = InferenceRequest(prompt="Hi", system="Be brief.", assistant_prefix="Hel")
    expected = (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHel"
    )
    done = complete(t, request)
    assert last_body(fake)["prompt"] == expected
    assert done.text == DEFAULT_TEXT  # the echoed (templated) prompt is still removed
    chunks, error = drain(t, request)
    assert error is None and text_of(chunks) == DEFAULT_TEXT
    assert fake.requests[-1].path == "/stream/generate" and last_body(fake)["prompt"] == expected
    # A template the adapter cannot render: the chat is flattened, the request still goes.
    complete(target(fake, chat_template="{% if %}"), request)
    assert last_body(fake)["prompt"] == "Be brief.\n\nHiHel"


def test_errors_use_realizars_error_body(fake):
    error = complete_error(target(fake, model_id="missing"))
    assert error.kind is FailureKind.CLIENT and "Model 'missing' not found" in str(error)
    error = complete_error(target(fake, strategy="beam"))
    assert error.kind is FailureKind.CLIENT and "Invalid strategy: beam" in str(error)
    fake.fail_next(500, message="CUDA error")
    assert complete_error(target(fake)).kind is FailureKind.SERVER
    fake.fail_next(503, retry_after="4")
    error = drain(target(fake))[1]
    assert error.kind is FailureKind.OVERLOADED and error.retry_after == 4.0


def test_in_stream_error_cut_and_malformed(fake):
    fake.error_event_after(2)
    chunks, error = drain(target(fake))
    assert text_of(chunks) == "".join(TOKENS[:2]) and "serialization failed" in str(error)
    fake.cut_after(3)
    chunks, error = drain(target(fake))
    assert text_of(chunks) == "".join(TOKENS[:3]) and error.kind is FailureKind.STREAM_CUT
    fake.malformed_next()
    assert drain(target(fake))[1].kind is FailureKind.MALFORMED
    fake.malformed_next()
    assert complete_error(target(fake)).kind is FailureKind.MALFORMED


def test_first_byte_timeout_and_connection_refused(fake, free_port):
    fake.first_byte_delay = 1.0
    started = time.monotonic()
    assert drain(target(fake), first_byte_timeout=0.2)[1].kind is FailureKind.TIMEOUT
    assert time.monotonic() - started < 0.9
    dead = Target("rz", "realizar", "realizar", f"http://127.0.0.1:{free_port}", "m")
    assert complete_error(dead).kind is FailureKind.CONNECT
    assert health(dead) is False


def test_health(fake):
    assert health(target(fake)) is True and fake.requests[-1].path == "/health"


@pytest.mark.parametrize("value", [True, "true"])  # typed, and a table from before that
def test_openai_api_option_delegates_to_the_v1_routes(value):
    with OpenAIFake(health_status=200) as fake:
        t = target(fake, openai_api=value)
        assert complete(t).text == DEFAULT_TEXT
        chunks, error = drain(t)
        assert error is None and text_of(chunks) == DEFAULT_TEXT
        assert {r.path for r in fake.requests} == {"/v1/chat/completions"}


# ---------------------------------------------------------------------------- odd answers


def plain(server) -> Target:
    return Target("rz", "realizar", "realizar", server.url, "m", local=True)


def test_odd_blocking_answers():
    with odd_server("/generate", {"error": "model is reloading"}) as server:
        assert "model is reloading" in str(complete_error(plain(server)))
    with odd_server("/generate", [1, 2]) as server:
        assert complete_error(plain(server)).kind is FailureKind.MALFORMED
    with odd_server("/generate", {"text": "just text"}) as server:
        done = complete(plain(server))
    assert done.text == "just text" and done.usage.input_tokens is None


def test_odd_stream_events():
    from tests.fakes.base import sse

    unknown = [sse({"token_id": 1, "text": "a"}, "token"), sse({"x": 1}, "metrics")]
    with odd_server("/stream/generate", unknown, stream=True) as server:
        chunks, error = drain(plain(server))
    assert text_of(chunks) == "a" and error.kind is FailureKind.STREAM_CUT
    with odd_server("/stream/generate", [sse("[1]", "token")], stream=True) as server:
        assert drain(plain(server))[1].kind is FailureKind.MALFORMED
