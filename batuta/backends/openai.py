"""The OpenAI Chat Completions wire protocol, for OpenAI and every server that imitates it.

One adapter serves llama.cpp, llamafile, vLLM, LocalAI, LM Studio, GPT4All, MLC, TabbyAPI,
mistral.rs, OpenAI, Groq, Together, Fireworks, Hugging Face and Modal. What differs between
them is data: the catalogue record's :class:`~batuta.catalogue.Dialect` (max-tokens field,
``stream_options``, blocking-only servers, ``stop`` support, models-list shape, auth header)
plus the target's options:

- ``api: completions`` uses the legacy ``/completions`` route with a raw prompt: the chat
  through the ``chat_template`` option when given (see :mod:`batuta.backends._template`),
  else flattened;
- continuing an interrupted answer (``assistant_prefix``): vLLM is told to continue the
  final assistant message; llama.cpp-family servers (``Dialect.continues_by_prompt``) close
  that turn on their chat route, so with a ``chat_template`` option the request goes to
  ``/completions`` as the template's prompt with the assistant turn left open and the
  prefix appended, which the model continues token for token (without a template, or with
  one that cannot render the chat, it stays a chat request, and the router splices the
  restarted answer);
- ``param.<field>: <json>`` adds engine extras to the body (``param.top_k: "40"``);
- ``health_path`` overrides the readiness route of a local server;
- ``organization`` / ``project`` become ``OpenAI-Organization`` / ``OpenAI-Project``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import httpx

from batuta.backends import _http
from batuta.backends._template import chat_prompt, templated_prompt
from batuta.backends.base import Adapter
from batuta.backends.types import Chunk, Completion, InferenceRequest, Target, Usage
from batuta.catalogue import Dialect, lookup
from batuta.errors import BackendError, FailureKind


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    return Usage(
        _http.int_or_none(raw.get("prompt_tokens")), _http.int_or_none(raw.get("completion_tokens"))
    )


def _first_choice(body: dict[str, Any]) -> dict[str, Any] | None:
    """``choices[0]``, found by index: Azure and usage chunks send ``choices: []``."""
    for choice in body.get("choices") or ():
        if isinstance(choice, dict) and choice.get("index", 0) == 0:
            return choice
    return None


def _cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """Apply stop sequences ourselves for servers that refuse ``stop`` (GPT4All)."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class OpenAIAdapter(Adapter):
    """Chat Completions over HTTP: SSE streaming, blocking calls and a models probe."""

    def __init__(self, target: Target, client: httpx.AsyncClient) -> None:
        super().__init__(target, client)
        record = lookup(target.backend)
        self.dialect: Dialect = record.dialect if record else Dialect()
        self.provider = target.name or target.backend
        self.legacy = target.options.get("api") == "completions"

    # ------------------------------------------------------------------ request

    def continues(self, request: InferenceRequest) -> bool:
        """Whether ``request``'s assistant prefix goes out as a raw prompt the model
        continues exactly (see the module docstring)."""
        return (
            bool(request.assistant_prefix)
            and self.dialect.continues_by_prompt
            and templated_prompt(request, self.target.options) is not None
        )

    def _raw_prompt(self, request: InferenceRequest) -> bool:
        return self.legacy or self.continues(request)

    def url(self, path: str) -> str:
        """A route under the target's API base (``/v1`` added for bare local servers)."""
        return _http.api_url(self.target.base_url, path)

    def headers(self) -> dict[str, str]:
        """Auth in the dialect's style plus the optional OpenAI organisation/project."""
        headers = _http.auth_headers(self.target, self.api_key(), self.dialect.auth_header)
        for option, header in (
            ("organization", "OpenAI-Organization"),
            ("project", "OpenAI-Project"),
        ):
            if option in self.target.options:
                headers[header] = self.target.options[option]
        return headers

    def body(self, request: InferenceRequest, *, stream: bool) -> dict[str, Any]:
        """The JSON body for ``request`` in this target's dialect."""
        body: dict[str, Any] = {"model": request.model or self.target.model}
        raw = self._raw_prompt(request)
        if raw:
            body["prompt"] = chat_prompt(request, self.target.options)
        else:
            body["messages"] = [{"role": m.role, "content": m.content} for m in request.messages()]
            if request.assistant_prefix and self.target.backend == "vllm":
                # vLLM continues the final assistant message only when told to.
                body["continue_final_message"] = True
                body["add_generation_prompt"] = False
        if request.max_tokens is not None:
            field = "max_tokens" if raw else self.dialect.max_tokens_field
            body[field] = request.max_tokens
        for name in ("temperature", "top_p", "seed"):
            value = getattr(request, name)
            if value is not None:
                body[name] = value
        if request.stop and self.dialect.sends_stop:
            body["stop"] = list(request.stop)
        body["stream"] = stream
        if stream and self.dialect.stream_usage:
            body["stream_options"] = {"include_usage": True}
        body.update(_http.body_extras(self.target.options))
        return body

    async def _send(
        self,
        request: InferenceRequest,
        *,
        stream: bool,
        first_byte_timeout: float | None,
        deadline: float | None,
    ) -> httpx.Response:
        path = (
            self.dialect.completions_path if self._raw_prompt(request) else self.dialect.chat_path
        )
        return await _http.send(
            self.client,
            "POST",
            self.url(path),
            provider=self.provider,
            headers=self.headers(),
            json_body=self.body(request, stream=stream),
            first_byte_timeout=first_byte_timeout,
            deadline=deadline,
            secret=self.api_key(),
        )

    def _error(self, raw: Any) -> BackendError:
        return _http.error_from_body({"error": raw}, provider=self.provider, secret=self.api_key())

    # ------------------------------------------------------------------ calls

    async def complete(
        self,
        request: InferenceRequest,
        *,
        first_byte_timeout: float | None = None,
        deadline: float | None = None,
    ) -> Completion:
        """One blocking call (``stream: false``)."""
        response = await self._send(
            request, stream=False, first_byte_timeout=first_byte_timeout, deadline=deadline
        )
        body = await _http.read_json(response, provider=self.provider, deadline=deadline)
        if not isinstance(body, dict):
            raise _http.malformed(self.provider, "response is not a JSON object")
        if body.get("error"):
            raise self._error(body["error"])
        choice = _first_choice(body)
        if choice is None:
            raise _http.malformed(self.provider, "response has no choices")
        message = choice.get("message")
        text = message.get("content") if isinstance(message, dict) else choice.get("text")
        if not isinstance(text, str):
            text = ""
        finish = _http.finish_reason(choice.get("finish_reason"))
        if request.stop and not self.dialect.sends_stop:
            text, stopped = _cut_at_stop(text, request.stop)
            finish = "stop" if stopped else finish
        return Completion(text, finish, _usage(body.get("usage")) or Usage())

    async def stream(
        self,
        request: InferenceRequest,
        *,
        first_byte_timeout: float | None = None,
        deadline: float | None = None,
    ) -> AsyncGenerator[Chunk, None]:
        """Stream over SSE. Ends on ``[DONE]``, on finish reason + usage, or on a close after
        a finish reason; a close before any finish reason is STREAM_CUT. What is left of the
        body after the last chunk is read too (bounded), so the connection is reused."""
        if not self.dialect.streaming:
            done = await self.complete(
                request, first_byte_timeout=first_byte_timeout, deadline=deadline
            )
            yield Chunk(done.text, done.finish_reason, done.usage)
            return
        response = await self._send(
            request, stream=True, first_byte_timeout=first_byte_timeout, deadline=deadline
        )
        finish: str | None = None
        usage: Usage | None = None
        terminated = False
        events = _http.forgive_late_cut(
            _http.iter_sse(
                response,
                provider=self.provider,
                first_byte_timeout=first_byte_timeout,
                deadline=deadline,
            ),
            lambda: finish is not None,
        )
        try:
            async with aclosing(events):
                async for event in events:
                    if event.is_done():
                        terminated = True
                        break
                    body = _http.parse_object(event.data, provider=self.provider)
                    groq = body.get("x_groq")
                    groq = groq if isinstance(groq, dict) else {}
                    if body.get("error") or groq.get("error"):
                        raise self._error(body.get("error") or groq.get("error"))
                    choice = _first_choice(body)
                    if choice is not None:
                        delta = choice.get("delta")
                        text = (
                            delta.get("content") if isinstance(delta, dict) else choice.get("text")
                        )
                        if isinstance(text, str) and text:
                            yield Chunk(text)
                        finish = _http.finish_reason(choice.get("finish_reason")) or finish
                    usage = _usage(body.get("usage")) or _usage(groq.get("usage")) or usage
                    if finish and usage:
                        break
                if finish is None and not terminated:
                    raise BackendError(
                        FailureKind.STREAM_CUT,
                        f"{self.provider}: stream ended before a finish reason",
                    )
                yield Chunk("", finish, usage)
                await _http.drain(events)
        finally:
            await response.aclose()

    # ------------------------------------------------------------------ probes

    async def health(self) -> bool:
        """Local servers: their readiness route (llama.cpp ``/health`` answers 503 while
        loading; servers without it fall back to ``GET /v1/models``). Remote APIs: an
        authenticated ``GET /models``, which also proves the key works."""
        record = lookup(self.target.backend)
        try:
            headers = self.headers()
        except BackendError:
            return False
        models_url = self.url(self.dialect.models_path)
        health_path = self.target.options.get("health_path") or (
            record.health_path if record else None
        )
        if self.target.local and health_path:
            response = await _http.probe(
                self.client, _http.origin(self.target.base_url) + health_path, headers=headers
            )
            if response is None or response.status_code != 404:
                return response is not None and response.is_success
        response = await _http.probe(self.client, models_url, headers=headers)
        return response is not None and response.is_success

    async def models(self) -> list[str]:
        """Model ids the server lists (``{"data": [...]}`` or Together's bare array)."""
        response = await _http.send(
            self.client,
            "GET",
            self.url(self.dialect.models_path),
            provider=self.provider,
            headers=self.headers(),
            secret=self.api_key(),
        )
        body = await _http.read_json(response, provider=self.provider)
        items = body.get("data") if isinstance(body, dict) else body
        if not isinstance(items, list):
            raise _http.malformed(self.provider, "models list has no data array")
        return [str(m["id"]) for m in items if isinstance(m, dict) and "id" in m]
