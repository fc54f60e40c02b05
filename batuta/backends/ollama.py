"""Ollama's native chat API: ``POST /api/chat``, streamed as NDJSON.

Sampling goes in ``options`` (``num_predict``, ``temperature``, ``top_p``, ``stop``,
``seed``; ``param.<name>`` target options add more, such as ``param.num_ctx``); the target
option ``keep_alive`` (``10m``, ``-1``, ``0``: whole seconds in the routing table) says how
long the model stays loaded.
Usage comes from the final object's ``prompt_eval_count`` / ``eval_count``. A trailing
assistant message is continued, which is how an interrupted answer resumes here.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from batuta._util.options import OptionValue, text
from batuta.backends import _http
from batuta.backends.base import Adapter
from batuta.backends.types import Chunk, Completion, InferenceRequest, Target, Usage
from batuta.catalogue import lookup
from batuta.errors import BackendError, FailureKind


def _usage(body: dict[str, Any]) -> Usage:
    return Usage(
        _http.int_or_none(body.get("prompt_eval_count")), _http.int_or_none(body.get("eval_count"))
    )


def _keep_alive(value: OptionValue) -> str | int:
    """Ollama takes a duration string or a number of seconds (``0`` unloads, ``-1`` keeps):
    the manifest gives whole seconds, a table from before typed options a string."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    try:
        return int(str(value))
    except ValueError:
        return str(value)


class OllamaAdapter(Adapter):
    """Talks to a local Ollama (or ollama.com with a Bearer key)."""

    enforces_deadlines = True

    def __init__(self, target: Target, client: _http.HttpClient) -> None:
        super().__init__(target, client)
        self.provider = target.name or target.backend
        base = target.base_url.rstrip("/")
        self.api = base if base.endswith("/api") else base + "/api"

    def body(self, request: InferenceRequest, *, stream: bool) -> dict[str, Any]:
        """The ``/api/chat`` body for ``request``."""
        options: dict[str, Any] = {}
        if request.max_tokens is not None:
            options["num_predict"] = request.max_tokens
        for name in ("temperature", "top_p", "seed"):
            value = getattr(request, name)
            if value is not None:
                options[name] = value
        if request.stop:
            options["stop"] = list(request.stop)
        options.update(_http.body_extras(self.target.options))
        body: dict[str, Any] = {
            "model": request.model or self.target.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages()],
            "stream": stream,
        }
        if options:
            body["options"] = options
        if "keep_alive" in self.target.options:
            body["keep_alive"] = _keep_alive(self.target.options["keep_alive"])
        return body

    async def _send(
        self, request: InferenceRequest, stream: bool, fbt: float | None, deadline: float | None
    ) -> _http.Response:
        return await _http.send(
            self.client,
            "POST",
            self.api + "/chat",
            provider=self.provider,
            headers=_http.auth_headers(self.target, self.api_key()),
            json_body=self.body(request, stream=stream),
            first_byte_timeout=fbt,
            deadline=deadline,
            secret=self.api_key(),
        )

    def _in_band(self, body: dict[str, Any]) -> BackendError | None:
        error = body.get("error")
        if not error:
            return None
        busy = isinstance(error, str) and "server busy" in error
        default = FailureKind.OVERLOADED if busy else FailureKind.SERVER
        return _http.error_from_body(body, provider=self.provider, default=default)

    def _check(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _http.malformed(self.provider, "answer is not a JSON object")
        error = self._in_band(body)
        if error is not None:
            raise error
        return body

    @staticmethod
    def _text(body: dict[str, Any]) -> str:
        message = body.get("message")
        text = message.get("content") if isinstance(message, dict) else None
        return text if isinstance(text, str) else ""

    async def complete(
        self,
        request: InferenceRequest,
        *,
        first_byte_timeout: float | None = None,
        deadline: float | None = None,
    ) -> Completion:
        """One blocking ``/api/chat`` call (``stream: false``)."""
        response = await self._send(request, False, first_byte_timeout, deadline)
        body = await _http.read_answer(
            response, provider=self.provider, deadline=deadline, in_band=self._in_band
        )
        return Completion(
            self._text(body), _http.finish_reason(body.get("done_reason")), _usage(body)
        )

    async def stream(
        self,
        request: InferenceRequest,
        *,
        first_byte_timeout: float | None = None,
        deadline: float | None = None,
    ) -> AsyncGenerator[Chunk, None]:
        """NDJSON objects until the one with ``done: true``; an ``{"error": ...}`` line under
        the 200 is a failure, and a close before ``done`` is STREAM_CUT."""
        response = await self._send(request, True, first_byte_timeout, deadline)
        lines = _http.iter_ndjson(
            response,
            provider=self.provider,
            first_byte_timeout=first_byte_timeout,
            deadline=deadline,
        )
        async with _http.opened(lines, response=response) as lines:
            async for raw in lines:
                body = self._check(raw)
                text = self._text(body)
                if text:
                    yield Chunk(text)
                if body.get("done"):
                    yield Chunk("", _http.finish_reason(body.get("done_reason")), _usage(body))
                    await _http.drain(lines)
                    return
        raise _http.cut(self.provider, "done")

    async def health(self) -> bool:
        """``GET /api/version`` (the catalogue's health route) answers 200."""
        record = lookup(self.target.backend)
        path = text(self.target.options, "health_path") or (
            record.health_path if record and record.health_path else "/api/version"
        )
        try:
            headers = _http.auth_headers(self.target, self.api_key())
        except BackendError:
            return False
        response = await _http.probe(
            self.client, self.api.removesuffix("/api") + path, headers=headers
        )
        return response is not None and response.is_success
