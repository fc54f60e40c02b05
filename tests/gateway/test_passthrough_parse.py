"""Pass-through fields: what the parser carries on ``extra``, which targets honour them,
and the 400 when no target of a route can."""

from __future__ import annotations

import pytest

from batuta._util import passthrough
from batuta.backends.types import InferenceRequest, Message, Target
from batuta.catalogue import lookup
from batuta.gateway.errors import GatewayError
from batuta.gateway.openai import parse_chat
from batuta.gateway.select import Selected, require_fields
from batuta.router.capable import embeds, refused_fields, skip_reason
from batuta.routing.table import RouteEntry, TargetEntry

HI = [{"role": "user", "content": "Hi"}]
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


def target(backend: str, *, local: bool = False, **options: object) -> Target:
    return Target(backend, backend, "openai", "http://127.0.0.1:1", "m", local=local,
                  options=dict(options))  # fmt: skip


def test_unmodelled_fields_ride_on_extra_and_stay_out_of_repr() -> None:
    call = parse_chat({
        "model": "m", "messages": HI, "tools": TOOLS, "tool_choice": "auto",
        "response_format": {"type": "json_object"}, "presence_penalty": 0.5, "user": "u-1",
        "top_k": 40, "logprobs": False, "top_logprobs": None, "n": 1, "seed": 2,
    })  # fmt: skip
    assert dict(call.request.extra) == {
        "tools": TOOLS, "tool_choice": "auto", "response_format": {"type": "json_object"},
        "presence_penalty": 0.5, "user": "u-1", "top_k": 40,
    }  # fmt: skip
    assert call.request.seed == 2  # modelled fields stay neutral
    assert "u-1" not in repr(call.request) and "json_object" not in repr(call.request)
    assert parse_chat({"model": "m", "messages": HI, "tools": []}).request.extra == {}


def test_a_tool_conversation_keeps_its_raw_messages() -> None:
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
    ]  # fmt: skip
    r = parse_chat({"model": "m", "messages": messages, "tools": TOOLS}).request
    assert r.extra["messages"] == messages
    assert r.prompt == "18 C"
    assert r.history == (Message("user", "Weather in Paris?"), Message("assistant", ""))


def test_catalogue_declares_who_honours_what() -> None:
    for key in ("llamacpp", "vllm", "openai", "together", "azure-openai"):
        assert {"tools", "response_format", passthrough.ANY} <= lookup(key).capabilities.passthrough
    for key in ("anthropic", "gemini", "bedrock", "ollama", "tgi", "gpt4all", "replicate"):
        assert lookup(key).capabilities.passthrough == frozenset(), key
    tools = InferenceRequest("hi", extra={"tools": TOOLS, "top_k": 40})
    assert refused_fields(tools, target("openai")) == []
    assert refused_fields(tools, target("anthropic")) == ["tools"]  # top_k: simply left out
    assert skip_reason(tools, target("anthropic")) == "anthropic does not take tools"
    assert skip_reason(InferenceRequest("hi", extra={"top_k": 1}), target("anthropic")) is None


def test_no_target_of_the_route_honours_a_field_is_a_400_naming_both() -> None:
    def entry(name: str, backend: str) -> TargetEntry:
        return TargetEntry(name, backend, backend, "http://127.0.0.1:1", "m", False)

    route = RouteEntry("claude-only", "interactive", "standard", "balanced",
                       (entry("c", "anthropic"), entry("g", "gemini")))  # fmt: skip
    request = InferenceRequest("hi", extra={"response_format": {"type": "json_object"}})
    with pytest.raises(GatewayError) as caught:
        require_fields(Selected(route), request)
    assert caught.value.status == 400 and caught.value.param == "response_format"
    assert "route 'claude-only'" in caught.value.message
    mixed = RouteEntry("mixed", "interactive", "standard", "balanced",
                       (entry("c", "anthropic"), entry("o", "openai")))  # fmt: skip
    require_fields(Selected(mixed), request)  # the openai target can: no error


def test_which_targets_embed() -> None:
    assert embeds(target("openai")) and embeds(target("together"))
    assert not embeds(target("anthropic")) and not embeds(target("gpt4all", local=True))
    # a llama.cpp server embeds only when it was started with --embeddings
    assert not embeds(target("llamacpp", local=True))
    assert embeds(target("llamacpp", local=True, embeddings=True))
    assert embeds(target("vllm", local=True)) and embeds(target("ollama", local=True))
    for other in ("tgi", "realizar", "azure-openai", "hf-endpoints"):  # no /v1/embeddings here
        assert not embeds(target(other, local=other in ("tgi", "realizar"))), other


def test_completion_and_embeddings_bodies() -> None:
    from batuta.gateway.completions import TextStream, parse_completion
    from batuta.gateway.embeddings import parse_embeddings

    call = parse_completion({"model": "m", "prompt": "Once", "suffix": "end", "n": 1,
                             "stream": True, "stream_options": {"include_usage": True}})  # fmt: skip
    assert call.request.raw_prompt and call.request.prompt == "Once" and call.include_usage
    assert dict(call.request.extra) == {"suffix": "end"}
    for body, param in (({"model": "m", "prompt": "x", "n": 2}, "n"),
                        ({"model": "m", "prompt": "x", "stream_options": 1}, "stream_options"),
                        ({"model": "m"}, "prompt")):  # fmt: skip
        with pytest.raises(GatewayError) as caught:
            parse_completion(body)
        assert caught.value.param == param
    error = TextStream("m", False).error(GatewayError(502, "upstream died"))
    assert error.startswith(b"data: ") and b"upstream died" in error
    for value in ([1, 2], [[1, 2], [3]], ["a", "b"], "a"):
        assert parse_embeddings({"model": "m", "input": value}).request.input == value
    for value in ([], [""], [1, "a"], [[]], 3):
        with pytest.raises(GatewayError, match="input"):
            parse_embeddings({"model": "m", "input": value})
    with pytest.raises(GatewayError, match="dimensions"):
        parse_embeddings({"model": "m", "input": "a", "dimensions": 0})
    extra = parse_embeddings({"model": "m", "input": "a", "dimensions": 4, "user": None})
    assert dict(extra.request.extra) == {"dimensions": 4} and not extra.base64
