"""The OpenAI Chat Completions wire protocol, for OpenAI and every server that imitates it.

One adapter serves llama.cpp, llamafile, vLLM, LocalAI, LM Studio, GPT4All, MLC, TabbyAPI,
mistral.rs, OpenAI, Groq, Together, Fireworks, Hugging Face and Modal. What differs between
them is data: the catalogue record's :class:`~batuta.catalogue.Dialect` (max-tokens field,
``stream_options``, blocking-only servers, ``stop`` support, models-list shape, auth header)
and what the server refuses (a field allow-list, at most so many stop sequences, ``top_p``
strictly inside (0, 1), reasoning models without sampling knobs), plus the target's options:

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
- a legacy text completion (``InferenceRequest.raw_prompt``) goes to ``/completions`` as
  the prompt it is on local servers and ``api: completions`` targets (others get it as one
  user message), and its continuation after a failover is that prompt plus the shown text;
- the request's pass-through fields (``InferenceRequest.extra``: ``tools``,
  ``response_format``, …) are added to the body as the client sent them; a conversation
  with tool calls goes out as the client's own message list; tool calls in the answer come
  back on ``Completion.tool_calls`` / ``Chunk.tool_calls`` as the server sent them;
- ``param.<field>: <json>`` adds engine extras to the body (``param.top_k: 40``), after
  the client's fields, so the operator's settings win;
- ``health_path`` overrides the readiness route of a local server;
- ``organization`` / ``project`` become ``OpenAI-Organization`` / ``OpenAI-Project``;
- ``proxy_key_env`` / ``proxy_secret_env`` name the variables holding a Modal proxy-auth
  token (id and secret), sent as ``Modal-Key`` / ``Modal-Secret`` to a web endpoint that
  requires proxy auth.

Nothing a dialect refuses is sent. Stop sequences a server does not take (beyond its
``max_stop``, or all of them for GPT4All and reasoning models) are applied here on the
answer; what is left out for a reasoning model is logged (logger ``batuta.backends.openai``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncGenerator
from typing import Any

from batuta._util.options import text
from batuta.backends import _http
from batuta.backends._template import chat_prompt, templated_prompt
from batuta.backends.base import Adapter
from batuta.backends.types import Chunk, Completion, InferenceRequest, Target, Usage
from batuta.catalogue import Dialect, lookup
from batuta.errors import BackendError, FailureKind

log = logging.getLogger(__name__)


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


def _messages(request: InferenceRequest) -> list[dict[str, Any]]:
    """The chat's messages: the client's own list when it carries tool calls or results
    (``extra["messages"]``), with any assistant prefix after it."""
    raw = request.extra.get("messages")
    if not isinstance(raw, list):
        return [{"role": m.role, "content": m.content} for m in request.messages()]
    tail = [{"role": "assistant", "content": request.assistant_prefix}]
    return [*raw, *(tail if request.assistant_prefix else [])]


def _tool_calls(raw: Any) -> list[dict[str, Any]]:
    return [call for call in raw if isinstance(call, dict)] if isinstance(raw, list) else []


def _cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """Apply stop sequences ourselves for servers that refuse them (GPT4All, reasoning
    models, those beyond a server's maximum)."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class OpenAIAdapter(Adapter):
    """Chat Completions over HTTP: SSE streaming, blocking calls and a models probe."""

    enforces_deadlines = True

    def __init__(self, target: Target, client: _http.HttpClient) -> None:
        super().__init__(target, client)
        record = lookup(target.backend)
        self.dialect: Dialect = record.dialect if record else Dialect()
        self.provider = target.name or target.backend
        self.legacy = target.options.get("api") == "completions"
        self.retired = record.retired if record and record.retired_at(target.base_url) else None
        # What the target's options add to every call, worked out once (a target's options
        # never change); only the values of the variables they name are read per call.
        options = target.options
        self._fixed_headers = {
            header: text(options, option)
            for option, header in (("organization", "OpenAI-Organization"),
                                   ("project", "OpenAI-Project"))
            if option in options
        }  # fmt: skip
        self._env_headers = tuple(
            (header, env)
            for option, header in (("proxy_key_env", "Modal-Key"),
                                   ("proxy_secret_env", "Modal-Secret"))
            if (env := text(options, option))
        )  # fmt: skip
        self._extras = _http.body_extras(options)

    def _check_retired(self) -> None:
        """A retired service (Anyscale Endpoints) answers with HTML pages, if at all: say so
        instead of sending; a self-hosted service at another base_url is used as is."""
        if self.retired:
            raise BackendError(
                FailureKind.CLIENT,
                f"{self.provider}: {self.target.backend} was retired {self.retired}; set"
                " base_url to such a self-hosted service",
            )

    # ------------------------------------------------------------------ request

    def _text_completion(self, request: InferenceRequest) -> bool:
        """A legacy text completion sent as the text it is: to local servers (each has a
        completions route) and ``api: completions`` targets; others get one user turn."""
        return request.raw_prompt and (self.target.local or self.legacy)

    def continues(self, request: InferenceRequest) -> bool:
        """Whether ``request``'s assistant prefix goes out as a raw prompt the model
        continues exactly (see the module docstring)."""
        return bool(request.assistant_prefix) and (
            self._text_completion(request)
            or (
                self.dialect.continues_by_prompt
                and templated_prompt(request, self.target.options) is not None
            )
        )

    def _raw_prompt(self, request: InferenceRequest) -> bool:
        if not (self.legacy or request.raw_prompt or request.assistant_prefix):
            return False  # a plain chat (most calls), to the chat route
        return self.legacy or self._text_completion(request) or self.continues(request)

    def url(self, path: str) -> str:
        """A route under the target's API base (``/v1`` added for bare local servers)."""
        return _http.api_url(self.target.base_url, path)

    def headers(self) -> dict[str, str]:
        """Auth in the dialect's style plus the optional OpenAI organisation/project and
        Modal proxy-auth token."""
        headers = _http.auth_headers(self.target, self.api_key(), self.dialect.auth_header)
        headers.update(self._fixed_headers)
        for header, env in self._env_headers:
            # read when the call is made; only the variable's name is ever shown
            value = os.environ.get(env)
            if not value:
                raise BackendError(
                    FailureKind.AUTH, f"{self.provider}: set {env} (Modal proxy auth)"
                )
            headers[header] = value
        return headers

    def body(self, request: InferenceRequest, *, stream: bool) -> dict[str, Any]:
        """The JSON body for ``request`` in this target's dialect."""
        body: dict[str, Any] = {"model": request.model or self.target.model}
        raw = self._raw_prompt(request)
        if raw:
            body["prompt"] = (
                request.prompt + request.assistant_prefix
                if self._text_completion(request)
                else chat_prompt(request, self.target.options)
            )
        else:
            body["messages"] = _messages(request)
            if request.assistant_prefix and self.target.backend == "vllm":
                # vLLM continues the final assistant message only when told to.
                body["continue_final_message"] = True
                body["add_generation_prompt"] = False
        if request.max_tokens is not None:
            field = "max_tokens" if raw else self.dialect.max_tokens_field
            body[field] = request.max_tokens
        reasoning = self.reasoning(request)
        omitted: list[str] = []
        for name in ("temperature", "top_p", "seed"):
            value = getattr(request, name)
            if value is None:
                continue
            if reasoning and name != "seed":
                omitted.append(name)
            elif name == "top_p" and self.dialect.top_p_open and not 0 < value < 1:
                continue  # 1.0 means no nucleus filter, which is what leaving it out does
            else:
                body[name] = value
        sent, _ = self.stops(request)
        if sent:
            body["stop"] = sent
        elif request.stop and reasoning:
            omitted.append("stop (applied here)")
        body["stream"] = stream
        if stream and self.dialect.stream_usage:
            body["stream_options"] = {"include_usage": True}
        # The client's own fields, as sent; the operator's ``param.*`` engine settings win.
        body.update((k, v) for k, v in request.extra.items() if k != "messages")
        body.update(self._extras)
        if omitted:
            log.info("%s: %s takes no %s: left out", self.provider, body["model"],
                     ", ".join(omitted))  # fmt: skip
        allowed = self.dialect.fields
        return body if allowed is None else {k: v for k, v in body.items() if k in allowed}

    def reasoning(self, request: InferenceRequest) -> bool:
        """Whether the model is a reasoning model of this dialect (no sampling knobs)."""
        prefixes = self.dialect.reasoning_models
        return bool(prefixes) and (request.model or self.target.model).startswith(prefixes)

    def stops(self, request: InferenceRequest) -> tuple[list[str], tuple[str, ...]]:
        """``(sent, local)``: the stop sequences the server takes, and the rest, which are
        applied here on the answer."""
        if not request.stop:
            return [], ()
        takes = self.dialect.sends_stop and (
            self.dialect.fields is None or "stop" in self.dialect.fields
        )
        if not takes or self.reasoning(request):
            return [], tuple(s for s in request.stop if s)
        return _http.split_stops(request.stop, limit=self.dialect.max_stop)

    async def _send(
        self,
        request: InferenceRequest,
        *,
        stream: bool,
        first_byte_timeout: float | None,
        deadline: float | None,
    ) -> _http.Response:
        self._check_retired()
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
        body = await _http.read_answer(
            response,
            provider=self.provider,
            deadline=deadline,
            in_band=lambda b: self._error(b["error"]) if b.get("error") else None,
        )
        choice = _first_choice(body)
        if choice is None:
            raise _http.malformed(self.provider, "response has no choices")
        message = choice.get("message")
        text = message.get("content") if isinstance(message, dict) else choice.get("text")
        if not isinstance(text, str):
            text = ""
        finish = _http.finish_reason(choice.get("finish_reason"))
        local = self.stops(request)[1]
        if local:
            text, stopped = _cut_at_stop(text, local)
            finish = "stop" if stopped else finish
        calls = _tool_calls(message.get("tool_calls")) if isinstance(message, dict) else []
        usage = _usage(body.get("usage")) or Usage()
        return Completion(text, finish, usage, calls or None)

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
            yield Chunk(done.text, done.finish_reason, done.usage, tuple(done.tool_calls or ()))
            return
        response = await self._send(
            request, stream=True, first_byte_timeout=first_byte_timeout, deadline=deadline
        )
        finish: str | None = None
        usage: Usage | None = None
        terminated = False
        stops = _http.StopFilter(self.stops(request)[1])
        async with _http.sse_stream(
            response,
            provider=self.provider,
            first_byte_timeout=first_byte_timeout,
            deadline=deadline,
            answered=lambda: finish is not None,
        ) as events:
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
                    text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
                    calls = _tool_calls(delta.get("tool_calls")) if isinstance(delta, dict) else []
                    if calls:
                        yield Chunk(tool_calls=tuple(calls))
                    if isinstance(text, str) and text:
                        text = stops.feed(text)
                        if text:
                            yield Chunk(text)
                        if stops.hit:  # a stop sequence the server was not sent
                            yield Chunk("", "stop", usage)
                            return
                    finish = _http.finish_reason(choice.get("finish_reason")) or finish
                usage = _usage(body.get("usage")) or _usage(groq.get("usage")) or usage
                if finish and usage:
                    break
            if finish is None and not terminated:
                raise _http.cut(self.provider, "a finish reason")
            yield Chunk(stops.flush(), finish, usage)
            await _http.drain(events)

    # ------------------------------------------------------------------ probes

    async def health(self) -> bool:
        """Local servers: their readiness route (llama.cpp ``/health`` answers 503 while
        loading; servers without it fall back to ``GET /v1/models``). Remote APIs: an
        authenticated ``GET /models``, which also proves the key works."""
        record = lookup(self.target.backend)
        try:
            self._check_retired()
            headers = self.headers()
        except BackendError:
            return False
        models_url = self.url(self.dialect.models_path)
        health_path = text(self.target.options, "health_path") or (
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
        self._check_retired()
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
