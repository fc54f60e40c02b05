"""realizar's native API: ``POST /generate`` and SSE ``POST /stream/generate``.

realizar (PAIML's Rust server) takes a raw ``prompt`` with ``max_tokens``, ``temperature``,
``strategy`` (``greedy`` | ``top_k`` | ``top_p``), ``top_k``, ``top_p``, ``seed`` and an
optional ``model_id``; it answers ``{"token_ids", "text", "num_generated"}`` and streams
``event: token`` (``{"token_id", "text"}``) then ``event: done`` (``{"num_generated"}``).
It has no stop sequences and no finish reason, so both are worked out here. Without
``max_tokens`` realizar stops after 50 tokens, silently: the limit is therefore always sent
(:data:`DEFAULT_MAX_TOKENS` when the request leaves it open), and an answer that reaches it
finishes with ``length``. The chat goes
through the model's template (target option ``chat_template``, see
:mod:`batuta.backends._template`) or is flattened. Every wire name lives in :data:`WIRE`. Target option ``openai_api: true`` speaks its
OpenAI-compatible ``/v1`` routes instead; ``strategy`` and ``model_id`` options pick those.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from batuta._util.options import flag, text
from batuta.backends import _http
from batuta.backends._template import chat_prompt
from batuta.backends.base import Adapter
from batuta.backends.types import Chunk, Completion, InferenceRequest, Target, Usage

if TYPE_CHECKING:
    from batuta.backends.openai import OpenAIAdapter

DEFAULT_MAX_TOKENS = 1024  # realizar's own default (50) cuts ordinary answers short

WIRE = {
    "generate": "/generate",
    "stream": "/stream/generate",
    "health": "/health",
    "prompt": "prompt",
    "max_tokens": "max_tokens",
    "temperature": "temperature",
    "strategy": "strategy",
    "top_k": "top_k",
    "top_p": "top_p",
    "seed": "seed",
    "model_id": "model_id",
    "text": "text",
    "token_ids": "token_ids",
    "num_generated": "num_generated",
    "token_event": "token",
    "done_event": "done",
}


class RealizarAdapter(Adapter):
    """realizar, natively or through its OpenAI-compatible routes."""

    enforces_deadlines = True

    def __init__(self, target: Target, client: _http.HttpClient) -> None:
        super().__init__(target, client)
        self.provider = target.name or target.backend
        self.base = _http.origin(target.base_url)
        self.openai: OpenAIAdapter | None = None
        if flag(target.options, "openai_api"):
            from batuta.backends.openai import OpenAIAdapter

            self.openai = OpenAIAdapter(target, client)

    def _strategy(self, request: InferenceRequest) -> str | None:
        if "strategy" in self.target.options:
            return text(self.target.options, "strategy")
        if request.temperature is not None and request.temperature <= 0:
            return "greedy"
        if request.top_p is not None:
            return "top_p"
        return "top_k" if request.temperature is not None else None

    def body(self, request: InferenceRequest) -> dict[str, Any]:
        """The native request body; unset fields keep realizar's own defaults."""
        body: dict[str, Any] = {WIRE["prompt"]: chat_prompt(request, self.target.options)}
        strategy = self._strategy(request)
        values: dict[str, Any] = {
            "max_tokens": _limit(request),
            "temperature": request.temperature if strategy != "greedy" else None,
            "strategy": strategy,
            "top_p": request.top_p,
            "seed": request.seed,
            "model_id": request.model or text(self.target.options, "model_id") or None,
        }
        body.update({WIRE[k]: v for k, v in values.items() if v is not None})
        body.update(_http.body_extras(self.target.options))
        return body

    async def _send(
        self, path: str, body: dict[str, Any], fbt: float | None, deadline: float | None
    ) -> _http.Response:
        return await _http.send(
            self.client,
            "POST",
            self.base + path,
            provider=self.provider,
            headers=_http.auth_headers(self.target, self.api_key()),
            json_body=body,
            first_byte_timeout=fbt,
            deadline=deadline,
        )

    def _finish(self, request: InferenceRequest, generated: int | None, stopped: bool) -> str:
        if stopped:
            return "stop"
        limit = _limit(request)
        return "length" if generated is not None and generated >= limit else "stop"

    async def complete(
        self,
        request: InferenceRequest,
        *,
        first_byte_timeout: float | None = None,
        deadline: float | None = None,
    ) -> Completion:
        """``POST /generate``. realizar's CPU path decodes prompt and answer together, so an
        echoed prompt is removed; stop sequences are applied here."""
        if self.openai is not None:
            return await self.openai.complete(
                request, first_byte_timeout=first_byte_timeout, deadline=deadline
            )
        body = self.body(request)
        response = await self._send(WIRE["generate"], body, first_byte_timeout, deadline)
        answer = await _http.read_answer(response, provider=self.provider, deadline=deadline)
        if not isinstance(answer.get(WIRE["text"]), str):
            raise _http.malformed(self.provider, "answer has no text")
        text: str = answer[WIRE["text"]]
        text = text.removeprefix(body[WIRE["prompt"]])
        stops = _http.StopFilter(request.stop)
        text = stops.feed(text) + stops.flush()
        generated = _http.int_or_none(answer.get(WIRE["num_generated"]))
        ids = answer.get(WIRE["token_ids"])
        prompt_tokens = None
        if isinstance(ids, list) and generated is not None and len(ids) > generated:
            prompt_tokens = len(ids) - generated
        usage = Usage(prompt_tokens, generated)
        return Completion(text, self._finish(request, generated, stops.hit), usage)

    async def stream(
        self,
        request: InferenceRequest,
        *,
        first_byte_timeout: float | None = None,
        deadline: float | None = None,
    ) -> AsyncGenerator[Chunk, None]:
        """``event: token`` per token until ``event: done``. realizar cannot be told to stop,
        so on a stop sequence we close the connection ourselves."""
        if self.openai is not None:
            chunks = self.openai.stream(
                request, first_byte_timeout=first_byte_timeout, deadline=deadline
            )
            async with aclosing(chunks):
                async for chunk in chunks:
                    yield chunk
            return
        response = await self._send(
            WIRE["stream"], self.body(request), first_byte_timeout, deadline
        )
        stops = _http.StopFilter(request.stop)
        tokens = 0
        async with _http.sse_stream(
            response,
            provider=self.provider,
            first_byte_timeout=first_byte_timeout,
            deadline=deadline,
        ) as events:
            async for event in events:
                data = _http.parse_object(event.data, provider=self.provider)
                if event.event == "error" or data.get("error"):
                    raise _http.error_from_body(data, provider=self.provider)
                if event.event == WIRE["token_event"]:
                    tokens += 1
                    text = stops.feed(str(data.get(WIRE["text"]) or ""))
                    if text:
                        yield Chunk(text)
                    if stops.hit:
                        yield Chunk("", "stop", Usage(None, tokens))
                        return
                elif event.event == WIRE["done_event"]:
                    generated = _http.int_or_none(data.get(WIRE["num_generated"]))
                    finish = self._finish(request, generated, False)
                    yield Chunk(stops.flush(), finish, Usage(None, generated))
                    await _http.drain(events)
                    return
        raise _http.cut(self.provider, "done")

    async def health(self) -> bool:
        """``GET /health`` answers 200 with ``{"status": "healthy"}``."""
        response = await _http.probe(self.client, self.base + WIRE["health"])
        return response is not None and response.is_success


def _limit(request: InferenceRequest) -> int:
    """The ``max_tokens`` sent: the request's, else :data:`DEFAULT_MAX_TOKENS`."""
    return request.max_tokens if request.max_tokens is not None else DEFAULT_MAX_TOKENS
