"""AzureOpenAIAdapter against the loopback Azure OpenAI resource."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from batuta.backends.azure import AzureOpenAIAdapter
from batuta.backends.registry import adapter_for
from batuta.backends.types import InferenceRequest, Target
from batuta.errors import BackendError, FailureKind
from tests.fakes.azure_server import AzureFake, Script
from tests.fakes.specs import assert_valid

KEY = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def server():
    with AzureFake(api_key=KEY) as running:
        yield running


@pytest.fixture
def fake(server, monkeypatch):
    server.reset()
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", KEY)
    monkeypatch.delenv("AZURE_OPENAI_AD_TOKEN", raising=False)
    return server


def target(fake, base_url=None, **options) -> Target:
    opts = {"api_version": "2024-10-21", "deployment": "gpt4o-prod", **options}
    opts = {k: v for k, v in opts.items() if v is not None}
    return Target(
        name="azure",
        backend="azure-openai",
        protocol="azure",
        base_url=fake.url if base_url is None else base_url,
        model="gpt-4o",
        api_key_env="AZURE_OPENAI_API_KEY",
        options=opts,
    )


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
    return asyncio.run(_drain(t, request or InferenceRequest(prompt="Hi", max_tokens=16)))


def complete(t, request=None):
    async def go():
        async with httpx.AsyncClient() as client:
            return await adapter_for(t, client).complete(request or InferenceRequest(prompt="Hi"))

    return asyncio.run(go())


def failure(fn, *args) -> BackendError:
    with pytest.raises(BackendError) as info:
        fn(*args)
    return info.value


def health(t) -> bool:
    async def go():
        async with httpx.AsyncClient() as client:
            return await adapter_for(t, client).health()

    return asyncio.run(go())


def text_of(chunks):
    return "".join(c.text for c in chunks)


def test_registry_resolves_the_azure_adapter(fake):
    async def go():
        async with httpx.AsyncClient() as client:
            return adapter_for(target(fake), client)

    assert isinstance(asyncio.run(go()), AzureOpenAIAdapter)


def test_deployment_form_text_usage_and_headers(fake):
    done = complete(target(fake), InferenceRequest(prompt="Hi", max_tokens=16, stream=False))
    assert done.text == "Hello, world!" and done.finish_reason == "stop"
    assert (done.usage.input_tokens, done.usage.output_tokens) == (9, 3)
    sent = fake.requests[-1]
    assert sent.path == "/openai/deployments/gpt4o-prod/chat/completions"
    assert sent.query == {"api-version": ["2024-10-21"]}
    assert sent.headers["api-key"] == KEY and "authorization" not in sent.headers
    body = sent.json()
    assert body["max_completion_tokens"] == 16 and body["stream"] is False
    assert_valid("azure", sent)


def test_v1_form_when_no_api_version(fake):
    chunks, err = drain(target(fake, api_version=None))
    assert err is None and text_of(chunks) == "Hello, world!"
    sent = fake.requests[-1]
    assert sent.path == "/openai/v1/chat/completions" and sent.query == {}
    assert sent.json()["model"] == "gpt4o-prod"  # model = the deployment
    assert_valid("openai", sent)  # the v1 form speaks OpenAI's own API


@pytest.mark.parametrize("version", ["2024-02-15-preview", "2024-06-01", "2024-08-01-preview"])
def test_older_api_versions_get_the_fields_they_know(fake, version):
    chunks, err = drain(target(fake, api_version=version))
    assert err is None and text_of(chunks) == "Hello, world!"
    body = fake.requests[-1].json()
    assert body["max_tokens"] == 16 and "max_completion_tokens" not in body
    assert "stream_options" not in body and chunks[-1].usage is None  # usage is estimated
    done = complete(target(fake, api_version=version), InferenceRequest(prompt="Hi", max_tokens=8))
    assert done.text == "Hello, world!" and fake.requests[-1].json()["max_tokens"] == 8


@pytest.mark.parametrize("version", ["2024-09-01-preview", "2024-10-21", None])
def test_newer_api_versions_and_v1_get_the_new_fields(fake, version):
    chunks, err = drain(target(fake, api_version=version))
    assert err is None and chunks[-1].usage is not None
    body = fake.requests[-1].json()
    assert body["max_completion_tokens"] == 16 and "max_tokens" not in body
    assert body["stream_options"] == {"include_usage": True}


def test_stream_with_filter_chunks_and_usage(fake):
    fake.default = Script(text=["Hel", "lo"], usage=(12, 2), delay=0.01)
    chunks, err = drain(target(fake))
    assert err is None
    assert [c.text for c in chunks if c.text] == ["Hel", "lo"]
    assert chunks[-1].finish_reason == "stop"
    assert (chunks[-1].usage.input_tokens, chunks[-1].usage.output_tokens) == (12, 2)
    assert fake.requests[-1].json()["stream_options"] == {"include_usage": True}
    assert_valid("azure", fake.requests[-1])


def test_filtered_output_finishes_with_content_filter(fake):
    fake.default = Script(text=["I can"], finish="content_filter")
    chunks, err = drain(target(fake))
    assert err is None and chunks[-1].finish_reason == "content_filter"
    assert complete(target(fake)).finish_reason == "content_filter"


def test_rate_limit_prefers_retry_after_ms(fake):
    fake.queue = [Script(error="rate_limit")]
    err = failure(complete, target(fake))
    assert err.kind is FailureKind.RATE_LIMIT and err.status == 429
    assert err.retry_after == pytest.approx(1.5)
    assert err.request_id and "exceeded token rate limit" in str(err)
    fake.queue = [Script(error="rate_limit", retry_after_ms=None, retry_after="7")]
    chunks, err = drain(target(fake))
    assert chunks == [] and err.kind is FailureKind.RATE_LIMIT and err.retry_after == 7.0


def test_insufficient_quota_is_not_retried(fake):
    fake.queue = [Script(error="quota")]
    err = failure(complete, target(fake))
    assert err.kind is FailureKind.QUOTA and not err.kind.retryable


def test_prompt_content_filter_is_client_and_not_retried(fake):
    fake.queue = [Script(error="content_filter")]
    err = failure(complete, target(fake))
    assert err.kind is FailureKind.CLIENT and not err.kind.retryable
    assert err.status == 400 and "content management policy" in str(err)


@pytest.mark.parametrize(
    ("error", "kind"),
    [("server_error", FailureKind.SERVER), ("unavailable", FailureKind.OVERLOADED)],
)
def test_server_errors(fake, error, kind):
    fake.queue = [Script(error=error), Script(error=error)]
    err = failure(complete, target(fake))
    assert err.kind is kind and err.kind.retryable
    chunks, err = drain(target(fake))
    assert chunks == [] and err.kind is kind


def test_malformed_bodies(fake):
    fake.queue = [Script(malformed=True), Script(malformed=True)]
    assert failure(complete, target(fake)).kind is FailureKind.MALFORMED
    chunks, err = drain(target(fake))
    assert text_of(chunks) == "Hello, world!" and err.kind is FailureKind.MALFORMED


def test_in_stream_error_after_text(fake):
    fake.default = Script(in_stream_error=True)
    chunks, err = drain(target(fake))
    assert text_of(chunks) == "Hello, world!"
    assert err.kind is FailureKind.SERVER and "model crashed" in str(err)


def test_cut_stream_keeps_partial_text(fake):
    fake.default = Script(text=["Hel", "lo", " world"], cut_after=2)
    chunks, err = drain(target(fake))
    assert text_of(chunks) == "Hello"
    assert err.kind is FailureKind.STREAM_CUT


def test_wrong_key_is_auth_and_never_echoed(fake, monkeypatch):
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "ffffffffffffffffffffffffffffffff")
    err = failure(complete, target(fake))
    assert err.kind is FailureKind.AUTH and err.status == 401
    assert "invalid subscription key" in str(err)
    assert "ffffffff" not in str(err) and KEY not in str(err)


def test_missing_key_fails_before_any_request(fake, monkeypatch):
    monkeypatch.delenv("AZURE_OPENAI_API_KEY")
    err = failure(complete, target(fake))
    assert err.kind is FailureKind.AUTH and "AZURE_OPENAI_API_KEY" in str(err)
    assert fake.requests == []


def test_entra_token_from_a_variable(fake, monkeypatch):
    monkeypatch.setenv("MY_ENTRA", fake.entra_token)
    t = target(fake, auth="entra", token_env="MY_ENTRA")
    chunks, err = drain(t)
    assert err is None and text_of(chunks) == "Hello, world!"
    sent = fake.requests[-1]
    assert sent.headers["authorization"] == f"Bearer {fake.entra_token}"
    assert "api-key" not in sent.headers
    assert_valid("azure", sent)
    monkeypatch.setenv("MY_ENTRA", "eyJexpired.token.value")
    err = failure(complete, t)
    assert err.kind is FailureKind.AUTH and "Access token is missing" in str(err)
    assert "eyJexpired" not in str(err)
    monkeypatch.delenv("MY_ENTRA")
    err = failure(complete, t)
    assert err.kind is FailureKind.AUTH and "MY_ENTRA" in str(err)


def test_entra_by_default_when_only_the_token_is_set(fake, monkeypatch):
    monkeypatch.delenv("AZURE_OPENAI_API_KEY")
    monkeypatch.setenv("AZURE_OPENAI_AD_TOKEN", fake.entra_token)
    assert complete(target(fake)).text == "Hello, world!"
    assert fake.requests[-1].headers["authorization"].startswith("Bearer ")
    assert failure(complete, target(fake, auth="saml")).kind is FailureKind.CLIENT
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", KEY)
    assert complete(target(fake, auth="api-key")).text == "Hello, world!"
    assert fake.requests[-1].headers["api-key"] == KEY


def test_unknown_deployment_is_client(fake):
    err = failure(complete, target(fake, deployment="nope"))
    assert err.kind is FailureKind.CLIENT and err.status == 404 and "DeploymentNotFound" in str(err)


def test_base_url_forms(fake):
    async def urls(t):
        async with httpx.AsyncClient() as client:
            a = AzureOpenAIAdapter(t, client)
            return a.url("/chat/completions"), a.url("/models")

    chat, models = asyncio.run(
        urls(target(fake, base_url="https://{resource}.openai.azure.com", resource="acme"))
    )
    assert (
        chat
        == "https://acme.openai.azure.com/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"
    )
    assert models == "https://acme.openai.azure.com/openai/models?api-version=2024-10-21"
    chat, _ = asyncio.run(
        urls(target(fake, base_url="https://acme.openai.azure.com/openai/v1/", api_version=None))
    )
    assert chat == "https://acme.openai.azure.com/openai/v1/chat/completions"
    chat, _ = asyncio.run(urls(target(fake, base_url=fake.url + "/openai")))
    assert chat.startswith(fake.url + "/openai/deployments/")
    err = failure(complete, target(fake, base_url=""))
    assert err.kind is FailureKind.CLIENT and "options.resource" in str(err)


def test_health(fake, monkeypatch):
    assert health(target(fake)) is True
    assert fake.requests[-1].path == "/openai/models"
    assert health(target(fake, api_version=None)) is True
    assert fake.requests[-1].path == "/openai/v1/models"
    assert_valid("openai", fake.requests[-1])
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "wrong")
    assert health(target(fake)) is False
    monkeypatch.delenv("AZURE_OPENAI_API_KEY")
    assert health(target(fake)) is False
