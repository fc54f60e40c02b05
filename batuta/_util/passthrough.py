"""The OpenAI request fields batuta's neutral request does not model, and which carry them.

A client's request may hold fields the router has no neutral form for (``tools``,
``response_format``, penalties, ``user``, …). They travel opaquely on
``InferenceRequest.extra`` and are sent unchanged to targets that honour them: a
catalogue record lists those in ``BackendCapabilities.passthrough``, and a request with a
:data:`KNOWN` field goes only to targets listing it. :data:`ANY` in that set means every
field not named in :data:`KNOWN` passes too (an OpenAI-protocol server takes its engine's
own extras, such as llama.cpp's ``top_k`` or ``repeat_penalty``); other targets leave
those out.
"""

from __future__ import annotations

from collections.abc import Iterable

ANY = "*"

# Tool calling; ``messages`` is the raw message list of a conversation that carries tool
# calls and tool results, which the neutral chat (role + text) cannot hold.
TOOLS = frozenset(
    {"tools", "tool_choice", "parallel_tool_calls", "functions", "function_call", "messages"}
)
# Everything else OpenAI's Chat Completions and Completions take that the neutral request
# does not model and whose answer needs nothing more than text (and tool calls).
SAMPLING = frozenset(
    {
        "response_format", "presence_penalty", "frequency_penalty", "logit_bias", "user",
        "metadata", "store", "service_tier", "reasoning_effort", "verbosity", "modalities",
        "prediction", "safety_identifier", "prompt_cache_key", "web_search_options",
        "best_of", "echo", "suffix",
    }
)  # fmt: skip
EMBEDDINGS = frozenset({"dimensions", "user"})
KNOWN = TOOLS | SAMPLING
OPENAI = KNOWN | {ANY}


def unhonoured(fields: frozenset[str], wanted: Iterable[str]) -> list[str]:
    """Those of ``wanted`` that a target honouring ``fields`` would not, in order. Only
    :data:`KNOWN` fields count: any other goes to targets that take :data:`ANY` and is
    left out for the rest, as a server ignores a field it does not know."""
    return [name for name in wanted if name in KNOWN and name not in fields]


def openai_fields(*, tools: bool, open_body: bool) -> frozenset[str]:
    """What an OpenAI-protocol backend honours: every field when its body is open (no
    allow-list), tool fields only when it calls tools."""
    if not open_body:
        return frozenset()
    return OPENAI if tools else OPENAI - TOOLS
