"""ReplicateAdapter against the loopback Replicate: one prediction per call, followed to its end."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from batuta.backends.replicate import ReplicateAdapter
from batuta.backends.types import InferenceRequest, Message, Target
from batuta.errors import BackendError, FailureKind
from tests.fakes.replicate_server import ReplicateFake, Script

TOKEN = "r8_FAKEfakeFAKEfakeFAKEfakeFAKEfake0000"
MODEL = "meta/meta-llama-3-8b-instruct"


@pytest.fixture(scope="module")
def server():
    with ReplicateFake(token=TOKEN) as running:
        yield running


@pytest.fixture
def fake(server, monkeypatch):
    server.reset()
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    return server


def target(fake, model=MODEL, **options) -> Target:
    opts = {"poll_interval": "0.01", **options}
    return Target("rep", "replicate", "replicate", fake.url, model, "REPLICATE_API_TOKEN", opts)


async def _drain(t, request):
    got = []
    async with httpx.AsyncClient() as client:
        try:
            async for chunk in ReplicateAdapter(t, client).stream(request):
                got.append(chunk)
        except BackendError as exc:
            return got, exc
    return got, None


def drain(t, request=None):
    return asyncio.run(_drain(t, request or InferenceRequest(prompt="Hi")))


def complete(t, request=None, **kw):
    async def go():
        async with httpx.AsyncClient() as client:
            return await ReplicateAdapter(t, client).complete(
                request or InferenceRequest(prompt="Hi", stream=False), **kw
            )

    return asyncio.run(go())


def failure(fn, *args, **kw) -> BackendError:
    with pytest.raises(BackendError) as info:
        fn(*args, **kw)
    return info.value


def text_of(chunks):
    return "".join(c.text for c in chunks)


def posts(fake, suffix="/predictions"):
    return [r for r in fake.requests if r.method == "POST" and r.path.endswith(suffix)]


# ---------------------------------------------------------------------------- blocking


def test_official_model_with_prefer_wait(fake):
    request = InferenceRequest(
        prompt="Hi", system="Be brief.", max_tokens=20, temperature=0.3, top_p=0.8, seed=3,
        stop=("###", "END"), stream=False,
    )  # fmt: skip
    done = complete(target(fake, **{"param.top_k": "50"}), request)
    assert done.text == "Hello, world!" and done.finish_reason == "stop"
    assert (done.usage.input_tokens, done.usage.output_tokens) == (8, 3)
    [sent] = posts(fake)
    assert sent.path == "/v1/models/meta/meta-llama-3-8b-instruct/predictions"
    assert sent.headers["prefer"] == "wait=60"
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent.json() == {
        "input": {
            "prompt": "Hi",
            "system_prompt": "Be brief.",
            "max_tokens": 20,
            "temperature": 0.3,
            "top_p": 0.8,
            "seed": 3,
            "stop_sequences": "###,END",
            "top_k": 50,
        }
    }


def test_version_and_deployment_routes(fake):
    assert complete(target(fake, model="acme/llm:5c7d5dc6dd8b")).text == "Hello, world!"
    sent = posts(fake)[-1]
    assert sent.path == "/v1/predictions" and sent.json()["version"] == "5c7d5dc6dd8b"
    assert complete(target(fake, version="abc123")).text == "Hello, world!"
    assert posts(fake)[-1].json()["version"] == "abc123"
    assert complete(target(fake, deployment="acme/prod-llm")).text == "Hello, world!"
    assert posts(fake)[-1].path == "/v1/deployments/acme/prod-llm/predictions"
    err = failure(complete, target(fake, model="just-a-name"))
    assert err.kind is FailureKind.CLIENT and "owner/name" in str(err)


def test_chat_history_prefix_and_input_field_name(fake):
    request = InferenceRequest(
        prompt="And now?", max_tokens=9, assistant_prefix="Well,",
        history=(Message("system", "Rules."), Message("user", "Hi"), Message("assistant", "Hey")),
    )  # fmt: skip
    complete(target(fake, max_tokens_field="max_new_tokens"), request)
    sent = posts(fake)[-1].json()["input"]
    assert sent["prompt"] == "User: Hi\n\nAssistant: Hey\n\nUser: And now?\n\nAssistant: Well,"
    assert sent["system_prompt"] == "Rules." and sent["max_new_tokens"] == 9


def test_polls_until_done_with_one_creation(fake):
    fake.default = Script(polls=3, poll_errors=2)
    done = complete(target(fake))
    assert done.text == "Hello, world!" and done.usage.output_tokens == 3
    assert fake.created == 1 and len(posts(fake)) == 1
    gets = [r for r in fake.requests if r.method == "GET"]
    assert len(gets) == 6  # two 503s retried, three "processing", then "succeeded"


def test_prefer_wait_stays_below_our_own_patience(fake):
    complete(target(fake), first_byte_timeout=10.0)
    assert posts(fake)[-1].headers["prefer"] == "wait=9"
    complete(target(fake), deadline=time.monotonic() + 0.5)
    assert "prefer" not in posts(fake)[-1].headers
    complete(target(fake, wait="5"))
    assert posts(fake)[-1].headers["prefer"] == "wait=5"


def test_deadline_while_polling_cancels_the_prediction(fake):
    fake.default = Script(polls=10_000)
    err = failure(complete, target(fake), deadline=time.monotonic() + 0.3)
    assert err.kind is FailureKind.TIMEOUT
    assert fake.created == 1 and fake.cancels == list(fake.predictions)
    [pred] = fake.predictions.values()
    assert pred["status"] == "canceled"


def test_router_cancellation_cancels_the_prediction(fake):
    fake.default = Script(polls=10_000)

    async def go():
        async with httpx.AsyncClient() as client:
            adapter = ReplicateAdapter(target(fake), client)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(adapter.complete(InferenceRequest(prompt="Hi")), 0.3)

    asyncio.run(go())
    assert fake.cancels == list(fake.predictions) and fake.created == 1


def test_polling_limit_without_deadline(fake):
    fake.default = Script(polls=10_000)
    err = failure(complete, target(fake, timeout="0.2"))
    assert err.kind is FailureKind.TIMEOUT and fake.cancels


def test_look_ups_that_keep_failing_give_up_and_cancel(fake):
    fake.default = Script(polls=1, poll_errors=50)
    err = failure(complete, target(fake))
    assert err.kind is FailureKind.OVERLOADED
    assert fake.created == 1 and fake.cancels


def test_failed_prediction_is_server(fake):
    fake.default = Script(fail="CUDA out of memory", polls=1)
    err = failure(complete, target(fake))
    assert err.kind is FailureKind.SERVER and "CUDA out of memory" in str(err)
    assert fake.cancels == []  # already terminal: nothing to cancel


def test_bad_option_values_are_client(fake):
    err = failure(complete, target(fake, poll_interval="soon"))
    assert err.kind is FailureKind.CLIENT and "poll_interval" in str(err)


# ---------------------------------------------------------------------------- streaming


def test_stream_outputs_multiline_and_usage_from_metrics(fake):
    fake.default = Script(text=["Hel", "lo\nthere", " you"], usage=(12, 4), delay=0.01)
    chunks, err = drain(target(fake))
    assert err is None
    assert [c.text for c in chunks if c.text] == ["Hel", "lo\nthere", " you"]
    last = chunks[-1]
    assert last.finish_reason == "stop"
    assert (last.usage.input_tokens, last.usage.output_tokens) == (12, 4)
    created = posts(fake)[-1]
    assert created.json()["stream"] is True and "prefer" not in created.headers
    stream_get = next(r for r in fake.requests if r.path.startswith("/v1/streams/"))
    assert stream_get.headers["accept"] == "text/event-stream"
    assert fake.created == 1 and fake.cancels == []


def test_stream_error_event(fake):
    fake.default = Script(text=["par", "tial"], stream_error="Prediction interrupted")
    chunks, err = drain(target(fake))
    assert text_of(chunks) == "partial"
    assert err.kind is FailureKind.SERVER and "Prediction interrupted" in str(err)


def test_stream_done_with_a_cancel_reason(fake):
    fake.default = Script(done_reason="canceled")
    chunks, err = drain(target(fake))
    assert text_of(chunks) == "Hello, world!"
    assert err.kind is FailureKind.SERVER and "canceled" in str(err)


def test_cut_stream_keeps_partial_text_and_cancels(fake):
    fake.default = Script(text=["Hel", "lo", " world"], cut_after=2, delay=0.01)
    chunks, err = drain(target(fake))
    assert text_of(chunks) == "Hello" and err.kind is FailureKind.STREAM_CUT
    assert fake.cancels == list(fake.predictions) and fake.created == 1


def test_clean_close_before_done_is_stream_cut(fake):
    def no_done(req, res):
        res.stream(200, [b"event: output\nid: 1\ndata: x\n\n"])

    fake.route("GET", r"/v1/streams/(?P<id>[a-z0-9]+)", no_done)
    fake.routes.insert(0, fake.routes.pop())
    chunks, err = drain(target(fake))
    assert text_of(chunks) == "x" and err.kind is FailureKind.STREAM_CUT


def test_model_without_stream_url_is_polled(fake):
    fake.default = Script(streamable=False, polls=2)
    chunks, err = drain(target(fake))
    assert err is None and text_of(chunks) == "Hello, world!"
    assert chunks[-1].usage.output_tokens == 3
    fake.default = Script(streamable=False, fail="bad input")
    chunks, err = drain(target(fake))
    assert chunks == [] and err.kind is FailureKind.SERVER


# ---------------------------------------------------------------------------- errors


def test_rate_limit_honours_retry_after_and_creates_nothing(fake):
    fake.queue = [Script(error="rate_limit", retry_after="3"), Script(error="rate_limit")]
    err = failure(complete, target(fake))
    assert err.kind is FailureKind.RATE_LIMIT and err.status == 429 and err.retry_after == 3.0
    assert "throttled" in str(err)
    chunks, err = drain(target(fake))
    assert chunks == [] and err.kind is FailureKind.RATE_LIMIT
    assert fake.created == 0


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ("server_error", FailureKind.SERVER),
        ("quota", FailureKind.QUOTA),
        ("invalid", FailureKind.CLIENT),
    ],
)
def test_creation_errors_are_classified(fake, error, kind):
    fake.queue = [Script(error=error)]
    err = failure(complete, target(fake))
    assert err.kind is kind and fake.created == 0


def test_malformed_creation_answer(fake):
    fake.queue = [Script(malformed=True)]
    assert failure(complete, target(fake)).kind is FailureKind.MALFORMED


def test_auth_failure_and_missing_token(fake, monkeypatch):
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_WRONGwrongWRONGwrong")
    err = failure(complete, target(fake))
    assert err.kind is FailureKind.AUTH and err.status == 401
    assert "valid authentication token" in str(err) and "r8_WRONG" not in str(err)
    monkeypatch.delenv("REPLICATE_API_TOKEN")
    fake.requests.clear()
    err = failure(complete, target(fake))
    assert err.kind is FailureKind.AUTH and "REPLICATE_API_TOKEN" in str(err)
    assert fake.requests == []


def test_health(fake, monkeypatch):
    async def probe(t):
        async with httpx.AsyncClient() as client:
            return await ReplicateAdapter(t, client).health()

    assert asyncio.run(probe(target(fake))) is True
    assert fake.requests[-1].path == "/v1/account"
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_bad")
    assert asyncio.run(probe(target(fake))) is False
    monkeypatch.delenv("REPLICATE_API_TOKEN")
    assert asyncio.run(probe(target(fake))) is False


# ---------------------------------------------------------------------------- odd shapes


def test_string_output_and_missing_metrics(fake):
    fake.default = Script(output_string=True)
    assert complete(target(fake)).text == "Hello, world!"

    def bare(req, res):
        res.send_json(201, {"id": "abc", "status": "succeeded", "output": None, "metrics": None})

    fake.route("POST", r"/v1/models/bare/model/predictions", bare)
    fake.routes.insert(0, fake.routes.pop())
    done = complete(target(fake, model="bare/model"))
    assert done.text == "" and done.usage.input_tokens is None


def test_prediction_without_id_is_malformed(fake):
    fake.route("POST", r"/v1/models/noid/model/predictions", lambda q, r: r.send_json(201, {}))
    fake.routes.insert(0, fake.routes.pop())
    assert failure(complete, target(fake, model="noid/model")).kind is FailureKind.MALFORMED


def test_prediction_canceled_elsewhere_is_server(fake):
    fake.default = Script(canceled=True, polls=1)
    err = failure(complete, target(fake))
    assert err.kind is FailureKind.SERVER and "canceled" in str(err)


def test_stream_event_variants(fake):
    fake.default = Script(
        raw_events=[
            b"event: output\nid: 1\ndata:\n\n",  # an empty output is skipped
            b"event: output\nid: 2\ndata: ok\n\n",
            b"event: done\nid: 3\ndata: not json\n\n",  # unreadable done data: still done
        ]
    )
    chunks, err = drain(target(fake))
    assert err is None and [c.text for c in chunks if c.text] == ["ok"]
    assert chunks[-1].usage.output_tokens == 3
    for data, expected in (
        (b"plain words", "plain words"),
        (b'"quoted"', "quoted"),
        (b"", "error in stream"),
    ):
        fake.default = Script(raw_events=[b"event: error\nid: 1\ndata: " + data + b"\n\n"])
        chunks, err = drain(target(fake))
        assert err.kind is FailureKind.SERVER and expected in str(err)
