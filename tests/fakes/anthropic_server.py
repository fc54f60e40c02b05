"""A loopback Anthropic Messages API.

``AnthropicFake(api_key="k", text="...").start()`` serves ``POST /v1/messages`` and
``GET /v1/models`` as Anthropic does: it requires ``x-api-key`` and ``anthropic-version``,
answers a missing/wrong key with 401 ``authentication_error``, validates the body like
the API (``max_tokens`` required, only ``user``/``assistant`` roles, the system prompt
top-level, no unknown fields, a final assistant message may not end in whitespace, no stop
sequence that is empty or only whitespace, ``temperature`` at most 1 and never together
with ``top_p``, as current models insist), and streams the named events ``message_start`` → ``content_block_start`` → ``ping`` →
``content_block_delta`` (``text_delta``) … → ``content_block_stop`` → ``message_delta``
(``stop_reason``, cumulative ``output_tokens``) → ``message_stop``.

A model named in ``no_prefill`` behaves like the newer Claude models: a conversation ending
with an assistant turn is a 400 ``invalid_request_error`` ("does not support assistant
message prefill"); asked instead, after its partial answer, in a user turn to continue, it
answers with the rest of its canned text (as a model following the instruction would).

Scripted faults (see :mod:`tests.fakes.scripted`) use Anthropic's error bodies
(``{"type": "error", "error": {"type", "message"}, "request_id"}``): 429
``rate_limit_error``, 500 ``api_error``, 529 ``overloaded_error``, 400
``invalid_request_error``, and an ``event: error`` after the 200
(``error_event_after(n, error_type="overloaded_error")``).
"""

from __future__ import annotations

import uuid
from typing import Any

from tests.fakes.base import Request, Responder, sse
from tests.fakes.scripted import DEFAULT_TEXT, Answer, Fault, ScriptedFake

_TYPES = {
    400: ("invalid_request_error", "Invalid request"),
    401: ("authentication_error", "invalid x-api-key"),
    403: (
        "permission_error",
        "Your API key does not have permission to use the specified resource.",
    ),
    404: ("not_found_error", "Not found"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}
_FIELDS = {
    "model",
    "messages",
    "max_tokens",
    "system",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "stream",
    "metadata",
    "tools",
    "tool_choice",
    "thinking",
}


def anthropic_error(
    status: int, message: str | None = None, type_: str | None = None
) -> dict[str, Any]:
    kind, default = _TYPES.get(status, ("api_error", "Internal server error"))
    return {
        "type": "error",
        "error": {"type": type_ or kind, "message": message or default},
        "request_id": f"req_{uuid.uuid4().hex[:16]}",
    }


class AnthropicFake(ScriptedFake):
    """See the module docstring."""

    def __init__(
        self,
        *,
        api_key: str | None = "test-key",
        text: str = DEFAULT_TEXT,
        chunk_delay: float = 0.0,
        first_byte_delay: float = 0.0,
        model: str = "claude-fake-1",
        no_prefill: tuple[str, ...] = (),
    ) -> None:
        super().__init__(
            text=text, api_key=api_key, chunk_delay=chunk_delay, first_byte_delay=first_byte_delay
        )
        self.model = model
        self.no_prefill = set(no_prefill)
        self.route("POST", "/v1/messages", self._messages)
        self.route("GET", "/v1/models", self._models)

    def _send_error(
        self,
        resp: Responder,
        status: int,
        message: str | None = None,
        type_: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        body = anthropic_error(status, message, type_)
        resp.send_json(status, body, {"request-id": body["request_id"], **(headers or {})})

    def _rejected(self, req: Request, resp: Responder) -> bool:
        if self.api_key is not None and req.headers.get("x-api-key") != self.api_key:
            self._send_error(resp, 401)
            return True
        if "anthropic-version" not in req.headers:
            self._send_error(resp, 400, "anthropic-version: header is required")
            return True
        return False

    def _models(self, req: Request, resp: Responder) -> None:
        if self._rejected(req, resp):
            return
        item = {
            "type": "model",
            "id": self.model,
            "display_name": "Claude Fake",
            "created_at": "2025-01-01T00:00:00Z",
        }
        resp.send_json(
            200, {"data": [item], "has_more": False, "first_id": self.model, "last_id": self.model}
        )

    def _invalid(self, body: Any) -> str | None:
        if not isinstance(body, dict):
            return "body: Input should be an object"
        for key in body:
            if key not in _FIELDS:
                return f"{key}: Extra inputs are not permitted"
        if "max_tokens" not in body:
            return "max_tokens: Field required"
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return "messages: at least one message is required"
        for i, m in enumerate(messages):
            if m.get("role") not in ("user", "assistant"):
                return (
                    f'messages.{i}.role: Unexpected role "{m.get("role")}". The Messages API '
                    'accepts a top-level `system` parameter, not "system" as an input message role.'
                )
        last = messages[-1]
        if (
            last["role"] == "assistant"
            and str(last.get("content", "")) != str(last.get("content", "")).rstrip()
        ):
            return "messages: final assistant content cannot end with trailing whitespace"
        if last["role"] == "assistant" and body.get("model") in self.no_prefill:
            return (
                "This model does not support assistant message prefill. The conversation "
                "must end with a user message."
            )
        stops = body.get("stop_sequences") or []
        if any(not isinstance(s, str) or not s.strip() for s in stops):
            return "stop_sequences: each stop sequence must contain non-whitespace"
        temperature = body.get("temperature")
        if temperature is not None and not 0 <= temperature <= 1:
            return "temperature: Input should be less than or equal to 1"
        if temperature is not None and body.get("top_p") is not None:
            return (
                "`temperature` and `top_p` cannot both be specified for this model. "
                "Please use only one."
            )
        return None

    def _continuation(self, body: dict[str, Any]) -> str | None:
        """The rest of the canned text, when a no-prefill model is asked to continue it."""
        messages = body["messages"]
        if body.get("model") not in self.no_prefill or len(messages) < 2:
            return None
        partial = messages[-2]
        if partial.get("role") != "assistant" or messages[-1].get("role") != "user":
            return None
        shown = str(partial.get("content") or "")
        return self.text[len(shown) :] if shown and self.text.startswith(shown) else None

    def _messages(self, req: Request, resp: Responder) -> None:
        if self._rejected(req, resp):
            return
        try:
            body = req.json()
        except ValueError:
            self._send_error(resp, 400, "There was an issue with the request body: invalid JSON")
            return
        problem = self._invalid(body)
        if problem:
            self._send_error(resp, 400, problem)
            return
        fault = self.take_fault()
        self.wait_first_byte()
        if fault is not None and fault.kind == "status":
            if fault.body is not None:
                resp.send_json(fault.status, fault.body, fault.headers)
                return
            headers = dict(fault.headers)
            if fault.retry_after is not None:
                headers["retry-after"] = fault.retry_after
            self._send_error(resp, fault.status, fault.message, fault.error_type, headers)
            return
        prompt = (
            " ".join(str(m.get("content")) for m in body["messages"])
            + " "
            + str(body.get("system") or "")
        )
        answer = self.answer(
            prompt, body["max_tokens"], body.get("stop_sequences"), self._continuation(body)
        )
        if body.get("stream"):
            self._stream(resp, answer, fault)
        elif fault is not None and fault.kind == "malformed":
            self.send_malformed(resp)
        else:
            resp.send_json(
                200, self._message(answer, answer.text, final=True), {"request-id": "req_ok"}
            )

    def _message(self, answer: Answer, text: str | None, *, final: bool) -> dict[str, Any]:
        return {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [{"type": "text", "text": text}] if text is not None else [],
            "stop_reason": self._stop_reason(answer) if final else None,
            "stop_sequence": answer.stop_hit if final else None,
            "usage": {
                "input_tokens": answer.prompt_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": len(answer.tokens) if final else 1,
            },
        }

    @staticmethod
    def _stop_reason(answer: Answer) -> str:
        return {"length": "max_tokens", "stop_sequence": "stop_sequence"}.get(
            answer.finish, "end_turn"
        )

    def _stream(self, resp: Responder, answer: Answer, fault: Fault | None) -> None:
        head = [
            sse(
                {"type": "message_start", "message": self._message(answer, None, final=False)},
                "message_start",
            ),
            sse(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
                "content_block_start",
            ),
            sse({"type": "ping"}, "ping"),
        ]
        deltas = [
            sse(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": t},
                },
                "content_block_delta",
            )
            for t in answer.tokens
        ]
        tail: list[bytes | float | None] = [
            sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
            sse(
                {
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": self._stop_reason(answer),
                        "stop_sequence": answer.stop_hit,
                    },
                    "usage": {"output_tokens": len(answer.tokens)},
                },
                "message_delta",
            ),
            sse({"type": "message_stop"}, "message_stop"),
        ]
        if fault is not None:
            deltas = deltas[: fault.after]
            error = anthropic_error(529, fault.message, fault.error_type or "overloaded_error")
            error.pop("request_id")
            tail = {
                "cut": [None],
                "malformed": [
                    b'event: content_block_delta\ndata: {"type": "content_block_delta", \n\n'
                ],
                "error_event": [sse(error, "error")],
            }[fault.kind]
        resp.stream(200, [*head, *self.paced(deltas), *tail], headers={"request-id": "req_stream"})
