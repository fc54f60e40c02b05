"""OpenAIAdapter against the loopback OpenAI fake (every dialect quirk) and the real engine."""

from __future__ import annotations

import dataclasses
import json
import time

import httpx
import pytest

from batuta.backends.openai import OpenAIAdapter
from batuta.backends.types import InferenceRequest, Message, Target
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
from tests.fakes.base import sse
from tests.fakes.openai_server import OpenAIFake
from tests.fakes.scripted import DEFAULT_TEXT, tokenize
from tests.fakes.scripted import QuietFake as FakeServer
from tests.fakes.specs import assert_valid

TOKENS = tokenize(DEFAULT_TEXT)


@pytest.fixture(scope="module")
def server():
    with OpenAIFake(api_key=SECRET) as running:
        yield running


@pytest.fixture
def fake(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    server.first_byte_delay = server.chunk_delay = 0.0
    return server.reset()


def remote(fake, backend="openai", env="OPENAI_API_KEY", suffix="/v1", **options) -> Target:
    return Target(
        name="gpt",
        backend=backend,
        protocol="openai",
        base_url=fake.url + suffix,
        model="gpt-test",
        api_key_env=env,
        options=options,
    )


def local(fake, backend="llamacpp", **options) -> Target:
    return Target("local", backend, "openai", fake.url, "smollm2", options=options, local=True)


def last_body(fake) -> dict:
    return json.loads(fake.requests[-1].body)


# ---------------------------------------------------------------------------- happy paths


def test_complete_returns_text_finish_and_usage(fake):
    done = complete(remote(fake), InferenceRequest(prompt="Say hello", system="Be brief."))
    assert done.text == DEFAULT_TEXT
    assert done.finish_reason == "stop"
    assert done.usage.input_tokens == 4 and done.usage.output_tokens == len(TOKENS)
    sent = fake.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {SECRET}"
    body = last_body(fake)
    assert body["stream"] is False and "stream_options" not in body
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello"},
    ]
    assert_valid("openai", sent)


def test_stream_yields_each_token_then_finish_and_usage(fake):
    request = InferenceRequest(prompt="Hi", max_tokens=64, temperature=0.2, top_p=0.9, seed=7)
    chunks, error = drain(remote(fake), request)
    assert error is None
    assert [c.text for c in chunks[:-1]] == TOKENS
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage.output_tokens == len(TOKENS)
    body = last_body(fake)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    # OpenAI itself gets max_completion_tokens; the sampling fields go through untouched.
    assert body["max_completion_tokens"] == 64 and "max_tokens" not in body
    assert (body["temperature"], body["top_p"], body["seed"]) == (0.2, 0.9, 7)
    assert_valid("openai", fake.requests[-1])


def test_local_server_gets_max_tokens_and_v1_prefix(fake):
    server = OpenAIFake()
    with server:
        done = complete(local(server), InferenceRequest(prompt="Hi", max_tokens=3))
        assert server.requests[-1].path == "/v1/chat/completions"
        body = json.loads(server.requests[-1].body)
        assert body["max_tokens"] == 3 and "authorization" not in server.requests[-1].headers
        assert done.finish_reason == "length" and done.text == "".join(TOKENS[:3])
        assert_valid("openai", server.requests[-1])


def test_max_tokens_in_a_stream_ends_with_length(fake):
    chunks, error = drain(remote(fake), InferenceRequest(prompt="Hi", max_tokens=2))
    assert error is None
    assert text_of(chunks) == "".join(TOKENS[:2]) and chunks[-1].finish_reason == "length"


def test_stop_sequences_are_sent_and_honoured(fake):
    request = InferenceRequest(prompt="Hi", stop=("scripted", "zzz"))
    chunks, error = drain(remote(fake), request)
    assert error is None
    assert text_of(chunks) == "Hello world, this is a "
    assert chunks[-1].finish_reason == "stop"
    assert last_body(fake)["stop"] == ["scripted", "zzz"]
    assert_valid("openai", fake.requests[-1])


def test_engine_extras_and_org_headers_are_passed(fake):
    t = remote(
        fake, **{"param.top_k": "40", "param.user": "abc", "organization": "org-1", "project": "p"}
    )
    complete(t)
    body, headers = last_body(fake), fake.requests[-1].headers
    assert body["top_k"] == 40 and body["user"] == "abc"
    assert headers["openai-organization"] == "org-1" and headers["openai-project"] == "p"


def test_base_with_its_own_version_segment_is_not_prefixed_again():
    with OpenAIFake(api_key=SECRET, prefix="/openai/v1", groq=True) as server:
        import os

        os.environ["GROQ_API_KEY"] = SECRET
        try:
            t = remote(server, backend="groq", env="GROQ_API_KEY", suffix="/openai/v1")
            chunks, error = drain(t)
        finally:
            del os.environ["GROQ_API_KEY"]
    assert error is None and text_of(chunks) == DEFAULT_TEXT
    assert server.requests[-1].path == "/openai/v1/chat/completions"
    assert chunks[-1].usage.input_tokens == 1


# ---------------------------------------------------------------------------- stream framing


def test_azure_style_empty_choices_chunks_are_skipped():
    with OpenAIFake(azure_empty_chunks=True) as server:
        chunks, error = drain(local(server))
    assert error is None and text_of(chunks) == DEFAULT_TEXT


def test_stream_without_done_or_usage_ends_on_close_after_finish():
    # llama-cpp-python style: no usage chunk; and an old llamafile-style missing [DONE].
    with OpenAIFake(send_done=False, stream_usage=False) as server:
        chunks, error = drain(local(server))
    assert error is None and text_of(chunks) == DEFAULT_TEXT
    assert chunks[-1].finish_reason == "stop" and chunks[-1].usage is None


def test_clean_close_before_any_finish_reason_is_stream_cut():
    def half(req, resp):
        chunk = {"choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]}
        resp.stream(200, [sse(chunk)])  # ends cleanly, but nothing said the answer was over

    with FakeServer() as server:
        server.route("POST", "/v1/chat/completions", half)
        chunks, error = drain(local(server))
    assert text_of(chunks) == "Hel"
    assert error is not None and error.kind is FailureKind.STREAM_CUT


def test_done_without_finish_reason_still_ends_normally():
    def done_only(req, resp):
        chunk = {"choices": [{"index": 0, "delta": {"content": "ok"}}]}
        resp.stream(200, [sse(chunk), b": keep-alive\n\n", sse("[DONE]")])

    with FakeServer() as server:
        server.route("POST", "/v1/chat/completions", done_only)
        chunks, error = drain(local(server))
    assert error is None and text_of(chunks) == "ok" and chunks[-1].finish_reason is None


def test_non_object_event_is_malformed():
    with FakeServer() as server:
        server.route("POST", "/v1/chat/completions", lambda q, r: r.stream(200, [sse("[1, 2]")]))
        _, error = drain(local(server))
    assert error is not None and error.kind is FailureKind.MALFORMED


# ---------------------------------------------------------------------------- failures


def test_429_carries_retry_after_and_request_id(fake):
    fake.fail_next(429, retry_after="1")
    error = complete_error(remote(fake))
    assert error.kind is FailureKind.RATE_LIMIT and error.status == 429
    assert error.retry_after == 1.0 and error.request_id and error.request_id.startswith("req_")
    assert "Rate limit reached" in str(error)


def test_retry_after_ms_wins_over_retry_after(fake):
    fake.fail_next(429, retry_after="5", headers={"retry-after-ms": "250"})
    _, error = drain(remote(fake))
    assert error.kind is FailureKind.RATE_LIMIT and error.retry_after == 0.25


def test_insufficient_quota_429_is_quota_not_rate_limit(fake):
    fake.fail_next(429, error_type="insufficient_quota")
    error = complete_error(remote(fake))
    assert error.kind is FailureKind.QUOTA and not error.kind.retryable
    assert "exceeded your current quota" in str(error)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (500, FailureKind.SERVER),
        (503, FailureKind.OVERLOADED),
        (400, FailureKind.CLIENT),
        (404, FailureKind.CLIENT),
    ],
)
def test_error_statuses_are_classified(fake, status, kind):
    fake.fail_next(status)
    _, error = drain(remote(fake))
    assert error.kind is kind and error.status == status


def test_flat_vllm_error_body_is_understood(fake):
    body = {
        "object": "error",
        "message": "This model's maximum context length is 4096 tokens",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }
    fake.fail_next(400, body=body)
    error = complete_error(remote(fake))
    assert error.kind is FailureKind.CLIENT and "maximum context length" in str(error)


def test_malformed_json_body_is_malformed(fake):
    fake.malformed_next()
    assert complete_error(remote(fake)).kind is FailureKind.MALFORMED


def test_malformed_event_mid_stream_keeps_the_earlier_chunks(fake):
    fake.malformed_next()
    chunks, error = drain(remote(fake))
    assert error.kind is FailureKind.MALFORMED and text_of(chunks) == ""
    fake.script.clear()


def test_stream_cut_midway_yields_the_partial_answer_then_stream_cut(fake):
    fake.cut_after(3)
    chunks, error = drain(remote(fake))
    assert text_of(chunks) == "".join(TOKENS[:3])
    assert all(c.finish_reason is None for c in chunks)
    assert error is not None and error.kind is FailureKind.STREAM_CUT


def test_blocking_body_cut_is_stream_cut(fake):
    fake.cut_after(0)
    assert complete_error(remote(fake)).kind is FailureKind.STREAM_CUT


def test_in_stream_error_event_fails_after_the_partial_text(fake):
    fake.error_event_after(2, message="CUDA out of memory")
    chunks, error = drain(remote(fake))
    assert text_of(chunks) == "".join(TOKENS[:2])
    assert error.kind is FailureKind.SERVER and "CUDA out of memory" in str(error)


def test_groq_x_groq_error_fails_the_stream():
    with OpenAIFake(groq=True) as server:
        server.error_event_after(1, error_type="server_error", message="stream stopped early")
        chunks, error = drain(local(server))
    assert text_of(chunks) == TOKENS[0]
    assert error.kind is FailureKind.SERVER and "stream stopped early" in str(error)


def test_wrong_key_is_auth_and_the_key_never_appears(fake, monkeypatch):
    wrong = "sk-wrong-9f8e7d6c5b4a"
    monkeypatch.setenv("OPENAI_API_KEY", wrong)
    # The real API quotes the key back ("Incorrect API key provided: sk-..."); so does the fake.
    error = complete_error(remote(fake))
    assert error.kind is FailureKind.AUTH and error.status == 401
    assert "Incorrect API key provided" in str(error)
    assert wrong not in str(error) and wrong not in repr(error.args)
    _, stream_error = drain(remote(fake))
    assert stream_error.kind is FailureKind.AUTH and wrong not in str(stream_error)


def test_key_value_never_appears_in_any_error(fake):
    messages = []
    for status in (400, 429, 500, 503):
        fake.fail_next(status, message=f"echo {SECRET} back")
        messages.append(str(complete_error(remote(fake))))
    fake.error_event_after(1, message=f"leaked {SECRET}")
    messages.append(str(drain(remote(fake))[1]))
    assert all(SECRET not in m and "***" in m for m in messages)


def test_missing_key_variable_is_auth_naming_the_variable(fake, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    error = complete_error(remote(fake))
    assert error.kind is FailureKind.AUTH and "OPENAI_API_KEY" in str(error)
    assert fake.requests == []  # nothing was sent without the key


def test_connection_refused_is_connect(free_port):
    t = Target("dead", "llamacpp", "openai", f"http://127.0.0.1:{free_port}", "m", local=True)
    chunks, error = drain(t)
    assert chunks == [] and error.kind is FailureKind.CONNECT
    assert complete_error(t).kind is FailureKind.CONNECT
    assert health(t) is False


def test_first_byte_timeout_is_timeout(fake):
    fake.first_byte_delay = 1.5
    started = time.monotonic()
    _, error = drain(remote(fake), first_byte_timeout=0.2)
    assert error.kind is FailureKind.TIMEOUT
    assert time.monotonic() - started < 1.2
    assert complete_error(remote(fake), first_byte_timeout=0.2).kind is FailureKind.TIMEOUT


def test_deadline_passing_mid_stream_is_timeout_after_partial_text(fake):
    fake.chunk_delay = 0.25
    chunks, error = drain(remote(fake), deadline=time.monotonic() + 0.6)
    assert error.kind is FailureKind.TIMEOUT
    assert 0 < len([c for c in chunks if c.text]) < len(TOKENS)


# ---------------------------------------------------------------------------- continuation


def test_assistant_prefix_is_sent_as_a_final_assistant_message(fake):
    history = (Message("user", "Earlier"), Message("assistant", "Answer"))
    request = InferenceRequest(prompt="Go on", history=history, assistant_prefix="Hello wor")
    drain(remote(fake), request)
    messages = last_body(fake)["messages"]
    assert messages[-1] == {"role": "assistant", "content": "Hello wor"}
    assert messages[-2] == {"role": "user", "content": "Go on"}
    assert "continue_final_message" not in last_body(fake)
    assert_valid("openai", fake.requests[-1])


def test_vllm_is_told_to_continue_the_final_message():
    with OpenAIFake() as server:
        complete(
            local(server, backend="vllm"), InferenceRequest(prompt="Q", assistant_prefix="A: ")
        )
        body = json.loads(server.requests[-1].body)
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False


def test_completion_style_appends_the_prefix_to_the_prompt(fake):
    t = remote(fake, api="completions")
    request = InferenceRequest(
        prompt="Tell me", system="Sys", assistant_prefix="Once upon", max_tokens=5
    )
    done = complete(t, request)
    sent = fake.requests[-1]
    assert sent.path == "/v1/completions"
    assert json.loads(sent.body)["prompt"] == "Sys\n\nTell meOnce upon"
    assert json.loads(sent.body)["max_tokens"] == 5
    assert done.text == "".join(TOKENS[:5])
    assert_valid("openai", sent)
    chunks, error = drain(t, request)
    assert error is None and text_of(chunks) == "".join(TOKENS[:5])


def test_completion_style_sends_the_chat_through_the_template_option(fake):
    template = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    t = remote(fake, api="completions", chat_template=template)
    request = InferenceRequest(prompt="Tell me", system="Sys", assistant_prefix="Once")
    complete(t, request)
    sent = fake.requests[-1]
    assert sent.path == "/v1/completions"
    assert json.loads(sent.body)["prompt"] == (
        "<|im_start|>system\nSys<|im_end|>\n<|im_start|>user\nTell me<|im_end|>\n"
        "<|im_start|>assistant\nOnce"
    )
    assert "chat_template" not in json.loads(sent.body)
    assert_valid("openai", sent)
    complete(remote(fake, chat_template=template), request)  # chat mode: the server's job
    assert "prompt" not in last_body(fake) and len(last_body(fake)["messages"]) == 3


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.mark.parametrize("backend", ["llamacpp", "llamafile"])
def test_llamacpp_family_continues_through_completions_with_the_turn_left_open(backend):
    """Their chat route would close the assistant turn and start a new answer; the raw
    prompt leaves it open, the prefix last, so the model continues it."""
    with OpenAIFake() as server:
        t = local(server, backend=backend, chat_template=CHATML)
        request = InferenceRequest(
            prompt="Tell me", system="Sys", assistant_prefix="Once upon", max_tokens=7
        )
        adapter = OpenAIAdapter(t, httpx.AsyncClient())
        assert adapter.continues(request)
        chunks, error = drain(t, request)
        sent = server.requests[-1]
        body = json.loads(sent.body)
        assert sent.path == "/v1/completions" and "messages" not in body
        assert body["prompt"] == (
            "<|im_start|>system\nSys<|im_end|>\n<|im_start|>user\nTell me<|im_end|>\n"
            "<|im_start|>assistant\nOnce upon"
        )
        assert body["max_tokens"] == 7 and body["stream"] is True
        assert_valid("openai", sent)
        assert error is None and text_of(chunks) == "".join(TOKENS[:7])
        # A fresh question (no prefix) stays a chat request: the server applies its template.
        drain(t, InferenceRequest(prompt="Tell me", max_tokens=3))
        assert server.requests[-1].path == "/v1/chat/completions"
        assert not adapter.continues(InferenceRequest(prompt="Tell me"))


def test_continuation_without_a_known_template_stays_a_chat_request():
    """No template recorded (a server batuta does not manage), or one that cannot render
    the chat: the chat route, whose restarted answer the router splices; vLLM and others
    never take the raw prompt."""
    request = InferenceRequest(prompt="Q", assistant_prefix="A: ")
    refuses = "{{ raise_exception('no such role') }}"
    with OpenAIFake() as server:
        for t in (
            local(server),
            local(server, chat_template=refuses),  # a flattened prompt would be worse
            local(server, backend="vllm", chat_template=CHATML),
        ):
            assert not OpenAIAdapter(t, httpx.AsyncClient()).continues(request)
            complete(t, request)
            assert server.requests[-1].path == "/v1/chat/completions"
            assert json.loads(server.requests[-1].body)["messages"][-1]["role"] == "assistant"


# ---------------------------------------------------------------------------- dialects, probes


def test_blocking_only_server_streams_one_chunk_and_stops_client_side():
    with OpenAIFake(blocking_only=True) as server:
        t = Target("g4a", "gpt4all", "openai", server.url, "m", local=True)
        chunks, error = drain(t, InferenceRequest(prompt="Hi", stop=("this",)))
        body = json.loads(server.requests[-1].body)
    assert error is None and len(chunks) == 1
    assert chunks[0].text == "Hello world, " and chunks[0].finish_reason == "stop"
    assert "stream" not in body and "stop" not in body and "stream_options" not in body


def test_gpt4all_is_sent_only_the_fields_it_takes():
    with OpenAIFake(blocking_only=True) as server:
        t = Target("g4a", "gpt4all", "openai", server.url, "m",
                   options={"param.repeat_penalty": "1.1", "param.presence_penalty": "0.5"},
                   local=True)  # fmt: skip
        request = InferenceRequest(
            prompt="Hi", max_tokens=40, temperature=0.5, top_p=0.9, seed=7, stop=("this",)
        )
        done = complete(t, request)
        body = json.loads(server.requests[-1].body)
        chunks, error = drain(t, request)
    assert done.text == "Hello world, " and done.finish_reason == "stop"
    assert set(body) == {"model", "messages", "max_tokens", "temperature", "top_p"}
    assert error is None and text_of(chunks) == "Hello world, "


def test_openai_takes_at_most_four_stops_the_rest_apply_here(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with OpenAIFake(api_key=SECRET, openai_limits=True) as server:
        t = remote(server)
        request = InferenceRequest(prompt="Hi", stop=("q1", "q2", "q3", "q4", "scripted"))
        done = complete(t, request)
        assert last_body(server)["stop"] == ["q1", "q2", "q3", "q4"]
        chunks, error = drain(t, request)
    expected = DEFAULT_TEXT[: DEFAULT_TEXT.index("scripted")]
    assert done.text == expected and done.finish_reason == "stop"
    assert error is None and text_of(chunks) == expected and chunks[-1].finish_reason == "stop"


@pytest.mark.parametrize("model", ["o1-mini", "o3", "o4-mini", "gpt-5", "gpt-5-mini"])
def test_reasoning_models_get_no_sampling_knobs_or_stop(monkeypatch, caplog, model):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with OpenAIFake(api_key=SECRET, openai_limits=True) as server:
        request = InferenceRequest(
            prompt="Hi", model=model, temperature=0.2, top_p=0.5, seed=3, stop=("scripted",)
        )
        with caplog.at_level("INFO", logger="batuta.backends.openai"):
            done = complete(remote(server), request)
        body = last_body(server)
        chunks, error = drain(remote(server), request)
    assert "temperature" not in body and "top_p" not in body and "stop" not in body
    assert body["seed"] == 3
    assert done.text == "Hello world, this is a " and done.finish_reason == "stop"
    assert error is None and text_of(chunks) == "Hello world, this is a "
    assert "takes no temperature, top_p, stop (applied here): left out" in caplog.text


def test_other_openai_models_keep_their_sampling_knobs(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with OpenAIFake(api_key=SECRET, openai_limits=True) as server:
        request = InferenceRequest(prompt="Hi", model="gpt-4o", temperature=0.2, stop=("x",))
        assert complete(remote(server), request).text == DEFAULT_TEXT
        body = last_body(server)
    assert body["temperature"] == 0.2 and body["stop"] == ["x"]


def test_retired_anyscale_is_refused_unless_self_hosted(fake, monkeypatch):
    monkeypatch.setenv("ANYSCALE_API_KEY", SECRET)
    shared = Target("any", "anyscale", "openai", "https://api.endpoints.anyscale.com/v1", "m",
                    api_key_env="ANYSCALE_API_KEY")  # fmt: skip
    error = complete_error(shared)
    assert error.kind is FailureKind.CLIENT and not error.kind.retryable
    assert "anyscale was retired 2024-08-01: the shared Anyscale Endpoints shut down" in str(error)
    assert "set base_url to such a self-hosted service" in str(error)
    assert drain(shared)[1].kind is FailureKind.CLIENT and health(shared) is False
    own = Target("any", "anyscale", "openai", fake.url + "/v1", "m", api_key_env="ANYSCALE_API_KEY")
    assert complete(own).text == DEFAULT_TEXT


def test_x_api_key_dialect(monkeypatch):
    monkeypatch.setenv("TABBY_API_KEY", SECRET)
    with OpenAIFake(api_key=SECRET, auth_style="x-api-key") as server:
        t = Target(
            "tabby", "exllamav2", "openai", server.url, "m", api_key_env="TABBY_API_KEY", local=True
        )
        assert complete(t).text == DEFAULT_TEXT
        assert server.requests[-1].headers["x-api-key"] == SECRET


def test_models_list_shapes(monkeypatch):
    import asyncio

    import httpx

    from batuta.backends.openai import OpenAIAdapter

    monkeypatch.setenv("TOGETHER_API_KEY", SECRET)

    async def ids(t):
        async with httpx.AsyncClient() as client:
            return await OpenAIAdapter(t, client).models()

    with OpenAIFake(api_key=SECRET, models_shape="array") as server:
        assert asyncio.run(ids(remote(server, "together", "TOGETHER_API_KEY"))) == ["fake-model"]
    with OpenAIFake(models_shape="list") as server:
        assert asyncio.run(ids(local(server))) == ["fake-model"]


def test_remote_health_is_an_authenticated_models_call(fake, monkeypatch):
    assert health(remote(fake)) is True
    assert fake.requests[-1].path == "/v1/models"
    monkeypatch.setenv("OPENAI_API_KEY", "wrong")
    assert health(remote(fake)) is False
    monkeypatch.delenv("OPENAI_API_KEY")
    assert health(remote(fake)) is False


def test_local_health_uses_health_route_and_falls_back_to_models():
    with OpenAIFake(health_status=None) as server:  # llama-cpp-python: /health is a 404
        assert health(local(server)) is True
        assert [r.path for r in server.requests] == ["/health", "/v1/models"]
        server.health_status = 503  # llama-server while loading the model
        assert health(local(server)) is False
        server.health_status = 200
        assert health(local(server)) is True
        assert health(local(server, health_path="/v1/models")) is True


# ---------------------------------------------------------------------------- the real engine


@pytest.fixture(scope="module")
def engine(smollm2_path, tmp_path_factory, llama_engine):
    """The real engine (each form in turn) with SmolLM2 on a free port, stopped by pid."""
    from tests.conftest import _free_port
    from tests.engines import LlamaProcess

    log = tmp_path_factory.mktemp("engine") / "server.log"
    server = LlamaProcess(llama_engine, smollm2_path, log, _free_port(), threads=2, ctx=1024)
    try:
        yield server.url
    finally:
        server.stop()


def smol(url) -> Target:
    return Target("smol", "llamacpp", "openai", url, "smollm2", local=True)


@pytest.mark.engine
def test_real_llamacpp_blocking_answer_is_english_with_usage(engine):
    request = InferenceRequest(
        prompt="What is the capital of France? Answer in one sentence.",
        max_tokens=32,
        temperature=0.0,
        seed=1,
        stream=False,
    )
    done = complete(smol(engine), request)
    assert done.text.strip(), done
    assert sum(ch.isascii() and ch.isalpha() for ch in done.text) >= 5
    assert done.finish_reason in ("stop", "length")
    assert done.usage.input_tokens and done.usage.input_tokens > 5
    assert done.usage.output_tokens and 0 < done.usage.output_tokens <= 32


@pytest.mark.engine
def test_real_llamacpp_stream_and_health(engine):
    chunks, error = drain(
        smol(engine), InferenceRequest(prompt="Say hello.", max_tokens=16, temperature=0.0)
    )
    assert error is None
    assert len([c for c in chunks if c.text]) >= 2 and text_of(chunks).strip()
    assert chunks[-1].finish_reason in ("stop", "length")
    assert health(smol(engine)) is True  # llama-server: /health; Python: falls back to /v1/models


@pytest.mark.engine
def test_real_llamacpp_stream_usage_is_the_servers_own_count(engine, llama_engine):
    request = InferenceRequest(prompt="Name three colors.", max_tokens=24, temperature=0.0)
    chunks, error = drain(smol(engine), request)
    assert error is None
    usage = next((c.usage for c in reversed(chunks) if c.usage is not None), None)
    blocking = complete(smol(engine), dataclasses.replace(request, stream=False))
    assert text_of(chunks) == blocking.text
    if llama_engine == "server":  # it sends the include_usage chunk
        assert usage is not None and usage.output_tokens == blocking.usage.output_tokens
        assert usage.input_tokens == blocking.usage.input_tokens
    else:  # llama-cpp-python ignores stream_options: no usage on the stream
        assert usage is None or usage.output_tokens is None


@pytest.mark.engine
def test_real_llamacpp_honours_stop_sequences(engine):
    # The greedy answer without a stop sequence, then a piece of its middle as the stop:
    # the answer must end right before it, streamed or not.
    request = InferenceRequest(
        prompt="Describe the sea in two sentences.", max_tokens=40, temperature=0.0
    )
    # From the second request on, the engine reuses the prompt's cached KV and evaluates
    # only its last token anew, which can tip a greedy answer at a near tie (it does on
    # AVX-512): the reference answer is taken with the cache as the later requests find it.
    complete(smol(engine), dataclasses.replace(request, stream=False))
    full = complete(smol(engine), dataclasses.replace(request, stream=False)).text
    assert len(full) > 20, full
    stop = full[len(full) // 2 : len(full) // 2 + 4]
    expected = full[: full.index(stop)]
    request = dataclasses.replace(request, stop=(stop,))
    done = complete(smol(engine), dataclasses.replace(request, stream=False))
    chunks, error = drain(smol(engine), request)
    assert error is None
    streamed = (text_of(chunks), next(c.finish_reason for c in chunks if c.finish_reason))
    for text, finish in ((done.text, done.finish_reason), streamed):
        assert text == expected and finish == "stop", (text, stop, full)


@pytest.mark.engine
def test_real_llamacpp_raw_completion_with_the_models_template(engine, smollm2_path):
    """The GGUF's own template, rendered by batuta and sent as a raw prompt to
    ``/v1/completions``, makes the model answer as it does through the server's chat
    route (which applies the same template itself): same prompt tokens, same answer."""
    from batuta.routing.build import template_options
    from batuta.runtime.sources import _gguf_metadata

    options = template_options(_gguf_metadata(smollm2_path, None))
    assert options["chat_template"] and options["eos_token"] == "<|im_end|>"
    t = Target(
        "smol", "llamacpp", "openai", engine, "smollm2", local=True,
        options={"api": "completions", **options},
    )  # fmt: skip
    request = InferenceRequest(
        prompt="What is the capital of France?",
        system="You answer in one short sentence.",
        max_tokens=32,
        temperature=0.0,
        seed=1,
        stream=False,
    )
    raw = complete(t, request)
    assert "Paris" in raw.text, raw
    assert raw.text.isascii() and raw.text.strip().endswith(".")
    assert raw.finish_reason == "stop"  # the model ended its turn (<|im_end|>)
    chat = complete(smol(engine), request)
    assert raw.text == chat.text
    assert raw.usage.input_tokens == chat.usage.input_tokens
    chunks, error = drain(t, request)
    assert error is None and "Paris" in text_of(chunks)


# ---------------------------------------------------------------------------- odd answers


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ([1], FailureKind.MALFORMED),
        ({"error": {"message": "late failure"}}, FailureKind.SERVER),
        ({"choices": []}, FailureKind.MALFORMED),
    ],
)
def test_odd_blocking_answers_fail_cleanly(body, kind):
    with odd_server("/v1/chat/completions", body) as server:
        assert complete_error(local(server)).kind is kind


def test_null_content_and_choice_order_are_handled():
    body = {
        "choices": [
            {"index": 1, "message": {"content": "other"}},
            {"index": 0, "message": {"content": None}, "finish_reason": "tool_calls"},
        ]
    }
    with odd_server("/v1/chat/completions", body) as server:
        done = complete(local(server))
    assert (
        done.text == "" and done.finish_reason == "tool_calls" and done.usage.input_tokens is None
    )


def test_cut_after_the_finish_reason_is_a_normal_end():
    finish = {"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}]}
    with odd_server("/v1/chat/completions", [sse(finish), None], stream=True) as server:
        chunks, error = drain(local(server))
    assert error is None and text_of(chunks) == "Hi" and chunks[-1].finish_reason == "stop"


def test_models_without_a_list_is_malformed():
    import asyncio

    import httpx

    from batuta.backends.openai import OpenAIAdapter
    from batuta.errors import BackendError

    async def go(url):
        async with httpx.AsyncClient() as client:
            return await OpenAIAdapter(local_target(url), client).models()

    def local_target(url):
        return Target("l", "llamacpp", "openai", url, "m", local=True)

    server = FakeServer()
    server.route("GET", "/v1/models", lambda q, r: r.send_json(200, {"data": "nope"}))
    with server, pytest.raises(BackendError) as err:
        asyncio.run(go(server.url))
    assert err.value.kind is FailureKind.MALFORMED


def test_modal_proxy_auth_sends_the_token_from_its_variables(monkeypatch):
    token_id, token_secret = "wk-" + "1a" * 10, "ws-" + "2b" * 10
    monkeypatch.setenv("MODAL_PROXY_ID", token_id)
    monkeypatch.setenv("MODAL_PROXY_SECRET", token_secret)
    with OpenAIFake(modal_proxy=(token_id, token_secret)) as server:
        options = {"proxy_key_env": "MODAL_PROXY_ID", "proxy_secret_env": "MODAL_PROXY_SECRET"}
        t = Target("modal", "modal", "openai", server.url + "/v1", "m", options=options)
        assert complete(t).text == DEFAULT_TEXT
        sent = server.requests[-1].headers
        assert (sent["modal-key"], sent["modal-secret"]) == (token_id, token_secret)
        assert health(t) is True
        # Without proxy auth the web endpoint refuses the call before the app sees it.
        refused = complete_error(Target("modal", "modal", "openai", server.url + "/v1", "m"))
        assert refused.kind is FailureKind.AUTH
        assert "missing credentials for proxy authorization" in str(refused)


def test_modal_proxy_auth_names_an_unset_variable_only(monkeypatch):
    monkeypatch.setenv("MODAL_PROXY_ID", "wk-123")
    monkeypatch.delenv("MODAL_PROXY_SECRET", raising=False)
    with OpenAIFake(modal_proxy=("wk-123", "ws-456")) as server:
        options = {"proxy_key_env": "MODAL_PROXY_ID", "proxy_secret_env": "MODAL_PROXY_SECRET"}
        t = Target("modal", "modal", "openai", server.url + "/v1", "m", options=options)
        error = complete_error(t)
        assert error.kind is FailureKind.AUTH and "set MODAL_PROXY_SECRET" in str(error)
        assert "wk-123" not in str(error) and not server.requests  # nothing was sent
        assert health(t) is False
