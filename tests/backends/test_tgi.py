"""TGIAdapter against the loopback TGI server (native routes) and its Messages API."""

from __future__ import annotations

import json
import time

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
from tests.fakes.openai_server import OpenAIFake
from tests.fakes.scripted import DEFAULT_TEXT, tokenize
from tests.fakes.specs import assert_valid
from tests.fakes.tgi_server import TGIFake

TOKENS = tokenize(DEFAULT_TEXT)


@pytest.fixture(scope="module")
def server():
    with TGIFake() as running:
        yield running


@pytest.fixture
def fake(server):
    server.first_byte_delay = server.chunk_delay = 0.0
    server.healthy = True
    return server.reset()


def target(fake, **options) -> Target:
    return Target("tgi", "tgi", "tgi", fake.url, "tgi", options=options, local=True)


def last_body(fake) -> dict:
    return json.loads(fake.requests[-1].body)


def test_generate_returns_text_finish_and_usage(fake):
    request = InferenceRequest(
        prompt="Hi", system="Sys", max_tokens=100, temperature=0.5, top_p=0.9, seed=1
    )
    done = complete(target(fake, **{"param.repetition_penalty": "1.1"}), request)
    assert done.text == DEFAULT_TEXT and done.finish_reason == "stop"  # eos_token
    assert done.usage.input_tokens == 2 and done.usage.output_tokens == len(TOKENS)
    body = last_body(fake)
    assert body["inputs"] == "Sys\n\nHi"
    assert body["parameters"] == {
        "details": True,
        "return_full_text": False,
        "max_new_tokens": 100,
        "temperature": 0.5,
        "do_sample": True,
        "top_p": 0.9,
        "seed": 1,
        "repetition_penalty": 1.1,
    }
    assert_valid("tgi", fake.requests[-1])


def test_stream_skips_special_tokens_and_ends_on_details(fake):
    chunks, error = drain(target(fake))
    assert error is None and text_of(chunks) == DEFAULT_TEXT
    assert "</s>" not in text_of(chunks)
    assert chunks[-1].finish_reason == "stop" and chunks[-1].usage.output_tokens == len(TOKENS)
    assert chunks[-1].usage.input_tokens == 1
    assert fake.requests[-1].path == "/generate_stream"
    assert_valid("tgi", fake.requests[-1])


def test_length_finish(fake):
    chunks, _ = drain(target(fake), InferenceRequest(prompt="Hi", max_tokens=3))
    assert text_of(chunks) == "".join(TOKENS[:3]) and chunks[-1].finish_reason == "length"
    assert (
        complete(target(fake), InferenceRequest(prompt="Hi", max_tokens=3)).finish_reason
        == "length"
    )


def test_stop_sequence_is_not_echoed(fake):
    request = InferenceRequest(prompt="Hi", stop=("scripted",))
    done = complete(target(fake), request)
    assert done.text == "Hello world, this is a " and done.finish_reason == "stop"
    chunks, _ = drain(target(fake), request)
    assert (
        text_of(chunks) == "Hello world, this is a " and chunks[-1].usage.output_tokens == 7
    )  # the stop sequence counts
    assert last_body(fake)["parameters"]["stop"] == ["scripted"]


def test_at_most_four_stop_sequences_are_sent_the_rest_apply_here(fake):
    stops = ("q1", "q2", "q3", "q4", "scripted")
    request = InferenceRequest(prompt="Hi", max_tokens=8, stop=stops)
    done = complete(target(fake), request)
    # The server ran on to its token limit; the answer ended at the fifth stop sequence.
    assert done.text == "Hello world, this is a " and done.finish_reason == "stop"
    assert last_body(fake)["parameters"]["stop"] == ["q1", "q2", "q3", "q4"]
    chunks, error = drain(target(fake), request)
    assert error is None and text_of(chunks) == "Hello world, this is a "
    assert chunks[-1].finish_reason == "stop"


def test_greedy_and_out_of_range_values_are_not_sent_as_tgi_rejects_them(fake):
    done = complete(target(fake), InferenceRequest(prompt="Hi", temperature=0.0, top_p=1.0))
    assert done.text == DEFAULT_TEXT
    params = last_body(fake)["parameters"]
    assert "temperature" not in params and "top_p" not in params and params["do_sample"] is False


def test_assistant_prefix_is_glued_to_the_inputs(fake):
    complete(target(fake), InferenceRequest(prompt="Q: 2+2?\nA:", assistant_prefix=" It is"))
    assert last_body(fake)["inputs"] == "Q: 2+2?\nA: It is"


def test_chat_template_option_formats_the_inputs(fake, smollm2_path):
    from batuta.backends.types import Message
    from batuta.runtime.gguf import read_gguf

    t = target(fake, chat_template=read_gguf(smollm2_path).chat_template)
    request = InferenceRequest(
        prompt="And Spain?",
        history=(Message("user", "Capital of France?"), Message("assistant", "Paris.")),
    )
    expected = (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\n<|im_start|>user\nCapital of France?<|im_end|>\n"
        "<|im_start|>assistant\nParis.<|im_end|>\n<|im_start|>user\nAnd Spain?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    done = complete(t, request)
    assert last_body(fake)["inputs"] == expected and done.text == DEFAULT_TEXT
    assert_valid("tgi", fake.requests[-1])
    chunks, error = drain(t, request)
    assert error is None and text_of(chunks) == DEFAULT_TEXT
    assert fake.requests[-1].path == "/generate_stream" and last_body(fake)["inputs"] == expected


def test_validation_422_is_client(fake):
    fake.fail_next(422)
    error = complete_error(target(fake))
    assert error.kind is FailureKind.CLIENT and "validation" in str(error)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (424, FailureKind.SERVER),
        (429, FailureKind.OVERLOADED),
        (500, FailureKind.SERVER),
        (503, FailureKind.OVERLOADED),
    ],
)
def test_error_statuses(fake, status, kind):
    fake.fail_next(status, retry_after="3")
    _, error = drain(target(fake))
    assert error.kind is kind and error.retry_after == 3.0


def test_mid_stream_error_event(fake):
    fake.error_event_after(3)
    chunks, error = drain(target(fake))
    assert text_of(chunks) == "".join(TOKENS[:3])
    assert error.kind is FailureKind.SERVER and "CUDA out of memory" in str(error)


def test_overloaded_error_event(fake):
    fake.error_event_after(0, error_type="overloaded", message="Model is overloaded")
    assert drain(target(fake))[1].kind is FailureKind.OVERLOADED


def test_cut_and_malformed(fake):
    fake.cut_after(2)
    chunks, error = drain(target(fake))
    assert text_of(chunks) == "".join(TOKENS[:2]) and error.kind is FailureKind.STREAM_CUT
    fake.malformed_next()
    assert drain(target(fake))[1].kind is FailureKind.MALFORMED
    fake.malformed_next()
    assert complete_error(target(fake)).kind is FailureKind.MALFORMED


def test_first_byte_timeout(fake):
    fake.first_byte_delay = 1.0
    started = time.monotonic()
    assert complete_error(target(fake), first_byte_timeout=0.2).kind is FailureKind.TIMEOUT
    assert time.monotonic() - started < 0.9


def test_api_key_auth(monkeypatch):
    with TGIFake(api_key=SECRET) as fake:
        t = Target("tgi", "tgi", "tgi", fake.url, "tgi", api_key_env="TGI_KEY", local=True)
        monkeypatch.setenv("TGI_KEY", "not-the-key")
        assert complete_error(t).kind is FailureKind.AUTH
        monkeypatch.setenv("TGI_KEY", SECRET)
        assert complete(t).text == DEFAULT_TEXT
        assert health(t) is True
        assert fake.requests[-1].headers["authorization"] == f"Bearer {SECRET}"


def test_health(fake, free_port):
    assert health(target(fake)) is True
    fake.healthy = False
    assert health(target(fake)) is False
    assert health(Target("x", "tgi", "tgi", f"http://127.0.0.1:{free_port}", "tgi")) is False


def test_messages_api_option_uses_the_openai_routes():
    with OpenAIFake() as fake:
        t = target(fake, api="messages")
        assert complete(t).text == DEFAULT_TEXT
        chunks, error = drain(t)
        assert error is None and text_of(chunks) == DEFAULT_TEXT
        assert {r.path for r in fake.requests} == {"/v1/chat/completions"}


# ---------------------------------------------------------------------------- odd answers


def test_odd_blocking_answers():
    t = lambda server: Target("tgi", "tgi", "tgi", server.url, "tgi")  # noqa: E731
    listed = [{"generated_text": "from a list"}]
    with odd_server("/generate", listed, headers={"x-generated-tokens": "3"}) as server:
        done = complete(t(server))
    assert (
        done.text == "from a list" and done.usage.output_tokens == 3 and done.finish_reason is None
    )
    with odd_server(
        "/generate", {"error": "Model is overloaded", "error_type": "overloaded"}
    ) as server:
        assert complete_error(t(server)).kind is FailureKind.OVERLOADED
    with odd_server("/generate", {"text": "wrong field"}) as server:
        assert complete_error(t(server)).kind is FailureKind.MALFORMED


def test_odd_stream_events():
    from tests.fakes.base import sse

    t = lambda server: Target("tgi", "tgi", "tgi", server.url, "tgi")  # noqa: E731
    with odd_server("/generate_stream", [sse("[1]")], stream=True) as server:
        assert drain(t(server))[1].kind is FailureKind.MALFORMED
    token = {"token": {"id": 1, "text": "a", "special": False}, "details": None}
    with odd_server("/generate_stream", [sse(token)], stream=True) as server:
        chunks, error = drain(t(server))
    assert text_of(chunks) == "a" and error.kind is FailureKind.STREAM_CUT
