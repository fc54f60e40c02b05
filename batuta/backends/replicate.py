"""Replicate's predictions API: create once, then wait, poll or stream; cancel when abandoned.

A prediction is a billed resource, so this adapter never creates one twice: creation is a
single POST (no retry here), and every later step (polling ``urls.get``, reading
``urls.stream``, fetching metrics) only looks at the one prediction it made. When the
answer is abandoned (deadline, cancellation by the router, a broken stream) the prediction
is canceled through ``urls.cancel`` so it stops running and billing.

- Blocking: ``Prefer: wait=N`` with N kept below the caller's first-byte budget (so the
  prediction's id always comes back), then polling with backoff until a terminal status.
- Streaming: the ``urls.stream`` SSE: ``output`` events are raw text (multi-line ``data``
  joined with ``\\n``), ``done`` ends, ``error`` fails; usage comes from the prediction's
  ``metrics`` fetched afterwards.

Target: ``model`` is ``owner/name`` (official models) or ``owner/name:version``; options
``version`` (a version id), ``deployment`` (``owner/name``), ``max_tokens_field`` (default
``max_tokens``), ``wait`` (1-60 s), ``poll_interval``, ``timeout`` (polling limit without a
deadline, default 600 s) and ``param.<input>: <json>`` for model-specific inputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import quote

import anyio

from batuta._util.options import number, text
from batuta.backends import _http
from batuta.backends.base import Adapter
from batuta.backends.types import Chunk, Completion, InferenceRequest, Target, Usage
from batuta.errors import BackendError, FailureKind

DEFAULT_BASE = "https://api.replicate.com/v1"
TERMINAL = ("succeeded", "failed", "canceled")
_MAX_POLL_FAILURES = 5


def _usage(prediction: dict[str, Any]) -> Usage | None:
    metrics = prediction.get("metrics")
    if not isinstance(metrics, dict):
        return None
    usage = Usage(
        _http.int_or_none(metrics.get("input_token_count")),
        _http.int_or_none(metrics.get("output_token_count")),
    )
    return usage if usage != Usage() else None


def _output_text(output: Any) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return "".join(str(part) for part in output if part is not None)
    return ""


class ReplicateAdapter(Adapter):
    """One prediction per call, followed to its end."""

    enforces_deadlines = True

    def __init__(self, target: Target, client: _http.HttpClient) -> None:
        super().__init__(target, client)
        self.provider = target.name or target.backend
        self.options = target.options

    # ------------------------------------------------------------------ request

    def url(self, path: str) -> str:
        return _http.api_url(self.target.base_url or DEFAULT_BASE, path)

    def headers(self) -> dict[str, str]:
        return _http.auth_headers(self.target, self.api_key())

    def _float_option(self, name: str, default: float) -> float:
        try:
            return number(self.options, name, default)
        except ValueError as exc:
            raise BackendError(FailureKind.CLIENT, f"{self.provider}: {exc}") from None

    def create_url_and_version(self, model: str) -> tuple[str, str | None]:
        """Where to POST: the deployment, the version route, or the official model."""
        deployment = text(self.options, "deployment")
        if deployment:
            return self.url(f"/deployments/{deployment.strip('/')}/predictions"), None
        name, _, version = model.partition(":")
        version = text(self.options, "version") or version
        if version:
            return self.url("/predictions"), version
        owner, slash, rest = name.partition("/")
        if not slash or not rest:
            raise BackendError(
                FailureKind.CLIENT, f"{self.provider}: model must be owner/name, got {model!r}"
            )
        return self.url(f"/models/{quote(owner)}/{quote(rest)}/predictions"), None

    def input(self, request: InferenceRequest) -> dict[str, Any]:
        """The model's ``input``: common LLM keys, then ``param.*`` overrides."""
        prompt = request.prompt
        if request.history or request.assistant_prefix:
            # One prompt string is all most Replicate LLMs take: lay the chat out as text.
            turns = [m for m in request.history if m.role != "system"]
            lines = [f"{m.role.capitalize()}: {m.content}" for m in turns]
            lines.append(f"User: {request.prompt}")
            lines.append(f"Assistant: {request.assistant_prefix}".rstrip())
            prompt = "\n\n".join(lines)
        data: dict[str, Any] = {"prompt": prompt}
        system = [request.system] if request.system else []
        system += [m.content for m in request.history if m.role == "system"]
        if system:
            data["system_prompt"] = "\n\n".join(system)
        if request.max_tokens is not None:
            data[text(self.options, "max_tokens_field", "max_tokens")] = request.max_tokens
        for name in ("temperature", "top_p", "seed"):
            value = getattr(request, name)
            if value is not None:
                data[name] = value
        if request.stop:
            data["stop_sequences"] = ",".join(request.stop)
        data.update(_http.body_extras(self.options))
        return data

    # ------------------------------------------------------------------ prediction life

    async def _create(
        self,
        request: InferenceRequest,
        *,
        stream: bool,
        first_byte_timeout: float | None,
        deadline: float | None,
    ) -> dict[str, Any]:
        url, version = self.create_url_and_version(request.model or self.target.model)
        body: dict[str, Any] = {"input": self.input(request)}
        if version:
            body["version"] = version
        headers = self.headers()
        if stream:
            body["stream"] = True
        else:
            wait = self._wait_seconds(first_byte_timeout, deadline)
            if wait:
                headers["Prefer"] = f"wait={wait}"
        response = await _http.send(
            self.client,
            "POST",
            url,
            provider=self.provider,
            headers=headers,
            json_body=body,
            first_byte_timeout=first_byte_timeout,
            deadline=deadline,
            secret=self.api_key(),
        )
        return self._prediction(await _http.read_json(response, provider=self.provider))

    def _wait_seconds(self, first_byte_timeout: float | None, deadline: float | None) -> int:
        """``Prefer: wait`` shorter than our own patience, so the id always comes back."""
        wait = self._float_option("wait", 60.0)
        for limit in (
            first_byte_timeout,
            None if deadline is None else deadline - time.monotonic(),
        ):
            if limit is not None:
                wait = min(wait, limit - 1.0)
        return max(0, min(60, int(wait)))

    def _prediction(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise _http.malformed(self.provider, "prediction has no id")
        return body

    async def _get(self, prediction: dict[str, Any], deadline: float | None) -> dict[str, Any]:
        url = (prediction.get("urls") or {}).get("get") or self.url(
            f"/predictions/{prediction['id']}"
        )
        response = await _http.send(
            self.client,
            "GET",
            url,
            provider=self.provider,
            headers=self.headers(),
            deadline=deadline,
            secret=self.api_key(),
        )
        return self._prediction(
            await _http.read_json(response, provider=self.provider, deadline=deadline)
        )

    async def _cancel(self, prediction: dict[str, Any]) -> None:
        """Best effort, bounded: the prediction is being abandoned either way."""
        url = (prediction.get("urls") or {}).get("cancel")
        if not url:
            return
        with contextlib.suppress(Exception):
            response = await _http.send(
                self.client, "POST", url, provider=self.target.name,
                headers=self.headers(), deadline=time.monotonic() + 5.0,
            )  # fmt: skip
            await response.aclose()

    async def _abandon(self, prediction: dict[str, Any]) -> None:
        # Shielded so a router's cancellation still lets the cancel request go out.
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.shield(self._cancel(prediction))

    async def _wait(self, prediction: dict[str, Any], deadline: float | None) -> dict[str, Any]:
        """Poll until a terminal status with growing intervals; TIMEOUT at the deadline."""
        if deadline is None:
            deadline = time.monotonic() + self._float_option("timeout", 600.0)
        interval = self._float_option("poll_interval", 0.5)
        failures = 0
        while prediction.get("status") not in TERMINAL:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BackendError(
                    FailureKind.TIMEOUT,
                    f"{self.provider}: prediction {prediction['id']} not done by the deadline",
                )
            await anyio.sleep(min(interval, remaining))
            interval = min(interval * 1.5, 5.0)
            try:
                prediction = await self._get(prediction, deadline)
                failures = 0
            except BackendError as exc:
                # A failed look-up says nothing about the prediction: look again.
                failures += 1
                if not exc.kind.retryable or failures >= _MAX_POLL_FAILURES:
                    raise
                interval = max(interval, min(exc.retry_after or 0.0, 5.0))
        return prediction

    def _outcome(self, prediction: dict[str, Any]) -> None:
        status = prediction.get("status")
        if status == "failed":
            error = prediction.get("error") or "prediction failed"
            raise BackendError(FailureKind.SERVER, f"{self.provider}: {error}"[:500])
        if status == "canceled":
            raise BackendError(FailureKind.SERVER, f"{self.provider}: prediction was canceled")

    # ------------------------------------------------------------------ calls

    async def complete(
        self,
        request: InferenceRequest,
        *,
        first_byte_timeout: float | None = None,
        deadline: float | None = None,
    ) -> Completion:
        """Create with ``Prefer: wait``, then poll until done."""
        prediction = await self._create(
            request, stream=False, first_byte_timeout=first_byte_timeout, deadline=deadline
        )
        try:
            prediction = await self._wait(prediction, deadline)
        except BaseException:
            await self._abandon(prediction)
            raise
        self._outcome(prediction)
        usage = _usage(prediction) or Usage()
        return Completion(_output_text(prediction.get("output")), "stop", usage)

    async def stream(
        self,
        request: InferenceRequest,
        *,
        first_byte_timeout: float | None = None,
        deadline: float | None = None,
    ) -> AsyncGenerator[Chunk, None]:
        """Create, then read ``urls.stream``; models without a stream URL are polled and
        answered in one chunk. A stream closing before ``done`` is STREAM_CUT."""
        prediction = await self._create(
            request, stream=True, first_byte_timeout=first_byte_timeout, deadline=deadline
        )
        stream_url = (prediction.get("urls") or {}).get("stream")
        terminal = False
        try:
            if not stream_url:
                prediction = await self._wait(prediction, deadline)
                terminal = True
                self._outcome(prediction)
                yield Chunk(_output_text(prediction.get("output")))
            else:
                async for text in self._events(stream_url, first_byte_timeout, deadline):
                    yield Chunk(text)
                terminal = True
                prediction = await self._settle(prediction, deadline)
        except BaseException:
            if not terminal:
                await self._abandon(prediction)
            raise
        yield Chunk("", "stop", _usage(prediction))

    async def _events(
        self, url: str, first_byte_timeout: float | None, deadline: float | None
    ) -> AsyncGenerator[str, None]:
        headers = {**self.headers(), "Accept": "text/event-stream", "Cache-Control": "no-store"}
        response = await _http.send(
            self.client,
            "GET",
            url,
            provider=self.provider,
            headers=headers,
            first_byte_timeout=first_byte_timeout,
            deadline=deadline,
            secret=self.api_key(),
        )
        async with _http.sse_stream(
            response,
            provider=self.provider,
            first_byte_timeout=first_byte_timeout,
            deadline=deadline,
        ) as events:
            async for event in events:
                if event.event == "output":
                    if event.data:
                        yield event.data
                elif event.event == "error":
                    raise BackendError(
                        FailureKind.SERVER, f"{self.provider}: {_detail(event.data)}"[:500]
                    )
                elif event.event == "done":
                    reason = _done_reason(event.data)
                    if reason:
                        raise BackendError(
                            FailureKind.SERVER, f"{self.provider}: prediction ended: {reason}"
                        )
                    await _http.drain(events)
                    return
        raise _http.cut(self.provider, "done")

    async def _settle(self, prediction: dict[str, Any], deadline: float | None) -> dict[str, Any]:
        """After ``done``: the prediction with its metrics (usage), if it can be had quickly.
        The answer is already whole, so a failure here only costs the usage numbers."""
        limit = time.monotonic() + 3.0
        deadline = limit if deadline is None else min(deadline, limit)
        with contextlib.suppress(BackendError):
            for _ in range(3):
                prediction = await self._get(prediction, deadline)
                if prediction.get("status") in TERMINAL:
                    break
                await anyio.sleep(0.1)
        return prediction

    async def health(self) -> bool:
        """``GET /account``: proves the token and the API answer."""
        try:
            headers = self.headers()
        except BackendError:
            return False
        response = await _http.probe(self.client, self.url("/account"), headers=headers)
        return response is not None and response.is_success


def _detail(data: str) -> str:
    """An SSE ``error`` payload: JSON with ``detail`` (or ``error``), or plain text."""
    try:
        parsed = json.loads(data)
    except ValueError:
        return data.strip() or "error in stream"
    if isinstance(parsed, dict):
        return str(parsed.get("detail") or parsed.get("error") or json.dumps(parsed))
    return str(parsed)


def _done_reason(data: str) -> str | None:
    """Why a ``done`` event ended the prediction early (``{}`` on success)."""
    try:
        parsed = json.loads(data) if data.strip() else {}
    except ValueError:
        return None
    reason = parsed.get("reason") if isinstance(parsed, dict) else None
    return str(reason) if reason else None
