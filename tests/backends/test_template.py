"""Chat templates for raw-prompt servers: the real SmolLM2 template checked byte for byte
against llama-cpp-python's own renderer, the sandbox, and the plain-prompt fallback."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from batuta.backends import _template
from batuta.backends._payload import plain_prompt
from batuta.backends._template import chat_prompt, render_chat
from batuta.backends.types import InferenceRequest, Message
from batuta.runtime.gguf import read_gguf

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Llama 3's shape: BOS printed by the template, a header per turn.
LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>"
    "\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
# Gemma's shape: no system role, roles must alternate.
GEMMA = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant') }}"
    "{% endif %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{{ m['content'] }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

CHATS = {
    "system and user": [
        Message("system", "You answer in one short sentence."),
        Message("user", "What is the capital of France?"),
    ],
    "user only": [Message("user", "What is the capital of France?")],
    "with history": [
        Message("system", "Be brief."),
        Message("user", "Hi!"),
        Message("assistant", "Hello! How can I help?"),
        Message("user", "Name a colour: café, naïve, 東京?"),
    ],
}


@pytest.fixture(scope="module")
def smollm2(smollm2_path: Path):
    return read_gguf(smollm2_path)


def reference(template: str, messages: list[Message], bos: str, eos: str) -> str:
    """llama-cpp-python's own Jinja renderer, the independent reference."""
    formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
    return formatter(messages=[{"role": m.role, "content": m.content} for m in messages]).prompt


@pytest.mark.parametrize("chat", list(CHATS), ids=list(CHATS))
def test_real_smollm2_template_matches_llama_cpp_byte_for_byte(smollm2, chat):
    messages = CHATS[chat]
    assert smollm2.bos_token == "<|im_start|>" and smollm2.eos_token == "<|im_end|>"
    ours = render_chat(
        smollm2.chat_template, messages, bos_token=smollm2.bos_token, eos_token=smollm2.eos_token
    )
    theirs = reference(smollm2.chat_template, messages, smollm2.bos_token, smollm2.eos_token)
    assert ours == theirs
    assert ours.endswith("<|im_start|>assistant\n")
    assert ours.count("<|im_start|>") == len(messages) + 1 + (chat == "user only")


def test_user_only_chat_gets_the_models_default_system_prompt(smollm2):
    ours = render_chat(smollm2.chat_template, CHATS["user only"])
    assert ours == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_bos_printing_template_matches_llama_cpp(smollm2):
    messages = CHATS["with history"]
    ours = render_chat(LLAMA3, messages, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    assert ours == reference(LLAMA3, messages, "<|begin_of_text|>", "<|eot_id|>")
    assert ours.startswith("<|begin_of_text|><|start_header_id|>system")


def _request(**kw) -> InferenceRequest:
    return InferenceRequest(prompt="What is the capital of France?", **kw)


def test_chat_prompt_renders_system_history_and_continues_the_prefix(smollm2):
    request = _request(
        system="Be brief.",
        history=(Message("user", "Hi"), Message("assistant", "Hello")),
        assistant_prefix="The capital",
    )
    prompt = chat_prompt(request, {"chat_template": smollm2.chat_template})
    assert prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>user\n"
        "What is the capital of France?<|im_end|>\n<|im_start|>assistant\nThe capital"
    )


def test_without_a_template_the_chat_is_flattened():
    request = _request(system="Sys", assistant_prefix="A")
    assert (
        chat_prompt(request, {})
        == plain_prompt(request)
        == ("Sys\n\nWhat is the capital of France?A")
    )
    assert chat_prompt(request, {"chat_template": ""}) == plain_prompt(request)


def test_bos_is_left_to_a_server_that_adds_it_itself():
    request = _request()
    options = {"chat_template": LLAMA3, "bos_token": "<|begin_of_text|>"}
    kept = chat_prompt(request, {**options, "add_bos_token": "false"})
    assert kept.startswith("<|begin_of_text|><|start_header_id|>user")
    assert chat_prompt(request, options) == kept  # not stated: printed as the template says
    stripped = chat_prompt(request, {**options, "add_bos_token": True})
    assert stripped == kept.removeprefix("<|begin_of_text|>")
    assert stripped.startswith("<|start_header_id|>user")
    assert chat_prompt(request, {**options, "add_bos_token": False}) == kept


def test_a_routing_table_from_before_typed_options_still_reads():
    # Tables written before options were typed hold "true" / "false" strings.
    request = _request()
    options = {"chat_template": LLAMA3, "bos_token": "<|begin_of_text|>"}
    typed = chat_prompt(request, {**options, "add_bos_token": True})
    assert chat_prompt(request, {**options, "add_bos_token": "true"}) == typed
    assert chat_prompt(request, {**options, "add_bos_token": "false"}).startswith(
        "<|begin_of_text|>"
    )


def test_a_template_refusing_the_system_role_gets_it_folded_into_the_first_turn():
    request = _request(
        system="Be brief.", history=(Message("user", "Hi"), Message("assistant", "Yo"))
    )
    prompt = chat_prompt(request, {"chat_template": GEMMA})
    assert prompt == (
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nYo<end_of_turn>\n"
        "<start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\n"
    )


def test_folding_needs_a_system_message_and_a_user_turn():
    assert _template._system_folded([Message("user", "x")]) is None
    assert _template._system_folded([Message("system", "s"), Message("assistant", "a")]) is None


BROKEN = {
    "syntax error": "{% for m in messages %}{{ m.content }",
    "unknown tag": "{% frobnicate %}",
    "raise_exception": "{{ raise_exception('only user turns, please') }}",
    "unknown filter": "{{ messages | nosuchfilter }}",
    "undefined call": "{{ messages[0].nosuch() }}",
    "type error": "{{ messages[0].content + 1 }}",
    "sandbox escape": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "mutating the chat": "{% set _ = messages.append({'role': 'user'}) %}x",
}


@pytest.mark.parametrize("source", list(BROKEN.values()), ids=list(BROKEN))
def test_a_broken_template_falls_back_to_the_plain_prompt(source, caplog):
    request = _request(system="Sys", assistant_prefix="So")
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            assert chat_prompt(request, {"chat_template": source}) == plain_prompt(request)
        bare = _request()  # nothing to fold: straight to the plain prompt
        assert chat_prompt(bare, {"chat_template": source}) == plain_prompt(bare)
    assert render_chat(source, request.messages()) is None
    assert not caplog.records  # no warning per request


def test_a_broken_template_is_compiled_once():
    source = "{% if %}broken-once"
    _template._compile.cache_clear()
    for _ in range(3):
        assert render_chat(source, [Message("user", "x")]) is None
    info = _template._compile.cache_info()
    assert (info.misses, info.hits) == (1, 2)


def test_templates_are_compiled_once_per_source(smollm2):
    _template._compile.cache_clear()
    for chat in CHATS.values():
        render_chat(smollm2.chat_template, chat)
        render_chat(CHATML, chat)
    info = _template._compile.cache_info()
    assert (info.misses, info.hits) == (2, 4)


def test_transformers_extensions_and_helpers():
    source = (
        "{% for m in messages %}{% if loop.index > 2 %}{% break %}{% endif %}"
        "{% if m.role == 'assistant' %}{% generation %}[{{ m.content }}]{% endgeneration %}"
        "{% else %}{{ m.content | tojson }}{% endif %}{% endfor %}"
        "|{{ strftime_now('%Y') | length }}|{{ tools is none }}"
    )
    messages = [Message("user", "café 東京 <b>"), Message("assistant", "ok"), Message("user", "x")]
    assert render_chat(source, messages) == '"café 東京 <b>"[ok]|4|True'


def test_trim_and_lstrip_blocks_as_transformers_sets_them():
    source = (
        "{% for m in messages %}\n    {% if true %}\n{{ m.content }}\n    {% endif %}\n{% endfor %}"
    )
    assert render_chat(source, [Message("user", "a"), Message("user", "b")]) == "a\nb\n"
    assert render_chat(source, [Message("user", "a")]) == reference(
        source, [Message("user", "a")], "", ""
    )
