"""Hugging Face TGI's native API: ``POST /generate`` and SSE ``POST /generate_stream``.

TGI's native routes take raw text: the chat goes into ``inputs`` through the model's chat
template (target option ``chat_template``, see :mod:`batuta.backends._template`), or
flattened when there is none. We always ask for ``details`` to get the finish reason and
token counts; the prompt's token count comes from ``details.input_length`` or the
``x-prompt-tokens`` header. TGI answers 422 to ``temperature: 0``, to ``top_p`` outside
(0, 1) exclusive (the common 1.0 included) and to more stop sequences than its
``--max-stop-sequences`` (4 by default), so those become greedy decoding, no ``top_p`` (no
nucleus filter, which is what 1.0 means) and the first 4 stop sequences; every stop
sequence is applied here on the text anyway (TGI keeps the matched one in it). Target
option ``api: messages`` uses TGI's OpenAI-compatible Messages API instead, with the same
limits (the catalogue record's dialect).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from batuta._util.options import text
from batuta.backends import _http
from batuta.backends._template import chat_prompt
from batuta.backends.base import Adapter
from batuta.backends.types import Chunk, Completion, InferenceRequest, Target, Usage
from batuta.errors import BackendError

if TYPE_CHECKING:
    from batuta.backends.openai import OpenAIAdapter

MAX_STOP_SEQUENCES = 4  # TGI's default --max-stop-sequences


class TGIAdapter(Adapter):
    """Text Generation Inference, native routes."""

    enforces_deadlines = True

    def __init__(self, target: Target, client: _http.HttpClient) -> None:
        super().__init__(target, client)
        self.provider = target.name or target.backend
        self.base = _http.origin(target.base_url)
        self.messages_api: OpenAIAdapter | None = None
        if target.options.get("api") == "messages":
            from batuta.backends.openai import OpenAIAdapter

            self.messages_api = OpenAIAdapter(target, client)

    def body(self, request: InferenceRequest) -> dict[str, Any]:
        """``{"inputs", "parameters"}`` for ``request``."""
        params: dict[str, Any] = {"details": True, "return_full_text": False}
        if request.max_tokens is not None:
            params["max_new_tokens"] = request.max_tokens
        if request.temperature is not None and request.temperature > 0:
            params["temperature"] = request.temperature
            params["do_sample"] = True
        elif request.temperature is not None:
            params["do_sample"] = False
        if request.top_p is not None and 0 < request.top_p < 1:
            params["top_p"] = request.top_p
        stops, _ = _http.split_stops(request.stop, limit=MAX_STOP_SEQUENCES)
        if stops:
            params["stop"] = stops
        if request.seed is not None:
            params["seed"] = request.seed
        params.update(_http.body_extras(self.target.options))
        return {"inputs": chat_prompt(request, self.target.options), "parameters": params}

    async def _send(
        self, path: str, request: InferenceRequest, fbt: float | None, deadline: float | None
    ) -> _http.Response:
        return await _http.send(
            self.client,
            "POST",
            self.base + path,
            provider=self.provider,
            headers=_http.auth_headers(self.target, self.api_key()),
            json_body=self.body(request),
            first_byte_timeout=fbt,
            deadline=deadline,
            secret=self.api_key(),
        )

    def _error(self, body: dict[str, Any]) -> BackendError:
        return _http.error_from_body(body, provider=self.provider)

    @staticmethod
    def _prompt_tokens(details: dict[str, Any], headers: Mapping[str, str]) -> int | None:
        count = _http.int_or_none(details.get("input_length"))
        return count if count is not None else _http.int_or_none(headers.get("x-prompt-tokens"))

    async def complete(
        self,
        request: InferenceRequest,
        *,
        first_byte_timeout: float | None = None,
        deadline: float | None = None,
    ) -> Completion:
        """``POST /generate``; a matched stop sequence is removed from the text."""
        if self.messages_api is not None:
            return await self.messages_api.complete(
                request, first_byte_timeout=first_byte_timeout, deadline=deadline
            )
        response = await self._send("/generate", request, first_byte_timeout, deadline)
        body = await _http.read_json(response, provider=self.provider, deadline=deadline)
        if isinstance(body, list) and body:
            body = body[0]
        if isinstance(body, dict) and body.get("error"):
            raise self._error(body)
        if not isinstance(body, dict) or not isinstance(body.get("generated_text"), str):
            raise _http.malformed(self.provider, "answer has no generated_text")
        raw = body.get("details")
        details: dict[str, Any] = raw if isinstance(raw, dict) else {}
        text = body["generated_text"]
        stops = _http.StopFilter(request.stop)
        text = stops.feed(text) + stops.flush()
        output = _http.int_or_none(details.get("generated_tokens"))
        if output is None:
            output = _http.int_or_none(response.headers.get("x-generated-tokens"))
        usage = Usage(self._prompt_tokens(details, response.headers), output)
        finish = "stop" if stops.hit else _http.finish_reason(details.get("finish_reason"))
        return Completion(text, finish, usage)

    async def stream(
        self,
        request: InferenceRequest,
        *,
        first_byte_timeout: float | None = None,
        deadline: float | None = None,
    ) -> AsyncGenerator[Chunk, None]:
        """One SSE event per token; the one carrying ``details`` ends the answer."""
        if self.messages_api is not None:
            chunks = self.messages_api.stream(
                request, first_byte_timeout=first_byte_timeout, deadline=deadline
            )
            async with aclosing(chunks):
                async for chunk in chunks:
                    yield chunk
            return
        response = await self._send("/generate_stream", request, first_byte_timeout, deadline)
        stops = _http.StopFilter(request.stop)
        async with _http.sse_stream(
            response,
            provider=self.provider,
            first_byte_timeout=first_byte_timeout,
            deadline=deadline,
        ) as events:
            async for event in events:
                body = _http.parse_object(event.data, provider=self.provider)
                if body.get("error"):
                    raise self._error(body)
                token = body.get("token")
                if isinstance(token, dict) and not token.get("special"):
                    text = stops.feed(str(token.get("text") or ""))
                    if text:
                        yield Chunk(text)
                details = body.get("details")
                if isinstance(details, dict):
                    rest = stops.flush()
                    usage = Usage(
                        self._prompt_tokens(details, response.headers),
                        _http.int_or_none(details.get("generated_tokens")),
                    )
                    reason = details.get("finish_reason")
                    finish = "stop" if stops.hit else _http.finish_reason(reason)
                    yield Chunk(rest, finish, usage)
                    await _http.drain(events)
                    return
        raise _http.cut(self.provider, "details")

    async def health(self) -> bool:
        """``GET /health`` (``options.health_path``) answers 200; 503 while unhealthy. The
        key goes along when one is set: endpoints behind a gateway check it there too."""
        try:
            headers = _http.auth_headers(self.target, self.api_key())
        except BackendError:
            return False
        path = text(self.target.options, "health_path") or "/health"
        response = await _http.probe(self.client, self.base + path, headers=headers)
        return response is not None and response.is_success
