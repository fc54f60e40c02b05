"""Neutral request, chunk and response types shared by every adapter and the router.

Adapters translate these to and from their wire protocol; nothing here knows HTTP.

The per-request types (``Message``, ``InferenceRequest``, ``Usage``, ``Chunk``) are plain
dataclasses, never changed once made: a frozen dataclass's ``__init__`` sets each field
through ``object.__setattr__`` and costs three times as much, and the gateway makes several
per request (a ``Chunk`` per streamed token). ``Target`` stays frozen: it is made once per
routing-table entry and its identity keys caches.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from batuta._util.options import OptionValue
from batuta.errors import Attempt

# One tool call as OpenAI's protocol shapes it (``{"id", "type", "function": {...}}``), or
# in a stream one ``delta.tool_calls`` entry; carried as the upstream sent it.
ToolCall = dict[str, Any]


@dataclass
class Message:
    """One chat turn. ``role`` is system, user or assistant."""

    role: str
    content: str


@dataclass
class InferenceRequest:
    """What the user asked for, independent of any backend.

    ``assistant_prefix`` is text already shown to the user by a target that failed
    mid-stream: the next target continues from it instead of starting over.
    ``raw_prompt``: ``prompt`` is text to continue as it is (a legacy text completion),
    not a user turn; adapters without a completions route send it as one user message.
    ``extra`` holds request fields this type does not model (``tools``,
    ``response_format``, …: see :mod:`batuta._util.passthrough`), sent unchanged to targets
    that honour them; opaque, and left out of ``repr`` so it is never logged.
    """

    prompt: str
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    stream: bool = True
    seed: int | None = None
    model: str | None = None  # overrides the target's model when set
    history: tuple[Message, ...] = ()  # earlier turns, before ``prompt``
    assistant_prefix: str = ""
    raw_prompt: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def messages(self) -> list[Message]:
        """The chat as a message list: system, history, the prompt, then any prefix."""
        out: list[Message] = []
        if self.system:
            out.append(Message("system", self.system))
        out.extend(self.history)
        out.append(Message("user", self.prompt))
        if self.assistant_prefix:
            out.append(Message("assistant", self.assistant_prefix))
        return out


@dataclass
class Usage:
    """Token counts as the server reported them (None when it did not)."""

    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass
class Chunk:
    """A piece of a streamed answer. The last one carries ``finish_reason`` and/or usage."""

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    tool_calls: tuple[ToolCall, ...] = ()  # ``delta.tool_calls`` entries, as streamed


@dataclass(frozen=True)
class Target:
    """A resolved place to send a request: one entry of a route in the routing table."""

    name: str
    backend: str  # catalogue key
    protocol: str
    base_url: str
    model: str
    api_key_env: str | None = None
    # The provider's options (api_version, region, ...) as typed JSON values; read them
    # through batuta._util.options, which also takes the strings of older routing tables.
    options: dict[str, OptionValue] = field(default_factory=dict)
    local: bool = False


@dataclass
class Completion:
    """What one adapter call returned."""

    text: str
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    tool_calls: list[ToolCall] | None = None


@dataclass
class InferenceResponse:
    """The answer to a routed query: the product's InferenceResponse plus routing facts."""

    text: str
    tokens_generated: int
    latency_ms: float
    tokens_per_second: float
    target: str = ""
    ttft_ms: float | None = None
    attempts: int = 1
    fallbacks: int = 0
    failed_over_from: list[str] = field(default_factory=list)
    tried: list[Attempt] = field(default_factory=list)  # the failed or skipped tries, in order
    finish_reason: str | None = None
    input_tokens: int | None = None
    usage_source: str = "server"  # "server" | "estimate"
    cost_usd: float = 0.0
    tool_calls: list[ToolCall] | None = None  # a blocking answer's; streamed ones went out
