"""Protocol-neutral pieces of requests and answers that several adapters share.

One finish-reason vocabulary, the chat flattened for raw-prompt APIs, ``param.*`` target
options as body extras, token counts read defensively, client-side stop sequences for
servers that lack them (or take only some), Claude's sampling limits, and the continuation
turn for models that refuse to continue a trailing assistant message.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from batuta._util.options import Options, OptionValue
from batuta.errors import BackendError, FailureKind

if TYPE_CHECKING:
    from batuta.backends.types import InferenceRequest, Message

# The user turn that replaces a prefill for models refusing a final assistant message.
CONTINUE_INSTRUCTION = (
    "Your previous answer above was cut off. Continue it exactly where it stops, without "
    "repeating any of it and without any preamble."
)

_FINISH = {
    "stop": "stop",
    "eos": "stop",
    "eos_token": "stop",
    "stop_sequence": "stop",
    "end_turn": "stop",
    "word": "stop",
    "length": "length",
    "max_tokens": "length",
    "limit": "length",
    "model_length": "length",
}


def finish_reason(raw: object) -> str | None:
    """One vocabulary for every protocol: ``stop`` and ``length`` where they mean that,
    anything else (``content_filter``, ``tool_calls``, ...) as the server said it."""
    if raw is None or raw == "":
        return None
    text = str(raw)
    return _FINISH.get(text.lower(), text)


def plain_prompt(request: InferenceRequest) -> str:
    """The chat flattened for raw-completion APIs (TGI ``/generate``, realizar, OpenAI
    ``/completions``): system, earlier turns and the prompt separated by blank lines, then
    any assistant prefix glued on so generation continues exactly where it stopped."""
    parts = [request.system] if request.system else []
    parts += [m.content for m in request.history]
    parts.append(request.prompt)
    return "\n\n".join(parts) + request.assistant_prefix


def body_extras(options: Options) -> dict[str, Any]:
    """Target options named ``param.<field>`` become top-level body fields (``param.top_k:
    40`` → ``"top_k": 40``), their JSON values sent as they are. A string is read as JSON
    when it parses (``"40"`` → 40), as before options were typed, else kept as text."""
    extras: dict[str, Any] = {}
    for key, value in options.items():
        if key.startswith("param.") and len(key) > len("param."):
            extras[key[len("param.") :]] = _json_or_text(value)
    return extras


def _json_or_text(value: OptionValue) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


class StopFilter:
    """Applies stop sequences to streamed text for servers that do not (or that echo the
    matched sequence). Text that might be the start of a stop sequence is held back until
    the next piece shows whether it is; after a match, :attr:`hit` is set and the rest of
    the stream should be discarded."""

    def __init__(self, stops: tuple[str, ...] | list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.held = ""
        self.hit = False

    def feed(self, text: str) -> str:
        """The part of ``text`` that is safe to show now."""
        if self.hit:
            return ""
        if not self.stops:
            return text
        buffer = self.held + text
        found = [i for i in (buffer.find(s) for s in self.stops) if i >= 0]
        if found:
            self.hit, self.held = True, ""
            return buffer[: min(found)]
        keep = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(buffer)), keep, -1):
                if buffer.endswith(stop[:k]):
                    keep = k
                    break
        self.held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """Whatever was held back, once the stream ended without a match."""
        out, self.held = ("" if self.hit else self.held), ""
        return out


def int_or_none(value: object) -> int | None:
    """A token count from JSON (ints, or numeric strings as some servers send)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def split_stops(
    stops: tuple[str, ...], *, limit: int | None = None, blank_ok: bool = True
) -> tuple[list[str], tuple[str, ...]]:
    """``(sent, local)``: the stop sequences a server takes (at most ``limit``; none that
    are empty or, with ``blank_ok`` False, only whitespace) and those it refuses, which the
    adapter then applies itself with :class:`StopFilter`."""
    sent: list[str] = []
    local: list[str] = []
    for stop in stops:
        refused = not stop or (not blank_ok and not stop.strip())
        if refused or (limit is not None and len(sent) >= limit):
            local.append(stop)
        else:
            sent.append(stop)
    return sent, tuple(s for s in local if s)


def claude_sampling(request: InferenceRequest, provider: str) -> dict[str, float]:
    """Claude's ``temperature`` / ``top_p``: current models refuse both together (only
    temperature is sent when both are set), and temperature runs 0-1 where a neutral
    request's runs 0-2 (OpenAI's scale): values above 1 are sent as 1, the most random
    Claude allows, and values outside 0-2 are refused rather than sent."""
    if request.temperature is not None:
        if not 0.0 <= request.temperature <= 2.0:
            raise BackendError(
                FailureKind.CLIENT,
                f"{provider}: temperature {request.temperature:g} is outside 0-2",
            )
        return {"temperature": min(request.temperature, 1.0)}
    if request.top_p is not None:
        return {"top_p": request.top_p}
    return {}


def refuses_prefill(error: BackendError) -> bool:
    """Whether a 400 says the model does not continue a final assistant turn (Anthropic:
    "does not support assistant message prefill", "must end with a user message")."""
    if error.kind is not FailureKind.CLIENT:
        return False
    text = str(error).lower()
    return ("prefill" in text and "support" in text) or "must end with a user" in text


def continuation_chat(request: InferenceRequest) -> list[Message]:
    """The chat for a model that refuses a trailing assistant turn: the partial answer as
    an ordinary assistant turn, then a user turn asking to continue it (the router's splice
    joins the text, and holds back a repeat should the model restart anyway)."""
    from batuta.backends.types import Message

    return [*request.messages(), Message("user", CONTINUE_INSTRUCTION)]
