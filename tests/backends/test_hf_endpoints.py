"""HFEndpointAdapter against a loopback Inference Endpoint running TGI (both of its APIs)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from batuta.backends.hf_endpoints import HFEndpointAdapter
from batuta.backends.registry import adapter_for
from batuta.backends.types import InferenceRequest, Target
from batuta.errors import BackendError, FailureKind
from tests.fakes.hf_endpoint_server import HFEndpointFake, Script

TOKEN = "hf_FAKEfakeFAKEfakeFAKEfake000000"
ENGINES = ["openai", "tgi"]


@pytest.fixture(scope="module")
def server():
    with HFEndpointFake(token=TOKEN) as running:
        yield running


@pytest.fixture
def fake(server, monkeypatch):
    server.reset()
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return server


def target(fake, engine=None, base_url=None, **options) -> Target:
    if engine:
        options["engine"] = engine
    return Target(
        "ep", "hf-endpoints", "hf-endpoints", fake.url if base_url is None else base_url,
        "meta-llama/Llama-3.1-8B-Instruct", "HF_TOKEN", options,
    )  # fmt: skip


async def _drain(t, request):
    got = []
    async with httpx.AsyncClient() as client:
        try:
            async for chunk in adapter_for(t, client).stream(request):
                got.append(chunk)
        except BackendError as exc:
            return got, exc
    return got, None


def drain(t, request=None):
    return asyncio.run(_drain(t, request or InferenceRequest(prompt="Hi", max_tokens=12)))


def complete(t, request=None):
    async def go():
        async with httpx.AsyncClient() as client:
            return await adapter_for(t, client).complete(
                request or InferenceRequest(prompt="Hi", max_tokens=12, stream=False)
            )

    return asyncio.run(go())


def health(t) -> bool:
    async def go():
        async with httpx.AsyncClient() as client:
            return await adapter_for(t, client).health()

    return asyncio.run(go())


def failure(fn, *args) -> BackendError:
    with pytest.raises(BackendError) as info:
        fn(*args)
    return info.value


def text_of(chunks):
    return "".join(c.text for c in chunks)


def test_registry_resolves_the_adapter(fake):
    async def go():
        async with httpx.AsyncClient() as client:
            return adapter_for(target(fake), client)

    assert isinstance(asyncio.run(go()), HFEndpointAdapter)


def test_openai_engine_by_default(fake):
    done = complete(target(fake))
    assert done.text == "Hello, world!" and done.finish_reason == "stop"
    assert (done.usage.input_tokens, done.usage.output_tokens) == (10, 3)
    sent = fake.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent.json()["max_tokens"] == 12
    chunks, err = drain(target(fake, base_url=fake.url + "/v1"))
    assert err is None and text_of(chunks) == "Hello, world!"
    assert chunks[-1].usage.output_tokens == 3 and chunks[-1].finish_reason == "stop"


def test_tgi_native_generate(fake):
    request = InferenceRequest(
        prompt="Hi", system="Be brief.", max_tokens=12, temperature=0.7, top_p=0.9,
        stop=("###",), seed=5, stream=False,
    )  # fmt: skip
    done = complete(target(fake, "tgi"), request)
    assert done.text == "Hello, world!" and done.finish_reason == "stop"
    assert (done.usage.input_tokens, done.usage.output_tokens) == (10, 3)
    sent = fake.requests[-1]
    assert sent.path == "/generate"
    assert sent.json() == {
        "inputs": "Be brief.\n\nHi",
        "parameters": {
            "details": True, "return_full_text": False, "max_new_tokens": 12,
            "temperature": 0.7, "top_p": 0.9, "do_sample": True, "stop": ["###"], "seed": 5,
        },
    }  # fmt: skip


def test_tgi_native_applies_a_chat_template_from_the_options(fake):
    # What a manifest's `options: {chat_template: ...}` gives the endpoint (Llama 3's shape).
    template = (
        "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
        "<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n"
        "{% endif %}"
    )
    options = {"chat_template": template, "bos_token": "<|begin_of_text|>", "add_bos_token": "true"}
    request = InferenceRequest(prompt="Hi", system="Be brief.", stream=False)
    assert complete(target(fake, "tgi", **options), request).text == "Hello, world!"
    assert fake.requests[-1].json()["inputs"] == (
        "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )  # TGI's tokenizer adds BOS to raw inputs itself, so it is not sent twice


def test_tgi_greedy_never_sends_temperature_zero(fake):
    complete(target(fake, "tgi"), InferenceRequest(prompt="Hi", temperature=0.0, top_p=1.0))
    params = fake.requests[-1].json()["parameters"]
    assert params["do_sample"] is False and "temperature" not in params and "top_p" not in params


def _limits_target(fake, engine):
    if engine == "tgi-messages":  # TGI itself (backend tgi), through its Messages API
        return Target("tgi", "tgi", "tgi", fake.url, "tgi", "HF_TOKEN", {"api": "messages"})
    return target(fake, engine)


@pytest.mark.parametrize("engine", [*ENGINES, "tgi-messages"])
def test_top_p_and_stop_sequences_within_tgis_limits(fake, engine):
    stops = ("s1", "s2", "s3", "s4", "world")  # TGI takes 4: the fifth is applied here
    t = _limits_target(fake, engine)
    for top_p in (1.0, 0.0):
        request = InferenceRequest(prompt="Hi", max_tokens=12, top_p=top_p, stop=stops)
        done = complete(t, request)
        assert done.text == "Hello, " and done.finish_reason == "stop"
        sent = fake.requests[-1].json()
        params = sent["parameters"] if engine == "tgi" else sent
        assert "top_p" not in params and params["stop"] == list(stops[:4])
        chunks, err = drain(t, request)
        assert err is None and text_of(chunks) == "Hello, "
    complete(t, InferenceRequest(prompt="Hi", top_p=0.9))
    sent = fake.requests[-1].json()
    assert (sent["parameters"] if engine == "tgi" else sent)["top_p"] == 0.9


def test_tgi_native_stream_skips_special_tokens(fake):
    fake.default = Script(text=["Hel", "lo"], finish="length", usage=(4, 2), delay=0.01)
    chunks, err = drain(target(fake, "tgi"))
    assert err is None
    assert [c.text for c in chunks if c.text] == ["Hel", "lo"]  # no "</s>"
    assert chunks[-1].finish_reason == "length"
    assert (chunks[-1].usage.input_tokens, chunks[-1].usage.output_tokens) == (4, 2)
    assert fake.requests[-1].path == "/generate_stream"


@pytest.mark.parametrize("engine", ENGINES)
def test_scaled_to_zero_is_overloaded_until_awake(fake, engine):
    fake.cold_requests = 2
    err = failure(complete, target(fake, engine))
    assert err.kind is FailureKind.OVERLOADED and err.status == 503 and err.kind.retryable
    chunks, err = drain(target(fake, engine))
    assert chunks == [] and err.kind is FailureKind.OVERLOADED
    assert complete(target(fake, engine)).text == "Hello, world!"


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ("overloaded", FailureKind.OVERLOADED),  # TGI 429: queue full
        ("server_error", FailureKind.SERVER),
        ("validation", FailureKind.CLIENT),
    ],
)
def test_engine_errors(fake, engine, error, kind):
    fake.queue = [Script(error=error), Script(error=error)]
    err = failure(complete, target(fake, engine))
    assert err.kind is kind
    chunks, err = drain(target(fake, engine))
    assert chunks == [] and err.kind is kind


@pytest.mark.parametrize("engine", ENGINES)
def test_malformed_bodies(fake, engine):
    fake.queue = [Script(malformed=True)]
    assert failure(complete, target(fake, engine)).kind is FailureKind.MALFORMED


def test_malformed_native_stream_event(fake):
    fake.default = Script(malformed=True)
    chunks, err = drain(target(fake, "tgi"))
    assert text_of(chunks) == "Hello, world!" and err.kind is FailureKind.MALFORMED


def test_native_answer_without_generated_text_is_malformed(fake):
    fake.route("POST", r"/generate", lambda req, res: res.send_json(200, {"details": {}}))
    fake.routes.insert(0, fake.routes.pop())
    assert failure(complete, target(fake, "tgi")).kind is FailureKind.MALFORMED


@pytest.mark.parametrize("engine", ENGINES)
def test_in_stream_error(fake, engine):
    fake.default = Script(in_stream_error=True)
    chunks, err = drain(target(fake, engine))
    assert text_of(chunks) == "Hello, world!"
    assert err.kind is FailureKind.SERVER and "failed during generation" in str(err)


@pytest.mark.parametrize("engine", ENGINES)
def test_cut_stream_keeps_partial_text(fake, engine):
    fake.default = Script(text=["Hel", "lo", " world"], cut_after=2, delay=0.01)
    chunks, err = drain(target(fake, engine))
    assert text_of(chunks) == "Hello" and err.kind is FailureKind.STREAM_CUT


def test_native_clean_close_without_details_is_stream_cut(fake):
    def short(req, res):
        res.stream(200, [b'data:{"token": {"text": "a", "special": false}}\n\n'])

    fake.route("POST", r"/generate_stream", short)
    fake.routes.insert(0, fake.routes.pop())
    chunks, err = drain(target(fake, "tgi"))
    assert text_of(chunks) == "a" and err.kind is FailureKind.STREAM_CUT


@pytest.mark.parametrize("engine", ENGINES)
def test_bad_token_is_auth_and_never_echoed(fake, engine, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_WRONGwrongWRONG")
    err = failure(complete, target(fake, engine))
    assert err.kind is FailureKind.AUTH and err.status == 401 and "hf_WRONG" not in str(err)


def test_missing_token_and_bad_configuration(fake, monkeypatch):
    assert failure(complete, target(fake, "vllm-native")).kind is FailureKind.CLIENT
    err = failure(complete, target(fake, base_url=""))
    assert err.kind is FailureKind.CLIENT and "base_url" in str(err)
    monkeypatch.delenv("HF_TOKEN")
    fake.requests.clear()
    err = failure(complete, target(fake, "tgi"))
    assert err.kind is FailureKind.AUTH and "HF_TOKEN" in str(err) and fake.requests == []


def test_health_follows_the_wake_up(fake, monkeypatch):
    fake.cold_requests = 1
    assert health(target(fake)) is False
    assert health(target(fake)) is True
    assert fake.requests[-1].path == "/health"
    assert fake.requests[-1].headers["authorization"] == f"Bearer {TOKEN}"  # protected endpoint
    assert health(target(fake, "tgi", health_path="/info")) is True
    assert fake.requests[-1].path == "/info"
    assert health(target(fake, "nope")) is False
    monkeypatch.delenv("HF_TOKEN")
    assert health(target(fake)) is False


def test_health_unreachable(free_port, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    t = Target(
        "ep", "hf-endpoints", "hf-endpoints", f"http://127.0.0.1:{free_port}", "m", "HF_TOKEN"
    )
    assert health(t) is False
