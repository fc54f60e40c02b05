"""GeminiAdapter against the loopback Gemini Developer API and Vertex AI."""

from __future__ import annotations

import asyncio
import sys
import types

import httpx
import pytest

from batuta.backends import gemini as gemini_module
from batuta.backends.gemini import GeminiAdapter
from batuta.backends.types import InferenceRequest, Message, Target
from batuta.errors import BackendError, FailureKind, NotInstalledError
from tests.fakes.gemini_server import GeminiFake, Script

KEY = "AIzaSyFAKE-gemini-key-0000000000000000"
TOKEN = "ya29.fake-vertex-access-token"


@pytest.fixture(scope="module")
def server():
    with GeminiFake(api_key=KEY, access_token=TOKEN) as running:
        yield running


@pytest.fixture
def fake(server, monkeypatch):
    server.reset()
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    monkeypatch.setenv("VERTEX_ACCESS_TOKEN", TOKEN)
    for name in ("GOOGLE_API_KEY", "GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_LOCATION"):
        monkeypatch.delenv(name, raising=False)
    return server


def developer(fake, model="gemini-2.5-flash", **options) -> Target:
    return Target("gem", "gemini", "gemini", fake.url, model, "GEMINI_API_KEY", dict(options))


def vertex(fake, **options) -> Target:
    opts = {"project": "acme-prod", "location": "us-central1", **options}
    return Target(
        "vtx", "vertex", "gemini", fake.url, "gemini-2.5-flash", "VERTEX_ACCESS_TOKEN", opts
    )


async def _drain(t, request):
    got = []
    async with httpx.AsyncClient() as client:
        try:
            async for chunk in GeminiAdapter(t, client).stream(request):
                got.append(chunk)
        except BackendError as exc:
            return got, exc
    return got, None


def drain(t, request=None):
    return asyncio.run(_drain(t, request or InferenceRequest(prompt="Hi")))


def complete(t, request=None):
    async def go():
        async with httpx.AsyncClient() as client:
            return await GeminiAdapter(t, client).complete(request or InferenceRequest(prompt="Hi"))

    return asyncio.run(go())


def health(t) -> bool:
    async def go():
        async with httpx.AsyncClient() as client:
            return await GeminiAdapter(t, client).health()

    return asyncio.run(go())


def failure(fn, *args) -> BackendError:
    with pytest.raises(BackendError) as info:
        fn(*args)
    return info.value


def text_of(chunks):
    return "".join(c.text for c in chunks)


# ---------------------------------------------------------------------------- developer API


def test_developer_text_and_request_shape(fake):
    request = InferenceRequest(
        prompt="Hi",
        system="Be brief.",
        max_tokens=32,
        temperature=0.2,
        top_p=0.9,
        seed=7,
        stop=("###",),
        history=(
            Message("user", "Earlier"),
            Message("assistant", "Yes"),
            Message("system", "More"),
        ),
        assistant_prefix="Hel",
    )
    done = complete(developer(fake, **{"param.topK": "40"}), request)
    assert done.text == "Hello, world!" and done.finish_reason == "stop"
    assert (done.usage.input_tokens, done.usage.output_tokens) == (6, 3)
    sent = fake.requests[-1]
    assert sent.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert sent.headers["x-goog-api-key"] == KEY and "key" not in sent.query
    body = sent.json()
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "More"}]}
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user", "model"]
    assert body["contents"][-1] == {"role": "model", "parts": [{"text": "Hel"}]}
    assert body["generationConfig"] == {
        "maxOutputTokens": 32,
        "temperature": 0.2,
        "topP": 0.9,
        "seed": 7,
        "stopSequences": ["###"],
        "topK": 40,
    }


def test_a_model_refusing_a_final_model_turn_is_asked_to_continue(fake):
    fake.no_trailing_model = {"gemini-3-pro"}
    fake.default = Script(text=["lo, world!"])
    request = InferenceRequest(prompt="Hi", assistant_prefix="Hel")
    chunks, error = drain(developer(fake, model="gemini-3-pro"), request)
    assert error is None and text_of(chunks) == "lo, world!"
    refused, asked = (r.json() for r in fake.requests)
    assert refused["contents"][-1]["role"] == "model"
    assert [c["role"] for c in asked["contents"]] == ["user", "model", "user"]
    assert asked["contents"][1] == {"role": "model", "parts": [{"text": "Hel"}]}
    assert "Continue it exactly" in asked["contents"][2]["parts"][0]["text"]
    assert complete(vertex(fake), request).text == "lo, world!"  # others take the prefix
    # Another INVALID_ARGUMENT comes back in the continuation form too, and is raised.
    fake.requests.clear()
    fake.default = Script(error="invalid")
    assert failure(complete, developer(fake), request).kind is FailureKind.CLIENT
    assert len(fake.requests) == 2  # one retry in the continuation form, then raised


def test_developer_stream_skips_thoughts_and_counts_them_as_output(fake):
    fake.default = Script(text=["Hel", "lo"], thoughts=["thinking..."], usage=(6, 2), delay=0.01)
    chunks, err = drain(developer(fake))
    assert err is None
    assert [c.text for c in chunks if c.text] == ["Hel", "lo"]
    last = chunks[-1]
    assert last.finish_reason == "stop"
    assert (last.usage.input_tokens, last.usage.output_tokens) == (6, 4)
    sent = fake.requests[-1]
    assert sent.path == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert sent.query == {"alt": ["sse"]}


def test_model_names_with_prefix_and_versioned_base(fake):
    assert complete(developer(fake, model="models/gemini-2.5-flash")).text == "Hello, world!"
    assert fake.requests[-1].path == "/v1beta/models/gemini-2.5-flash:generateContent"
    t = Target(
        "gem", "gemini", "gemini", fake.url + "/v1beta", "gemini-2.5-flash", "GEMINI_API_KEY"
    )
    assert complete(t).text == "Hello, world!"


def test_max_tokens_finish_is_length(fake):
    fake.default = Script(finish="MAX_TOKENS")
    assert complete(developer(fake)).finish_reason == "length"


def test_safety_finish_is_content_filter_not_a_crash(fake):
    fake.default = Script(text=["I won't", ""], finish="SAFETY")
    chunks, err = drain(developer(fake))
    assert err is None and text_of(chunks) == "I won't"
    assert chunks[-1].finish_reason == "content_filter"
    assert complete(developer(fake)).finish_reason == "content_filter"


def test_blocked_prompt_has_no_candidates_and_finishes_as_content_filter(fake):
    fake.default = Script(blocked_prompt=True)
    chunks, err = drain(developer(fake))
    assert err is None and text_of(chunks) == ""
    assert chunks[-1].finish_reason == "content_filter"
    assert chunks[-1].usage.input_tokens == 6
    done = complete(developer(fake))
    assert (done.text, done.finish_reason) == ("", "content_filter")


def test_rate_limit_honours_retry_info(fake):
    fake.queue = [
        Script(error="rate_limit", retry_delay="7s"),
        Script(error="rate_limit", retry_delay="1.5s"),
    ]
    err = failure(complete, developer(fake))
    assert err.kind is FailureKind.RATE_LIMIT and err.status == 429 and err.retry_after == 7.0
    assert "RESOURCE_EXHAUSTED" in str(err) or "quota" in str(err)
    chunks, err = drain(developer(fake))
    assert chunks == [] and err.kind is FailureKind.RATE_LIMIT and err.retry_after == 1.5


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ("server_error", FailureKind.SERVER),
        ("unavailable", FailureKind.OVERLOADED),
        ("precondition", FailureKind.CLIENT),
    ],
)
def test_server_and_client_errors(fake, error, kind):
    fake.queue = [Script(error=error), Script(error=error)]
    assert failure(complete, developer(fake)).kind is kind
    chunks, err = drain(developer(fake))
    assert chunks == [] and err.kind is kind


def test_malformed_bodies(fake):
    fake.queue = [Script(malformed=True), Script(malformed=True)]
    assert failure(complete, developer(fake)).kind is FailureKind.MALFORMED
    chunks, err = drain(developer(fake))
    assert text_of(chunks) == "Hello, world" and err.kind is FailureKind.MALFORMED


def test_in_stream_error_event(fake):
    fake.default = Script(in_stream_error=True)
    chunks, err = drain(developer(fake))
    assert text_of(chunks) == "Hello, world"
    assert err.kind is FailureKind.SERVER and "internal error" in str(err)


def test_cut_stream_keeps_partial_text(fake):
    fake.default = Script(text=["Hel", "lo", " world"], cut_after=2, delay=0.01)
    chunks, err = drain(developer(fake))
    assert text_of(chunks) == "Hello" and err.kind is FailureKind.STREAM_CUT


def test_clean_close_without_finish_is_stream_cut(fake):
    def no_finish(req, res):
        res.stream(
            200, [b'data: {"candidates": [{"content": {"parts": [{"text": "a"}]}}]}\r\n\r\n']
        )

    fake.route("POST", r"/v1beta/models/nofinish:streamGenerateContent", no_finish)
    fake.routes.insert(0, fake.routes.pop())
    chunks, err = drain(developer(fake, model="nofinish"))
    assert text_of(chunks) == "a" and err.kind is FailureKind.STREAM_CUT


def test_non_object_answers_are_malformed(fake):
    fake.route(
        "POST", r"/v1beta/models/odd:generateContent", lambda req, res: res.send_json(200, [1])
    )
    fake.route(
        "POST", r"/v1beta/models/empty:generateContent", lambda req, res: res.send_json(200, {})
    )
    fake.routes[:0] = [fake.routes.pop(), fake.routes.pop()]
    assert failure(complete, developer(fake, model="odd")).kind is FailureKind.MALFORMED
    assert failure(complete, developer(fake, model="empty")).kind is FailureKind.MALFORMED


def test_bad_developer_key_is_auth_and_never_echoed(fake, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "AIzaSyWRONGWRONGWRONG")
    err = failure(complete, developer(fake))
    assert err.kind is FailureKind.AUTH and err.status == 400
    assert "API key not valid" in str(err) and "AIzaSyWRONG" not in str(err)
    chunks, err = drain(developer(fake))
    assert chunks == [] and err.kind is FailureKind.AUTH


def test_missing_developer_key_is_auth_without_a_request(fake, monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY")
    err = failure(complete, developer(fake))
    assert err.kind is FailureKind.AUTH and "GEMINI_API_KEY" in str(err)
    assert fake.requests == []
    monkeypatch.setenv("GOOGLE_API_KEY", KEY)  # the SDK's other variable works too
    assert complete(developer(fake)).text == "Hello, world!"


# ---------------------------------------------------------------------------- Vertex AI


def test_vertex_path_and_bearer_token(fake):
    chunks, err = drain(vertex(fake))
    assert err is None and text_of(chunks) == "Hello, world!"
    sent = fake.requests[-1]
    assert sent.path == (
        "/v1/projects/acme-prod/locations/us-central1/publishers/google/models/"
        "gemini-2.5-flash:streamGenerateContent"
    )
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert "x-goog-api-key" not in sent.headers
    assert complete(vertex(fake)).usage.output_tokens == 3


def test_vertex_token_env_option_and_bad_token(fake, monkeypatch):
    monkeypatch.setenv("MY_GCP_TOKEN", TOKEN)
    monkeypatch.delenv("VERTEX_ACCESS_TOKEN")
    assert complete(vertex(fake, token_env="MY_GCP_TOKEN")).text == "Hello, world!"
    monkeypatch.setenv("MY_GCP_TOKEN", "ya29.expired-token")
    err = failure(complete, vertex(fake, token_env="MY_GCP_TOKEN"))
    assert err.kind is FailureKind.AUTH and err.status == 401 and "ya29.expired" not in str(err)


def test_vertex_wrong_project_is_auth(fake):
    err = failure(complete, vertex(fake, project="someone-else"))
    assert err.kind is FailureKind.AUTH and err.status == 403


def test_vertex_project_from_environment_and_missing_project(fake, monkeypatch):
    t = Target("vtx", "vertex", "gemini", fake.url, "gemini-2.5-flash", "VERTEX_ACCESS_TOKEN",
               {"location": "us-central1"})  # fmt: skip
    err = failure(complete, t)
    assert err.kind is FailureKind.CLIENT and "options.project" in str(err)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "acme-prod")
    assert complete(t).text == "Hello, world!"


def test_vertex_hosts_and_resource_names(fake):
    async def url(t, model=None):
        async with httpx.AsyncClient() as client:
            return GeminiAdapter(t, client).url("generateContent", model)

    base = "https://{location}-aiplatform.googleapis.com/v1"
    regional = Target("v", "vertex", "gemini", base, "gemini-2.5-pro", None,
                      {"project": "p", "location": "europe-west4"})  # fmt: skip
    assert asyncio.run(url(regional)) == (
        "https://europe-west4-aiplatform.googleapis.com/v1/projects/p/locations/europe-west4/"
        "publishers/google/models/gemini-2.5-pro:generateContent"
    )
    glob = Target("v", "vertex", "gemini", base, "gemini-2.5-pro", None, {"project": "p"})
    assert asyncio.run(url(glob)).startswith(
        "https://aiplatform.googleapis.com/v1/projects/p/locations/global/publishers/google/"
    )
    assert asyncio.run(url(glob, "publishers/anthropic/models/claude")).endswith(
        "/projects/p/locations/global/publishers/anthropic/models/claude:generateContent"
    )
    full = "projects/q/locations/us-east5/endpoints/123"
    assert (
        asyncio.run(url(glob, full))
        == f"https://aiplatform.googleapis.com/v1/{full}:generateContent"
    )
    dev = Target("g", "gemini", "gemini", "", "gemini-2.5-flash", None)
    assert asyncio.run(url(dev)) == (
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    )


# ---------------------------------------------------------------------------- ADC


@pytest.fixture
def no_token(fake, monkeypatch):
    monkeypatch.delenv("VERTEX_ACCESS_TOKEN")
    monkeypatch.setattr(gemini_module._ADC, "_credentials", None)
    monkeypatch.setattr(gemini_module._ADC, "project", None)


def test_adc_without_google_auth_is_not_installed(fake, no_token, monkeypatch):
    monkeypatch.setitem(sys.modules, "google.auth", None)
    with pytest.raises(NotInstalledError, match=r"batuta\[vertex\]"):
        complete(vertex(fake))
    assert health(vertex(fake)) is False


def _google_auth_stand_in(monkeypatch, *, token, fail=None):
    """google-auth is an optional extra, absent here: a stand-in with its public surface
    (``google.auth.default``, credentials with ``valid``/``token``/``refresh``, the
    exception classes) exercises how the adapter drives it."""
    google = types.ModuleType("google")
    auth = types.ModuleType("google.auth")
    exceptions = types.ModuleType("google.auth.exceptions")
    transport = types.ModuleType("google.auth.transport")
    requests_mod = types.ModuleType("google.auth.transport.requests")

    class GoogleAuthError(Exception):
        pass

    class TransportError(GoogleAuthError):
        pass

    class RefreshError(GoogleAuthError):
        pass

    exceptions.GoogleAuthError = GoogleAuthError
    exceptions.TransportError = TransportError
    exceptions.RefreshError = RefreshError
    requests_mod.Request = lambda: "request"
    calls = {"default": 0, "refresh": 0}

    class Credentials:
        valid = False
        token = None

        def refresh(self, request):
            assert request == "request"
            calls["refresh"] += 1
            if fail:
                raise fail(exceptions)("refresh failed")
            self.token, self.valid = token, True

    def default(scopes):
        assert scopes == ["https://www.googleapis.com/auth/cloud-platform"]
        calls["default"] += 1
        return Credentials(), "acme-prod"

    auth.default = default
    auth.exceptions = exceptions
    google.auth = auth
    for name, mod in {
        "google": google,
        "google.auth": auth,
        "google.auth.exceptions": exceptions,
        "google.auth.transport": transport,
        "google.auth.transport.requests": requests_mod,
    }.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return calls


def test_adc_token_and_project_are_used_and_cached(fake, no_token, monkeypatch):
    calls = _google_auth_stand_in(monkeypatch, token=TOKEN)
    t = Target(
        "vtx", "vertex", "gemini", fake.url, "gemini-2.5-flash", None, {"location": "us-central1"}
    )
    assert complete(t).text == "Hello, world!"
    assert complete(t).text == "Hello, world!"
    assert calls == {"default": 1, "refresh": 1}
    assert fake.requests[-1].path.startswith("/v1/projects/acme-prod/")
    assert fake.requests[-1].headers["authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize(
    ("fail", "kind"),
    [
        (lambda e: e.RefreshError, FailureKind.AUTH),
        (lambda e: e.TransportError, FailureKind.CONNECT),
    ],
)
def test_adc_failures_are_classified(fake, no_token, monkeypatch, fail, kind):
    _google_auth_stand_in(monkeypatch, token=TOKEN, fail=fail)
    err = failure(complete, vertex(fake))
    assert err.kind is kind and "application-default login" in str(err)
    assert fake.requests == []


# ---------------------------------------------------------------------------- health


def test_health(fake, monkeypatch):
    assert health(developer(fake)) is True
    assert fake.requests[-1].path == "/v1beta/models/gemini-2.5-flash"
    assert health(developer(fake, model="")) is True  # the API itself, as serve health asks
    assert fake.requests[-1].path == "/v1beta/models"
    assert health(vertex(fake)) is True
    assert fake.requests[-1].path.endswith("gemini-2.5-flash:countTokens")
    assert health(vertex(fake, project="nope")) is False
    monkeypatch.setenv("GEMINI_API_KEY", "bad")
    assert health(developer(fake)) is False
    monkeypatch.delenv("GEMINI_API_KEY")
    assert health(developer(fake)) is False
