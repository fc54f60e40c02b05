"""Chat templates for completion-only wire protocols (realizar, TGI native, ``/completions``).

Chat servers apply the model's template themselves. Servers that take a raw prompt do
not, so batuta renders the model's own Hugging Face / GGUF Jinja template (target option
``chat_template``, filled in from the GGUF header by the routing table or written in the
manifest) the way ``transformers``' ``apply_chat_template`` does: a sandboxed,
immutable Jinja environment with ``trim_blocks``/``lstrip_blocks``, ``loopcontrols``,
the ``{% generation %}`` tag, a non-ASCII-preserving ``tojson``, ``raise_exception`` and
``strftime_now``, and ``add_generation_prompt=True``. Options ``bos_token`` /
``eos_token`` supply the special-token strings a template may print.

A template that does not compile or refuses a conversation never fails the request: the
chat is flattened with :func:`~batuta.backends._payload.plain_prompt` instead. Templates
are compiled once per distinct source; jinja2 is imported only when one is used.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NoReturn

from batuta._util.options import Options, flag, text
from batuta.backends._payload import plain_prompt
from batuta.backends.types import InferenceRequest, Message

if TYPE_CHECKING:
    from jinja2 import Template
    from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = ["TEMPLATE_OPTIONS", "chat_prompt", "render_chat", "templated_prompt"]

log = logging.getLogger(__name__)

# Target options this module reads.
TEMPLATE_OPTIONS = ("chat_template", "bos_token", "eos_token", "add_bos_token")


class ChatTemplateError(Exception):
    """What a template's ``raise_exception(...)`` raises."""


def _raise_exception(message: str) -> NoReturn:
    raise ChatTemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own tojson escapes HTML characters; transformers' keeps text as written.
    return json.dumps(
        value,
        ensure_ascii=ensure_ascii,
        indent=indent,
        separators=separators,
        sort_keys=sort_keys,
    )


@lru_cache(maxsize=1)
def _environment() -> ImmutableSandboxedEnvironment:
    from jinja2 import ext, nodes, parser
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(ext.Extension):
        """``{% generation %}`` marks assistant text for training masks; rendering keeps
        its body unchanged."""

        tags = {"generation"}  # noqa: RUF012 - jinja2 declares it a plain set

        def parse(self, parser: parser.Parser) -> list[nodes.Node]:
            parser.stream.skip(1)
            return parser.parse_statements(("name:endgeneration",), drop_needle=True)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@lru_cache(maxsize=32)
def _compile(source: str) -> Template | None:
    """The compiled template, or None when it does not compile (remembered, so a broken
    template costs one attempt and one log line)."""
    from jinja2 import TemplateError as JinjaError

    try:
        return _environment().from_string(source)
    except JinjaError as exc:
        log.debug("chat template does not compile (%s); sending a plain prompt", exc)
        return None


def render_chat(
    template: str,
    messages: Sequence[Message],
    *,
    bos_token: str = "",
    eos_token: str = "",
) -> str | None:
    """The prompt ``template`` makes of ``messages``, ending with the generation prompt
    that opens the assistant's turn; None when the template cannot render them."""
    compiled = _compile(template)
    if compiled is None:
        return None
    try:
        return compiled.render(
            messages=[{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=True,
            bos_token=bos_token,
            eos_token=eos_token,
            tools=None,
            documents=None,
        )
    # A template is foreign code: whatever it raises (its own raise_exception, a sandbox
    # violation, a type error on unexpected data) means "this template cannot do it".
    except Exception as exc:
        log.debug("chat template failed (%s: %s)", type(exc).__name__, exc)
        return None


def _system_folded(messages: list[Message]) -> list[Message] | None:
    """The chat with the system message put in front of the first user turn, for
    templates that refuse a system role (Gemma, early Mistral); None without one."""
    if not messages or messages[0].role != "system":
        return None
    system, rest = messages[0], messages[1:]
    first = next((i for i, m in enumerate(rest) if m.role == "user"), None)
    if first is None:
        return None
    folded = Message("user", f"{system.content}\n\n{rest[first].content}")
    return [*rest[:first], folded, *rest[first + 1 :]]


def chat_prompt(request: InferenceRequest, options: Options) -> str:
    """The raw prompt for a completion-only server.

    With a ``chat_template`` option the chat goes through it, then any assistant prefix is
    appended so generation continues the interrupted answer; without one, or when the
    template cannot render this chat, the chat is flattened by ``plain_prompt``.
    """
    prompt = templated_prompt(request, options)
    return plain_prompt(request) if prompt is None else prompt


def templated_prompt(request: InferenceRequest, options: Options) -> str | None:
    """The chat through the ``chat_template`` option with the assistant turn left open and
    any prefix appended; None without a template or when it cannot render this chat."""
    template = text(options, "chat_template")
    if not template:
        return None
    messages = dataclasses.replace(request, assistant_prefix="").messages()
    bos = text(options, "bos_token")
    eos = text(options, "eos_token")
    prompt = render_chat(template, messages, bos_token=bos, eos_token=eos)
    if prompt is None:
        folded = _system_folded(messages)
        if folded is not None:
            prompt = render_chat(template, folded, bos_token=bos, eos_token=eos)
    if prompt is None:
        return None
    if bos and flag(options, "add_bos_token"):
        # The server's tokenizer puts BOS in front of raw text itself; a template that
        # prints it too would hand the model two.
        prompt = prompt.removeprefix(bos)
    return prompt + request.assistant_prefix
