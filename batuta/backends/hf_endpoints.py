"""Hugging Face Inference Endpoints: a dedicated URL with an inference engine behind it.

``options.engine`` says which protocol that engine speaks:

- ``openai`` (default; TGI's Messages API, vLLM, SGLang, llama.cpp): Chat Completions at
  ``{endpoint}/v1/chat/completions``, delegated to :class:`OpenAIAdapter`;
- ``tgi``: TGI's native ``/generate`` and ``/generate_stream`` (raw prompt, token events).

Protected endpoints take the HF token as ``Authorization: Bearer`` (``api_key_env``, default
``HF_TOKEN``). An endpoint scaled to zero answers 503 while it wakes up: OVERLOADED, which
the router retries with backoff within the route's deadline. ``health()`` asks the engine's
``/health`` (``options.health_path`` to change it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import httpx

from batuta.backends import _http
from batuta.backends.base import Adapter
from batuta.backends.openai import OpenAIAdapter
from batuta.backends.types import Chunk, Completion, InferenceRequest, Target, Usage
from batuta.errors import BackendError, FailureKind

ENGINES = ("openai", "tgi")


class HFEndpointAdapter(Adapter):
    """Routes each call to the engine protocol the endpoint serves."""

    def __init__(self, target: Target, client: httpx.AsyncClient) -> None:
        super().__init__(target, client)
        self.provider = target.name or target.backend
        self.engine = target.options.get("engine", "openai").lower()
        self._openai = OpenAIAdapter(target, client)

    def _check(self) -> None:
        if self.engine not in ENGINES:
            raise BackendError(
                FailureKind.CLIENT,
                f"{self.provider}: options.engine must be one of {', '.join(ENGINES)}",
            )
        if not self.target.base_url or "{" in self.target.base_url:
            raise BackendError(
                FailureKind.CLIENT, f"{self.provider}: set base_url to the endpoint's URL"
            )

    def origin(self) -> str:
        """The endpoint's root (a pasted ``/v1`` removed), where TGI's native routes live."""
        return _http.origin(self.target.base_url)

    def headers(self) -> dict[str, str]:
        return _http.auth_headers(self.target, self.api_key())

    # ------------------------------------------------------------------ calls

    async def complete(
        self,
        request: InferenceRequest,
        *,
        first_byte_timeout: float | None = None,
        deadline: float | None = None,
    ) -> Completion:
        """One blocking call through the endpoint's engine."""
        self._check()
        if self.engine == "openai":
            return await self._openai.complete(
                request, first_byte_timeout=first_byte_timeout, deadline=deadline
            )
        response = await self._post(
            "/generate", request, first_byte_timeout=first_byte_timeout, deadline=deadline
        )
        body = await _http.read_json(response, provider=self.provider, deadline=deadline)
        if not isinstance(body, dict) or not isinstance(body.get("generated_text"), str):
            raise _http.malformed(self.provider, "answer has no generated_text")
        raw_details = body.get("details")
        details: dict[str, Any] = raw_details if isinstance(raw_details, dict) else {}
        usage = Usage(
            _http.int_or_none(response.headers.get("x-prompt-tokens")),
            _http.int_or_none(details.get("generated_tokens"))
            or _http.int_or_none(response.headers.get("x-generated-tokens")),
        )
        return Completion(
            body["generated_text"], _http.finish_reason(details.get("finish_reason")), usage
        )

    async def stream(
        self,
        request: InferenceRequest,
        *,
        first_byte_timeout: float | None = None,
        deadline: float | None = None,
    ) -> AsyncIterator[Chunk]:
        """Token by token. TGI's native stream has no terminator: it ends with the event
        that carries ``details``; a close before that is STREAM_CUT."""
        self._check()
        if self.engine == "openai":
            async for chunk in self._openai.stream(
                request, first_byte_timeout=first_byte_timeout, deadline=deadline
            ):
                yield chunk
            return
        response = await self._post(
            "/generate_stream", request, first_byte_timeout=first_byte_timeout, deadline=deadline
        )
        prompt_tokens = _http.int_or_none(response.headers.get("x-prompt-tokens"))
        events = _http.iter_sse(
            response,
            provider=self.provider,
            first_byte_timeout=first_byte_timeout,
            deadline=deadline,
        )
        async with aclosing(events):
            async for event in events:
                body = _http.parse_json(event.data, provider=self.provider)
                if not isinstance(body, dict):
                    raise _http.malformed(self.provider, "event is not a JSON object", event.data)
                if body.get("error"):
                    raise _http.error_from_body(body, provider=self.provider)
                token = body.get("token")
                if isinstance(token, dict) and not token.get("special"):
                    text = token.get("text")
                    if isinstance(text, str) and text:
                        yield Chunk(text)
                details = body.get("details")
                if isinstance(details, dict):
                    usage = Usage(
                        _http.int_or_none(details.get("input_length")) or prompt_tokens,
                        _http.int_or_none(details.get("generated_tokens")),
                    )
                    yield Chunk("", _http.finish_reason(details.get("finish_reason")), usage)
                    return
        raise BackendError(
            FailureKind.STREAM_CUT, f"{self.provider}: stream ended before its final event"
        )

    async def _post(
        self,
        path: str,
        request: InferenceRequest,
        *,
        first_byte_timeout: float | None,
        deadline: float | None,
    ) -> httpx.Response:
        return await _http.send(
            self.client,
            "POST",
            self.origin() + path,
            provider=self.provider,
            headers=self.headers(),
            json_body=self.generate_body(request),
            first_byte_timeout=first_byte_timeout,
            deadline=deadline,
            secret=self.api_key(),
        )

    def generate_body(self, request: InferenceRequest) -> dict[str, Any]:
        """TGI's ``{"inputs", "parameters"}``. TGI refuses ``temperature: 0``: greedy
        decoding is ``do_sample: false`` instead."""
        params: dict[str, Any] = {"details": True, "return_full_text": False}
        if request.max_tokens is not None:
            params["max_new_tokens"] = request.max_tokens
        sampling = False
        if request.temperature:
            params["temperature"] = request.temperature
            sampling = True
        if request.top_p is not None and 0 < request.top_p < 1:
            params["top_p"] = request.top_p
            sampling = True
        params["do_sample"] = sampling
        if request.stop:
            params["stop"] = list(request.stop)
        if request.seed is not None:
            params["seed"] = request.seed
        params.update(_http.body_extras(self.target.options))
        return {"inputs": _http.plain_prompt(request), "parameters": params}

    # ------------------------------------------------------------------ probes

    async def health(self) -> bool:
        """The engine's ``/health``: 200 when ready, 503 while the endpoint wakes up."""
        try:
            self._check()
            headers = self.headers()
        except BackendError:
            return False
        path = self.target.options.get("health_path") or "/health"
        try:
            response = await self.client.get(
                self.origin() + path, headers=headers, timeout=_http.request_timeout(total=10.0)
            )
        except httpx.HTTPError:
            return False
        return response.is_success
