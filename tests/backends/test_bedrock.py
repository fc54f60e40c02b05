"""BedrockAdapter against the loopback Bedrock Runtime, which verifies every SigV4 signature."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import sys
import time

import httpx
import pytest

from batuta.backends.bedrock import BedrockAdapter, sign
from batuta.backends.types import InferenceRequest, Message, Target
from batuta.errors import BackendError, FailureKind, NotInstalledError
from tests.fakes.bedrock_server import BedrockFake, Script, encode_frame, event_frame

MODEL = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
SECRET = "fake/Secret+Key/0123456789abcdefghijklmn"


@pytest.fixture(scope="module")
def server():
    with BedrockFake(secret_key=SECRET) as running:
        yield running


@pytest.fixture
def fake(server):
    server.reset()
    return server


@pytest.fixture
def creds(monkeypatch, fake):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", fake.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    for name in (
        "AWS_SESSION_TOKEN",
        "AWS_BEARER_TOKEN_BEDROCK",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
    ):
        monkeypatch.delenv(name, raising=False)


def target(fake, **options) -> Target:
    return Target(
        name="claude",
        backend="bedrock",
        protocol="bedrock",
        base_url=fake.url,
        model=MODEL,
        api_key_env="AWS_ACCESS_KEY_ID",
        options={"region": "us-east-1", **options},
    )


async def _drain(t: Target, request: InferenceRequest, **kw):
    got = []
    async with httpx.AsyncClient() as client:
        try:
            async for chunk in BedrockAdapter(t, client).stream(request, **kw):
                got.append(chunk)
        except BackendError as exc:
            return got, exc
    return got, None


def drain(t, request=None, **kw):
    return asyncio.run(_drain(t, request or InferenceRequest(prompt="Hi"), **kw))


def complete(t, request=None, **kw):
    async def go():
        async with httpx.AsyncClient() as client:
            return await BedrockAdapter(t, client).complete(
                request or InferenceRequest(prompt="Hi", stream=False), **kw
            )

    return asyncio.run(go())


def failure(fn, *args, **kw) -> BackendError:
    with pytest.raises(BackendError) as info:
        fn(*args, **kw)
    return info.value


def text_of(chunks):
    return "".join(c.text for c in chunks)


# ---------------------------------------------------------------------------- happy paths


def test_converse_text_usage_and_request_shape(fake, creds):
    request = InferenceRequest(
        prompt="Hi",
        system="Be brief.",
        max_tokens=64,
        temperature=0.5,
        top_p=0.9,
        stop=("###",),
        history=(
            Message("user", "Earlier"),
            Message("assistant", "Sure"),
            Message("system", "Also"),
        ),
        stream=False,
    )
    done = complete(target(fake, **{"param.top_k": "40"}), request)
    assert done.text == "Hello, world!"
    assert done.finish_reason == "stop"
    assert (done.usage.input_tokens, done.usage.output_tokens) == (7, 3)
    assert fake.auth_failures == []
    sent = fake.requests[-1]
    assert sent.path == "/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
    body = sent.json()
    assert body["system"] == [{"text": "Be brief."}, {"text": "Also"}]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][-1]["content"] == [{"text": "Hi"}]
    assert body["inferenceConfig"] == {  # Claude: temperature, never with topP
        "maxTokens": 64,
        "temperature": 0.5,
        "stopSequences": ["###"],
    }
    assert body["additionalModelRequestFields"] == {"top_k": 40}
    auth = sent.headers["authorization"]
    assert auth.startswith(f"AWS4-HMAC-SHA256 Credential={fake.access_key}/")
    assert "/us-east-1/bedrock/aws4_request" in auth
    assert "SignedHeaders=content-type;host;x-amz-date," in auth


def test_converse_stream_text_usage_and_finish(fake, creds):
    fake.default = Script(text=["Hel", "lo", " there"], usage=(11, 5), delay=0.01)
    chunks, err = drain(target(fake))
    assert err is None
    assert [c.text for c in chunks[:-1]] == ["Hel", "lo", " there"]
    last = chunks[-1]
    assert last.finish_reason == "stop"
    assert (last.usage.input_tokens, last.usage.output_tokens) == (11, 5)
    assert fake.requests[-1].path.endswith("%3A0/converse-stream")
    assert fake.auth_failures == []


def test_stream_frames_split_at_odd_sizes_still_decode(fake, creds):
    fake.default = Script(text=["a", "b", "c", "d"], chunk_size=7)
    chunks, err = drain(target(fake))
    assert err is None and text_of(chunks) == "abcd"
    assert chunks[-1].usage.output_tokens == 3


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("max_tokens", "length"),
        ("content_filtered", "content_filter"),
        ("guardrail_intervened", "content_filter"),
        ("tool_use", "tool_calls"),
        ("stop_sequence", "stop"),
    ],
)
def test_stop_reasons_map_to_one_vocabulary(fake, creds, stop, finish):
    fake.default = Script(stop_reason=stop)
    assert complete(target(fake)).finish_reason == finish
    chunks, _ = drain(target(fake))
    assert chunks[-1].finish_reason == finish


def test_stream_close_after_message_stop_without_metadata_is_complete(fake, creds):
    fake.default = Script(skip_metadata=True)
    chunks, err = drain(target(fake))
    assert err is None
    assert chunks[-1].finish_reason == "stop" and chunks[-1].usage is None


def test_unknown_events_and_nameless_frames_are_ignored(fake, creds):
    fake.default = Script(
        raw_frames=[
            event_frame("messageStart", {"role": "assistant"}),
            encode_frame({":message-type": "event"}, b"{}"),  # no :event-type
            event_frame("contentBlockStart", {"start": {"toolUse": {}}}),
            event_frame("contentBlockDelta", {"delta": {"reasoningContent": {"text": "hmm"}}}),
            event_frame("contentBlockDelta", {"delta": {"text": "ok"}}),
            event_frame("messageStop", {"stopReason": "end_turn"}),
            event_frame("metadata", {"usage": {"inputTokens": 1, "outputTokens": 1}}),
        ]
    )
    chunks, err = drain(target(fake))
    assert err is None and text_of(chunks) == "ok"


def test_assistant_prefix_sent_without_trailing_space_and_not_repeated(fake, creds):
    fake.default = Script(text=[" world", "!"])
    request = InferenceRequest(prompt="Say hello world", assistant_prefix="Hello ")
    chunks, err = drain(target(fake), request)
    assert err is None and text_of(chunks) == "world!"
    assert fake.requests[-1].json()["messages"][-1] == {
        "role": "assistant",
        "content": [{"text": "Hello"}],
    }
    fake.default = Script(text=[" world"])
    done = complete(target(fake), InferenceRequest(prompt="x", assistant_prefix="Hello "))
    assert done.text == "world"


def test_whitespace_the_model_adds_at_the_join_is_kept(fake, creds):
    # The prefix ends in one space (not sent); the model opens a new paragraph.
    fake.default = Script(text=["\n\n", "Next paragraph."])
    request = InferenceRequest(prompt="x", assistant_prefix="Done. ")
    chunks, err = drain(target(fake), request)
    assert err is None and text_of(chunks) == "\n\nNext paragraph."
    # The prefix ends in a newline: the model's first one repeats it, the second is new,
    # even when they arrive in separate deltas.
    fake.default = Script(text=["\n", "\n", "Next."])
    chunks, err = drain(target(fake), InferenceRequest(prompt="x", assistant_prefix="Done.\n"))
    assert err is None and text_of(chunks) == "\nNext."
    fake.default = Script(text=["\n\nNext."])
    done = complete(target(fake), InferenceRequest(prompt="x", assistant_prefix="Done.\n"))
    assert done.text == "\nNext."


def test_claude_gets_only_what_it_accepts(fake, creds):
    fake.default = Script(text=["Line one.", "\n", "Line two."])
    request = InferenceRequest(prompt="x", temperature=1.5, top_p=0.9, stop=("\n", "###"))
    done = complete(target(fake), request)
    assert done.text == "Line one." and done.finish_reason == "stop"
    config = fake.requests[-1].json()["inferenceConfig"]
    assert config == {"temperature": 1.0, "stopSequences": ["###"]}
    chunks, err = drain(target(fake), request)
    assert err is None and text_of(chunks) == "Line one." and chunks[-1].finish_reason == "stop"
    error = failure(complete, target(fake), InferenceRequest(prompt="x", temperature=-1.0))
    assert error.kind is FailureKind.CLIENT
    # Other models keep both knobs and whitespace stops.
    other = Target("llama", "bedrock", "bedrock", fake.url, "meta.llama3-8b-instruct-v1:0",
                   api_key_env="AWS_ACCESS_KEY_ID", options={"region": "us-east-1"})  # fmt: skip
    complete(other, request)
    config = fake.requests[-1].json()["inferenceConfig"]
    assert config == {"temperature": 1.5, "topP": 0.9, "stopSequences": ["\n", "###"]}


def test_a_model_refusing_prefill_is_asked_to_continue_in_a_user_turn(fake, creds):
    fake.no_prefill = {MODEL}
    fake.default = Script(text=[" scripted answer."])
    shown = "Hello world, this is a"
    request = InferenceRequest(prompt="Q", assistant_prefix=shown)
    chunks, err = drain(target(fake), request)
    assert err is None and text_of(chunks) == " scripted answer."
    refused, asked = (r.json() for r in fake.requests)
    assert refused["messages"][-1]["role"] == "assistant"
    assert [m["role"] for m in asked["messages"]] == ["user", "assistant", "user"]
    assert asked["messages"][1]["content"] == [{"text": shown}]
    assert "Continue it exactly" in asked["messages"][2]["content"][0]["text"]
    assert complete(target(fake), request).text == " scripted answer."
    assert len(fake.requests) == 4  # a fresh adapter is refused once, then asks that way


def test_base_url_template_and_region_from_environment(fake, creds, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")

    async def go():
        async with httpx.AsyncClient() as client:
            t = Target(
                "b", "bedrock", "bedrock", "https://bedrock-runtime.{region}.amazonaws.com", "m"
            )
            a = BedrockAdapter(t, client)
            return a.region(), a.url("converse", "arn:aws:bedrock:x/y")

    region, url = asyncio.run(go())
    assert region == "eu-west-3"
    assert (
        url
        == "https://bedrock-runtime.eu-west-3.amazonaws.com/model/arn%3Aaws%3Abedrock%3Ax%2Fy/converse"
    )
    t = Target(
        "b", "bedrock", "bedrock", "https://bedrock-runtime-fips.us-west-2.amazonaws.com", "m"
    )
    assert BedrockAdapter(t, httpx.AsyncClient()).region() == "us-west-2"
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    no_region = Target("b", "bedrock", "bedrock", fake.url, "m")
    err = failure(drain_raise, no_region)
    assert err.kind is FailureKind.CLIENT and "region" in str(err)


def drain_raise(t):
    chunks, err = drain(t)
    if err:
        raise err
    return chunks


# ---------------------------------------------------------------------------- signing


def test_signature_matches_botocore_signing_the_same_request(fake, creds, monkeypatch):
    """With the signer's clock fixed, botocore's own signing of the same request gives
    exactly the Authorization the adapter sent (and the fake accepted)."""
    import botocore.auth
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    fixed = dt.datetime(2024, 5, 1, 12, 0, 0)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: fixed)
    fake.check_clock = False
    complete(target(fake))
    sent = fake.requests[-1]
    assert fake.auth_failures == []
    assert sent.headers["x-amz-date"] == "20240501T120000Z"

    url = f"{fake.url}{sent.path}"
    reference = AWSRequest(
        method="POST", url=url, data=sent.body, headers={"Content-Type": "application/json"}
    )
    signer = SigV4Auth(Credentials(fake.access_key, SECRET), "bedrock", "us-east-1")
    signer.add_auth(reference)
    assert sent.headers["authorization"] == reference.headers["Authorization"]
    # The model id's %3A is encoded once more in the canonical URI, as AWS expects.
    assert "/model/us.anthropic.claude-3-5-haiku-20241022-v1%253A0/converse" in (
        signer.canonical_request(reference)
    )
    assert (
        sign(
            "POST",
            url,
            sent.body,
            {"Content-Type": "application/json"},
            access_key=fake.access_key,
            secret_key=SECRET,
            session_token=None,
            region="us-east-1",
        )["Authorization"]
        == sent.headers["authorization"]
    )


def test_a_signature_with_the_wrong_secret_is_rejected_as_auth(fake, creds, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not/the/right/secret/value/at/all/0000")
    err = failure(complete, target(fake))
    assert err.kind is FailureKind.AUTH and err.status == 403
    assert "InvalidSignatureException" in str(err) and "signature we calculated" in str(err)
    assert err.request_id
    assert fake.auth_failures == ["InvalidSignatureException"]
    assert "not/the/right" not in str(err) and SECRET not in str(err)


def test_unknown_access_key_and_wrong_region_are_auth(fake, creds, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWN000000000")
    err = failure(complete, target(fake))
    assert err.kind is FailureKind.AUTH and "UnrecognizedClientException" in str(err)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", fake.access_key)
    chunks, err = drain(target(fake, region="eu-central-1"))
    assert chunks == [] and err.kind is FailureKind.AUTH
    assert "InvalidSignatureException" in str(err)


def test_session_token_is_sent_and_signed(fake, creds, monkeypatch):
    fake.session_token = "FwoGZXIvYXdzEFAKESESSIONTOKEN"
    monkeypatch.setenv("AWS_SESSION_TOKEN", fake.session_token)
    assert complete(target(fake)).text == "Hello, world!"
    sent = fake.requests[-1]
    assert sent.headers["x-amz-security-token"] == fake.session_token
    assert "x-amz-security-token" in sent.headers["authorization"]
    monkeypatch.setenv("AWS_SESSION_TOKEN", "FwoGZXIvYXdzEXPIREDTOKEN00")
    err = failure(complete, target(fake))
    assert err.kind is FailureKind.AUTH and "FwoGZXIvYXdzEXPIRED" not in str(err)


def test_missing_credentials_fail_as_auth_without_calling(fake, creds, monkeypatch):
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    err = failure(complete, target(fake))
    assert err.kind is FailureKind.AUTH
    assert "AWS_SECRET_ACCESS_KEY" in str(err) and fake.access_key not in str(err)
    assert fake.requests == []


def test_missing_botocore_is_not_installed_error(fake, creds, monkeypatch):
    monkeypatch.setitem(sys.modules, "botocore.auth", None)
    with pytest.raises(NotInstalledError, match=r"pip install 'batuta\[bedrock\]'"):
        complete(target(fake))


def test_bearer_api_key_form(fake, creds, monkeypatch):
    fake.bearer_token = "ABSKQmVkcm9ja0FQSUtleS1fake0000"
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", fake.bearer_token)
    chunks, err = drain(target(fake))
    assert err is None and text_of(chunks) == "Hello, world!"
    sent = fake.requests[-1]
    assert sent.headers["authorization"] == f"Bearer {fake.bearer_token}"
    assert "x-amz-date" not in sent.headers
    # auth: sigv4 forces signing even with the bearer variable set
    assert complete(target(fake, auth="sigv4")).text == "Hello, world!"
    assert fake.requests[-1].headers["authorization"].startswith("AWS4-HMAC-SHA256")
    # a wrong API key: AUTH, and the key never appears in the error
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "ABSKwrongwrongwrong0000")
    err = failure(complete, target(fake))
    assert err.kind is FailureKind.AUTH and "ABSKwrong" not in str(err)


def test_bearer_form_named_by_options(fake, creds, monkeypatch):
    fake.bearer_token = "ABSKbyoption00000000"
    monkeypatch.setenv("MY_BEDROCK_KEY", fake.bearer_token)
    t = target(fake, auth="bedrock-bearer", token_env="MY_BEDROCK_KEY")
    assert complete(t).text == "Hello, world!"
    monkeypatch.delenv("MY_BEDROCK_KEY")
    err = failure(complete, t)
    assert err.kind is FailureKind.AUTH and "MY_BEDROCK_KEY" in str(err)
    err = failure(complete, target(fake, auth="kerberos"))
    assert err.kind is FailureKind.CLIENT


# ---------------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("error", "kind", "status"),
    [
        ("ThrottlingException", FailureKind.RATE_LIMIT, 429),
        ("ModelNotReadyException", FailureKind.OVERLOADED, 429),
        ("ServiceUnavailableException", FailureKind.OVERLOADED, 503),
        ("InternalServerException", FailureKind.SERVER, 500),
        ("ModelTimeoutException", FailureKind.SERVER, 408),
        ("ModelErrorException", FailureKind.SERVER, 424),
        ("ValidationException", FailureKind.CLIENT, 400),
        ("ResourceNotFoundException", FailureKind.CLIENT, 404),
        ("ServiceQuotaExceededException", FailureKind.QUOTA, 400),
        ("AccessDeniedException", FailureKind.AUTH, 403),
    ],
)
def test_http_errors_are_classified_by_error_type(fake, creds, error, kind, status):
    fake.queue = [Script(error=error), Script(error=error)]
    err = failure(complete, target(fake))
    assert (err.kind, err.status) == (kind, status)
    assert error in str(err) and err.request_id
    chunks, err = drain(target(fake))
    assert chunks == [] and err.kind is kind


def test_throttling_then_success(fake, creds):
    fake.queue = [Script(error="ThrottlingException")]
    err = failure(complete, target(fake))
    assert err.kind is FailureKind.RATE_LIMIT and err.kind.retryable
    assert "Too many requests" in str(err)
    assert complete(target(fake)).text == "Hello, world!"


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("throttlingException", FailureKind.RATE_LIMIT),
        ("serviceUnavailableException", FailureKind.OVERLOADED),
        ("validationException", FailureKind.CLIENT),
        ("modelStreamErrorException", FailureKind.SERVER),
        ("internalServerException", FailureKind.SERVER),
        ("someNewException", FailureKind.SERVER),
    ],
)
def test_in_stream_exception_after_text(fake, creds, name, kind):
    fake.default = Script(text=["par", "tial"], exception=name, message="it broke")
    chunks, err = drain(target(fake))
    assert text_of(chunks) == "partial"
    assert err.kind is kind and name in str(err) and "it broke" in str(err)


def test_in_stream_error_message_frame(fake, creds):
    error = encode_frame(
        {":message-type": "error", ":error-code": "InternalFailure", ":error-message": "boom"}, b""
    )
    fake.default = Script(
        raw_frames=[event_frame("contentBlockDelta", {"delta": {"text": "x"}}), error]
    )
    chunks, err = drain(target(fake))
    assert text_of(chunks) == "x"
    assert err.kind is FailureKind.SERVER and "InternalFailure" in str(err) and "boom" in str(err)


@pytest.mark.parametrize("which", ["prelude", "message"])
def test_corrupt_crc_mid_stream_is_malformed(fake, creds, which):
    fake.default = Script(text=["one", "two", "three"], corrupt=which, corrupt_at=2, chunk_size=5)
    chunks, err = drain(target(fake))
    assert text_of(chunks) == "one"
    assert err.kind is FailureKind.MALFORMED and f"{which} CRC" in str(err)


def test_cut_mid_frame_is_stream_cut_with_partial_text(fake, creds):
    fake.default = Script(text=["Hel", "lo", " more"], cut_after=3, cut_mid_frame=True, delay=0.01)
    chunks, err = drain(target(fake))
    assert text_of(chunks) == "Hello"
    assert err.kind is FailureKind.STREAM_CUT


def test_clean_close_mid_frame_is_stream_cut(fake, creds):
    half = event_frame("contentBlockDelta", {"delta": {"text": "lost"}})
    fake.default = Script(
        raw_frames=[event_frame("contentBlockDelta", {"delta": {"text": "kept"}}), half[:9]]
    )
    chunks, err = drain(target(fake))
    assert text_of(chunks) == "kept"
    assert err.kind is FailureKind.STREAM_CUT and "mid-frame" in str(err)


def test_cut_between_frames_is_stream_cut(fake, creds):
    fake.default = Script(text=["a", "b"], cut_after=2)
    chunks, err = drain(target(fake))
    assert text_of(chunks) == "a" and err.kind is FailureKind.STREAM_CUT


def test_clean_close_before_message_stop_is_stream_cut(fake, creds):
    fake.default = Script(raw_frames=[event_frame("contentBlockDelta", {"delta": {"text": "a"}})])
    chunks, err = drain(target(fake))
    assert text_of(chunks) == "a" and err.kind is FailureKind.STREAM_CUT


def test_malformed_converse_bodies(fake, creds):
    fake.queue = [Script(malformed=True)]
    assert failure(complete, target(fake)).kind is FailureKind.MALFORMED
    fake.prepend(
        "POST", r"/model/odd/converse", lambda req, res: res.send_json(200, {"output": {}})
    )
    t = Target("b", "bedrock", "bedrock", fake.url, "odd", options={"region": "us-east-1"})
    assert failure(complete, t).kind is FailureKind.MALFORMED


def test_deadline_mid_stream_is_timeout(fake, creds):
    fake.default = Script(text=["a", "b", "c", "d"], delay=0.3)
    started = time.monotonic()
    _chunks, err = drain(target(fake), deadline=time.monotonic() + 0.5)
    assert err.kind is FailureKind.TIMEOUT
    assert time.monotonic() - started < 2.0


def test_no_first_byte_in_time_is_timeout(fake, creds):
    def slow(req, res):
        time.sleep(0.6)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            res.send_json(200, {})

    fake.prepend("POST", r"/model/slow/converse", slow)
    t = Target("b", "bedrock", "bedrock", fake.url, "slow", options={"region": "us-east-1"})
    err = failure(complete, t, first_byte_timeout=0.2)
    assert err.kind is FailureKind.TIMEOUT


def test_connection_refused_is_connect(creds, free_port):
    t = Target(
        "b",
        "bedrock",
        "bedrock",
        f"http://127.0.0.1:{free_port}",
        MODEL,
        options={"region": "us-east-1"},
    )
    assert failure(complete, t).kind is FailureKind.CONNECT


# ---------------------------------------------------------------------------- health


def test_health_is_a_one_token_converse(fake, creds, monkeypatch):
    async def probe(t):
        async with httpx.AsyncClient() as client:
            return await BedrockAdapter(t, client).health()

    assert asyncio.run(probe(target(fake))) is True
    assert fake.requests[-1].json()["inferenceConfig"] == {"maxTokens": 1}
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong/wrong/wrong/wrong/wrong/wrong/00")
    assert asyncio.run(probe(target(fake))) is False
    monkeypatch.setitem(sys.modules, "botocore.auth", None)
    assert asyncio.run(probe(target(fake))) is False


def test_request_body_is_exactly_what_was_signed(fake, creds):
    complete(target(fake))
    sent = fake.requests[-1]
    assert json.loads(sent.body)["messages"][0]["content"] == [{"text": "Hi"}]
    assert int(sent.headers["content-length"]) == len(sent.body)


# ---------------------------------------------------------------------------- in a route


def test_route_retries_throttling_then_continues_a_cut_stream_elsewhere(fake, creds, monkeypatch):
    """The real router over two providers: a throttled Bedrock call is retried, then its
    stream dies mid-frame and Gemini continues the answer from the text already shown."""
    from batuta.router.engine import Router
    from batuta.routing.table import RouteEntry, TargetEntry
    from tests.fakes.gemini_server import GeminiFake
    from tests.fakes.gemini_server import Script as GeminiScript

    monkeypatch.setenv("GEMINI_API_KEY", "AIzaSyFAKE-gemini-key-0000000000000000")
    fake.queue = [
        Script(error="ThrottlingException"),
        Script(text=["Hel", "lo", " wor"], cut_after=3, cut_mid_frame=True),
    ]
    slept: list[float] = []

    async def no_sleep(seconds: float) -> None:
        slept.append(seconds)

    with GeminiFake() as gem:
        gem.default = GeminiScript(text=[" world", "!"])
        route = RouteEntry(
            name="cloud", latency="interactive", privacy="standard", cost="balanced",
            targets=(
                TargetEntry("claude", "bedrock", "bedrock", fake.url, MODEL, False,
                            "AWS_ACCESS_KEY_ID", {"region": "us-east-1"}),
                TargetEntry("gem", "gemini", "gemini", gem.url, "gemini-2.5-flash", False,
                            "GEMINI_API_KEY"),
            ),
            timeout=10.0, retries=1,
        )  # fmt: skip

        async def go():
            async with Router(sleep=no_sleep) as router:
                return await router.query(route, InferenceRequest(prompt="Say hello world"))

        answer = asyncio.run(go())
        continued = gem.requests[-1].json()["contents"][-1]
    assert answer.text == "Hello world!"
    assert answer.failed_over_from == ["claude"] and answer.target == "gem"
    assert len(slept) == 1  # the throttled call was retried once, after a backoff
    assert continued == {"role": "model", "parts": [{"text": "Hello"}]}
