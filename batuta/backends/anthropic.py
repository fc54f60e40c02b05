"""Anthropic's Messages API: ``POST /v1/messages`` with named SSE events.

``max_tokens`` is required (1024 when the request leaves it open), the system prompt is a
top-level field, and an answer to continue is sent as a trailing assistant message
(prefill). The API refuses a prefill ending in whitespace, so that whitespace is cut off
and dropped again from the start of the continuation. Newer models refuse any prefill (a
400 saying so): the adapter then asks once more with the partial answer as an ordinary
assistant turn followed by a user turn asking to continue it, and keeps asking that way.

What the API would refuse is never sent: a stop sequence that is empty or only whitespace
(``"\n"``) is applied here on the answer instead of being sent; ``temperature`` and
``top_p`` together are a 400 on current models, so only temperature goes when both are set;
temperature runs 0-1 there, so a neutral request's (0-2) above 1 is sent as 1 and one
outside 0-2 is refused (see :func:`batuta.backends._payload.claude_sampling`).

Stream events: ``message_start`` (input tokens) → ``content_block_delta`` (``text_delta``)
→ ``message_delta`` (stop reason, output tokens) → ``message_stop``; ``ping`` is ignored
and an ``error`` event after the 200 (``overloaded_error``) is a failure. Target options:
``anthropic_version``, ``anthropic_beta``, ``param.<field>`` (``param.top_k``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from batuta._util.options import text
from batuta.backends import _http
from batuta.backends.base import Adapter
from batuta.backends.types import Chunk, Completion, InferenceRequest, Target, Usage
from batuta.errors import BackendError

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024


class AnthropicAdapter(Adapter):
    """Claude models over the Messages API."""

    enforces_deadlines = True

    def __init__(self, target: Target, client: _http.HttpClient) -> None:
        super().__init__(target, client)
        self.provider = target.name or target.backend
        self.no_prefill = False  # set once the model refused a trailing assistant turn

    def headers(self) -> dict[str, str]:
        """``x-api-key`` plus the API version (and beta flags when configured)."""
        headers = _http.auth_headers(self.target, self.api_key(), "x-api-key")
        headers["anthropic-version"] = text(self.target.options, "anthropic_version", API_VERSION)
        if "anthropic_beta" in self.target.options:
            headers["anthropic-beta"] = text(self.target.options, "anthropic_beta")
        return headers

    def body(
        self, request: InferenceRequest, *, stream: bool
    ) -> tuple[dict[str, Any], str, tuple[str, ...]]:
        """The request body, the whitespace cut from the end of the prefill, and the stop
        sequences left for the adapter to apply (those the API refuses)."""
        continuing = bool(request.assistant_prefix) and self.no_prefill
        chat = _http.continuation_chat(request) if continuing else request.messages()
        systems = [m.content for m in chat if m.role == "system"]
        messages = [
            {"role": m.role, "content": m.content} for m in chat if m.role in ("user", "assistant")
        ]
        trimmed = ""
        if request.assistant_prefix and not continuing:
            prefix = request.assistant_prefix.rstrip()
            trimmed = request.assistant_prefix[len(prefix) :]
            messages[-1]["content"] = prefix
        body: dict[str, Any] = {
            "model": request.model or self.target.model,
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            "messages": messages,
        }
        if systems:
            body["system"] = "\n\n".join(systems)
        body.update(_http.claude_sampling(request, self.provider))
        sent, local = _http.split_stops(request.stop, blank_ok=False)
        if sent:
            body["stop_sequences"] = sent
        if stream:
            body["stream"] = True
        body.update(_http.body_extras(self.target.options))
        return body, trimmed, local

    async def _send(
        self, body: dict[str, Any], fbt: float | None, deadline: float | None
    ) -> _http.Response:
        return await _http.send(
            self.client,
            "POST",
            _http.api_url(self.target.base_url, "/messages"),
            provider=self.provider,
            headers=self.headers(),
            json_body=body,
            first_byte_timeout=fbt,
            deadline=deadline,
            secret=self.api_key(),
        )

    async def _open(
        self,
        request: InferenceRequest,
        *,
        stream: bool,
        fbt: float | None,
        deadline: float | None,
    ) -> tuple[_http.Response, str, tuple[str, ...]]:
        """Send ``request``; a model refusing the prefill is asked again (once) with the
        continuation as a user turn, and from then on always that way."""
        body, trimmed, local = self.body(request, stream=stream)
        try:
            return await self._send(body, fbt, deadline), trimmed, local
        except BackendError as exc:
            if not request.assistant_prefix or self.no_prefill or not _http.refuses_prefill(exc):
                raise
        self.no_prefill = True
        body, trimmed, local = self.body(request, stream=stream)
        return await self._send(body, fbt, deadline), trimmed, local

    def _error(self, body: Any) -> BackendError:
        return _http.error_from_body(body, provider=self.provider, secret=self.api_key())

    async def complete(
        self,
        request: InferenceRequest,
        *,
        first_byte_timeout: float | None = None,
        deadline: float | None = None,
    ) -> Completion:
        """One blocking call; text is the concatenation of the text blocks."""
        response, trimmed, local = await self._open(
            request, stream=False, fbt=first_byte_timeout, deadline=deadline
        )
        answer = await _http.read_answer(
            response,
            provider=self.provider,
            deadline=deadline,
            in_band=lambda body: self._error(body) if body.get("type") == "error" else None,
        )
        if not isinstance(answer.get("content"), list):
            raise _http.malformed(self.provider, "answer has no content list")
        text = "".join(
            str(block.get("text") or "")
            for block in answer["content"]
            if isinstance(block, dict) and block.get("type") == "text"
        )
        if trimmed and text.startswith(trimmed):
            text = text[len(trimmed) :]
        stops = _http.StopFilter(local)
        text = stops.feed(text) + stops.flush()
        raw = answer.get("usage")
        usage: dict[str, Any] = raw if isinstance(raw, dict) else {}
        return Completion(
            text,
            "stop" if stops.hit else _http.finish_reason(answer.get("stop_reason")),
            Usage(
                _http.int_or_none(usage.get("input_tokens")),
                _http.int_or_none(usage.get("output_tokens")),
            ),
        )

    async def stream(
        self,
        request: InferenceRequest,
        *,
        first_byte_timeout: float | None = None,
        deadline: float | None = None,
    ) -> AsyncGenerator[Chunk, None]:
        """Named SSE events until ``message_stop`` (a close right after ``message_delta``
        is accepted too); anything earlier ending the stream is STREAM_CUT."""
        response, trimmed, local = await self._open(
            request, stream=True, fbt=first_byte_timeout, deadline=deadline
        )
        stops = _http.StopFilter(local)
        input_tokens: int | None = None
        output_tokens: int | None = None
        stop: str | None = None
        async with _http.sse_stream(
            response,
            provider=self.provider,
            first_byte_timeout=first_byte_timeout,
            deadline=deadline,
            answered=lambda: stop is not None,
        ) as events:
            async for event in events:
                data = _http.parse_object(event.data, provider=self.provider) if event.data else {}
                kind = event.event if event.event != "message" else str(data.get("type", ""))
                if kind == "error":
                    raise self._error(data)
                if kind == "message_start":
                    usage = (data.get("message") or {}).get("usage") or {}
                    input_tokens = _http.int_or_none(usage.get("input_tokens"))
                    output_tokens = _http.int_or_none(usage.get("output_tokens"))
                elif kind == "content_block_delta":
                    delta = data.get("delta") or {}
                    text = delta.get("text") if delta.get("type") == "text_delta" else None
                    if isinstance(text, str) and trimmed:
                        text, trimmed = text.removeprefix(trimmed), ""
                    if isinstance(text, str) and text:
                        text = stops.feed(text)
                        if text:
                            yield Chunk(text)
                        if stops.hit:  # a stop sequence the API was not told about
                            stop = "stop"
                            break
                elif kind == "message_delta":
                    stop = _http.finish_reason((data.get("delta") or {}).get("stop_reason"))
                    count = _http.int_or_none((data.get("usage") or {}).get("output_tokens"))
                    output_tokens = count if count is not None else output_tokens
                elif kind == "message_stop":
                    break
            else:
                if stop is None:
                    raise _http.cut(self.provider, "message_stop")
            yield Chunk(stops.flush(), stop, Usage(input_tokens, output_tokens))
            if not stops.hit:
                await _http.drain(events)

    async def health(self) -> bool:
        """An authenticated ``GET /v1/models`` answers 200."""
        try:
            headers = self.headers()
        except BackendError:
            return False
        response = await _http.probe(
            self.client, _http.api_url(self.target.base_url, "/models"), headers=headers
        )
        return response is not None and response.is_success
