"""Reading request fields: each check names the field it rejects, as SDKs show it."""

from __future__ import annotations

from typing import Any

from batuta.backends.types import Message
from batuta.gateway.errors import GatewayError, bad_field


def as_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise GatewayError(400, "the request body must be a JSON object", code="invalid_json")
    return body


def text(body: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise bad_field(key, "is required")
        return None
    if not isinstance(value, str) or (required and not value):
        raise bad_field(key, "must be a non-empty string" if required else "must be a string")
    return value


def integer(body: dict[str, Any], key: str, *, minimum: int = 1) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise bad_field(key, f"must be an integer of at least {minimum}")
    return value


def number(body: dict[str, Any], key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise bad_field(key, f"must be a number from {low:g} to {high:g}")
    return float(value)


def flag(body: dict[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad_field(key, "must be true or false")
    return value


def strings(body: dict[str, Any], key: str) -> tuple[str, ...]:
    """A string or a list of strings (``stop``, ``stop_sequences``)."""
    value = body.get(key)
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise bad_field(key, "must be a string or a list of strings")


def content_text(content: Any, where: str, text_type: str = "text") -> str:
    """A message's content: a string, or a list of text parts joined (other parts, such as
    images, are refused: the router carries text only)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_field(where, "must be a string or a list of content parts")
    pieces: list[str] = []
    for i, part in enumerate(content):
        at = f"{where}[{i}]"
        if not isinstance(part, dict):
            raise bad_field(at, "must be an object")
        if part.get("type") != text_type:
            raise bad_field(f"{at}.type", f"only {text_type!r} parts are supported")
        value = part.get("text")
        if not isinstance(value, str):
            raise bad_field(f"{at}.text", "must be a string")
        pieces.append(value)
    return "".join(pieces)


def split_turns(turns: list[Message], where: str) -> tuple[str, tuple[Message, ...], str]:
    """(the last user prompt, the turns before it, a trailing assistant prefill)."""
    prefill = ""
    if turns and turns[-1].role == "assistant":
        prefill = turns[-1].content
        turns = turns[:-1]
    if not turns or turns[-1].role != "user":
        raise bad_field(where, "must end with a user message (optionally then one assistant)")
    return turns[-1].content, tuple(turns[:-1]), prefill


def passthrough(
    body: dict[str, Any], modeled: frozenset[str], extra: dict[str, Any]
) -> dict[str, Any]:
    """The body's fields beyond ``modeled``, to send on as they are (``extra`` added).
    Nulls and an empty ``tools`` are left out; ``logprobs`` and ``n`` > 1 are refused,
    since the answer carries one choice's text and tool calls only."""
    if modeled.issuperset(body):  # most requests: nothing beyond the modeled fields
        return extra
    out = {k: v for k, v in body.items() if k not in modeled and v is not None}
    if out.get("tools") == []:
        del out["tools"]
    for key in ("logprobs", "top_logprobs"):
        if out.get(key) not in (None, False, 0):
            raise bad_field(key, "log probabilities are not returned by the gateway")
        out.pop(key, None)
    return {**out, **extra}
