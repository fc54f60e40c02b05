"""AWS Bedrock Runtime: the Converse and ConverseStream operations.

Requests are signed with SigV4 by botocore's own signer (service ``bedrock``), over the
exact bytes sent; botocore is the optional extra ``batuta[bedrock]`` and is imported only
when signing. The Bedrock API-key form (``Authorization: Bearer``) needs no botocore.
ConverseStream answers in AWS event-stream frames (:mod:`batuta.backends.eventstream`);
usage arrives only in the final ``metadata`` event.

An answer to continue goes as a trailing assistant turn, without its trailing whitespace
(Converse refuses that); whitespace the model then repeats at the join is dropped, any
other it produces (a paragraph break) is kept. A model refusing any trailing assistant turn
(newer Claude models: a ValidationException about prefill) is asked once more with the
partial answer as an ordinary turn and a user turn asking to continue it, and from then on
always that way. Claude models (``anthropic.`` / ``claude`` in the model id) get what the
Anthropic API takes: no stop sequence that is only whitespace (those are applied here on
the answer), temperature without ``topP``, temperature 0-1 (see
:func:`batuta.backends._payload.claude_sampling`).

Target options:

- ``region``: else the one in ``base_url``, else ``AWS_REGION`` / ``AWS_DEFAULT_REGION``;
- ``auth``: ``sigv4`` or ``bedrock-bearer``; by default bearer when the token variable
  (``token_env``, default ``AWS_BEARER_TOKEN_BEDROCK``) is set, SigV4 otherwise;
- ``secret_key_env`` / ``session_token_env``: variable names for SigV4 credentials (the
  access key id is ``api_key_env``, default ``AWS_ACCESS_KEY_ID``);
- ``param.<field>: <json>``: model-specific knobs sent as ``additionalModelRequestFields``.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import AsyncGenerator, Mapping
from typing import Any
from urllib.parse import quote

from batuta._util.options import text
from batuta.backends import _http
from batuta.backends._payload import CONTINUE_INSTRUCTION
from batuta.backends.base import Adapter
from batuta.backends.eventstream import EventStreamDecoder, Message
from batuta.backends.types import Chunk, Completion, InferenceRequest, Target, Usage
from batuta.errors import BackendError, FailureKind, NotInstalledError

DEFAULT_HOST = "https://bedrock-runtime.{region}.amazonaws.com"
_REGION_IN_HOST = re.compile(r"bedrock-runtime(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com")

# In-stream exception names (lowerCamel) → what the router should do about them.
_STREAM_EXCEPTIONS = {
    "throttlingexception": FailureKind.RATE_LIMIT,
    "servicequotaexceededexception": FailureKind.QUOTA,
    "serviceunavailableexception": FailureKind.OVERLOADED,
    "modelnotreadyexception": FailureKind.OVERLOADED,
    "validationexception": FailureKind.CLIENT,
    "resourcenotfoundexception": FailureKind.CLIENT,
    "accessdeniedexception": FailureKind.AUTH,
    "internalserverexception": FailureKind.SERVER,
    "modelstreamerrorexception": FailureKind.SERVER,
    "modeltimeoutexception": FailureKind.SERVER,
}
_FINISH = {
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
    "tool_use": "tool_calls",
}


def _finish(raw: object) -> str | None:
    text = _http.finish_reason(raw)
    return _FINISH.get(text, text) if text else None


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    return Usage(
        _http.int_or_none(raw.get("inputTokens")), _http.int_or_none(raw.get("outputTokens"))
    )


def sign(
    method: str,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    access_key: str,
    secret_key: str,
    session_token: str | None,
    region: str,
) -> dict[str, str]:
    """``headers`` plus SigV4 ``Authorization``, ``X-Amz-Date`` (and the session token) for
    this exact request, computed by botocore for service ``bedrock``."""
    try:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials
    except ImportError as exc:
        raise NotInstalledError(
            "SigV4 signing for Bedrock needs botocore: pip install 'batuta[bedrock]'"
        ) from exc
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
    SigV4Auth(Credentials(access_key, secret_key, session_token), "bedrock", region).add_auth(
        request
    )
    return {str(k): str(v) for k, v in request.headers.items()}


class BedrockAdapter(Adapter):
    """Converse (blocking) and ConverseStream (event-stream) against Bedrock Runtime."""

    enforces_deadlines = True

    def __init__(self, target: Target, client: _http.HttpClient) -> None:
        super().__init__(target, client)
        self.provider = target.name or target.backend
        self.options = target.options
        self.no_prefill = False  # set once the model refused a trailing assistant turn

    # ------------------------------------------------------------------ where and who

    def region(self) -> str:
        """The signing region: option, then the endpoint's host, then the environment."""
        found = _REGION_IN_HOST.search(self.target.base_url)
        region = (
            text(self.options, "region")
            or (found.group(1) if found else None)
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
        )
        if not region:
            raise BackendError(
                FailureKind.CLIENT,
                f"{self.provider}: no AWS region (set options.region or AWS_REGION)",
            )
        return region

    def url(self, operation: str, model: str | None = None) -> str:
        """``{base}/model/{modelId}/{operation}`` with the model id percent-encoded
        (``:`` and ``/`` of ARNs and inference profiles included)."""
        base = (self.target.base_url or DEFAULT_HOST).rstrip("/")
        if "{region}" in base:
            base = base.replace("{region}", self.region())
        return f"{base}/model/{quote(model or self.target.model, safe='')}/{operation}"

    def _bearer_env(self) -> str:
        return text(self.options, "token_env") or "AWS_BEARER_TOKEN_BEDROCK"

    def _uses_bearer(self) -> bool:
        auth = text(self.options, "auth").lower()
        if auth in ("bedrock-bearer", "bearer", "api-key"):
            return True
        if auth in ("sigv4", "iam"):
            return False
        if auth:
            raise BackendError(FailureKind.CLIENT, f"{self.provider}: unknown auth {auth!r}")
        return bool(os.environ.get(self._bearer_env()))

    def _secret(self) -> str | None:
        """The most sensitive value sent, masked should a server ever echo it back."""
        if self._uses_bearer():
            return os.environ.get(self._bearer_env())
        return os.environ.get(text(self.options, "session_token_env") or "AWS_SESSION_TOKEN")

    def headers(self, url: str, body: bytes) -> dict[str, str]:
        """Authenticated headers for POSTing ``body`` to ``url``."""
        base = {"Content-Type": "application/json"}
        if self._uses_bearer():
            env = self._bearer_env()
            token = os.environ.get(env)
            if not token:
                raise BackendError(FailureKind.AUTH, f"{self.provider}: set {env} to the API key")
            return {**base, "Authorization": f"Bearer {token}"}
        key_env = self.target.api_key_env or "AWS_ACCESS_KEY_ID"
        secret_env = text(self.options, "secret_key_env") or "AWS_SECRET_ACCESS_KEY"
        access_key, secret_key = os.environ.get(key_env), os.environ.get(secret_env)
        if not access_key or not secret_key:
            raise BackendError(
                FailureKind.AUTH,
                f"{self.provider}: set {key_env} and {secret_env} (or {self._bearer_env()})",
            )
        token_env = text(self.options, "session_token_env") or "AWS_SESSION_TOKEN"
        return sign(
            "POST",
            url,
            body,
            base,
            access_key=access_key,
            secret_key=secret_key,
            session_token=os.environ.get(token_env) or None,
            region=self.region(),
        )

    # ------------------------------------------------------------------ request

    def body(self, request: InferenceRequest) -> dict[str, Any]:
        """The Converse request body."""
        claude = _is_claude(request.model or self.target.model)
        system = [{"text": request.system}] if request.system else []
        messages: list[dict[str, Any]] = []
        for m in request.history:
            if m.role == "system":
                system.append({"text": m.content})
            else:
                role = "assistant" if m.role == "assistant" else "user"
                messages.append({"role": role, "content": [{"text": m.content}]})
        messages.append({"role": "user", "content": [{"text": request.prompt}]})
        if request.assistant_prefix and self.no_prefill:
            messages.append({"role": "assistant", "content": [{"text": request.assistant_prefix}]})
            messages.append({"role": "user", "content": [{"text": CONTINUE_INSTRUCTION}]})
        elif prefix := request.assistant_prefix.rstrip():
            # Models behind Converse refuse a final assistant turn ending in whitespace.
            messages.append({"role": "assistant", "content": [{"text": prefix}]})
        body: dict[str, Any] = {"messages": messages}
        if system:
            body["system"] = system
        config: dict[str, Any] = {}
        if request.max_tokens is not None:
            config["maxTokens"] = request.max_tokens
        if claude:
            sampling = _http.claude_sampling(request, self.provider)
            sampling = {"topP" if k == "top_p" else k: v for k, v in sampling.items()}
            config.update(sampling)
        else:
            if request.temperature is not None:
                config["temperature"] = request.temperature
            if request.top_p is not None:
                config["topP"] = request.top_p
        stops, _ = _http.split_stops(request.stop, blank_ok=not claude)
        if stops:
            config["stopSequences"] = stops
        if config:
            body["inferenceConfig"] = config
        extras = _http.body_extras(self.options)
        if extras:
            body["additionalModelRequestFields"] = extras
        return body

    def local_stops(self, request: InferenceRequest) -> tuple[str, ...]:
        """Stop sequences the model is not sent, applied to the answer here."""
        claude = _is_claude(request.model or self.target.model)
        return _http.split_stops(request.stop, blank_ok=not claude)[1]

    async def _post(
        self,
        operation: str,
        request: InferenceRequest,
        *,
        first_byte_timeout: float | None,
        deadline: float | None,
    ) -> _http.Response:
        """Send; a model refusing the trailing assistant turn is asked again (once) with
        the continuation as a user turn."""
        try:
            return await self._post_once(
                operation, request, first_byte_timeout=first_byte_timeout, deadline=deadline
            )
        except BackendError as exc:
            if not request.assistant_prefix or self.no_prefill or not _http.refuses_prefill(exc):
                raise
        self.no_prefill = True
        return await self._post_once(
            operation, request, first_byte_timeout=first_byte_timeout, deadline=deadline
        )

    async def _post_once(
        self,
        operation: str,
        request: InferenceRequest,
        *,
        first_byte_timeout: float | None,
        deadline: float | None,
    ) -> _http.Response:
        """Sign and send; the bytes signed are the bytes sent (httpx must not re-encode)."""
        url = self.url(operation, request.model)
        content = json.dumps(self.body(request), separators=(",", ":")).encode()
        headers = self.headers(url, content)
        headers.setdefault("Accept", "application/json")
        return await _http.send(
            self.client,
            "POST",
            url,
            provider=self.provider,
            headers=headers,
            content=content,
            first_byte_timeout=first_byte_timeout,
            deadline=deadline,
            secret=self._secret(),
        )

    # ------------------------------------------------------------------ calls

    async def complete(
        self,
        request: InferenceRequest,
        *,
        first_byte_timeout: float | None = None,
        deadline: float | None = None,
    ) -> Completion:
        """One Converse call."""
        response = await self._post(
            "converse", request, first_byte_timeout=first_byte_timeout, deadline=deadline
        )
        body = await _http.read_answer(
            response, provider=self.provider, deadline=deadline, in_band=lambda _: None
        )
        output = body.get("output")
        message = output.get("message") if isinstance(output, dict) else None
        if not isinstance(message, dict) or not isinstance(message.get("content"), list):
            raise _http.malformed(self.provider, "Converse answer has no output.message")
        text = "".join(
            part["text"]
            for part in message["content"]
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
        if not self.no_prefill:
            text = _Join(request).feed(text)
        stops = _http.StopFilter(self.local_stops(request))
        text = stops.feed(text) + stops.flush()
        finish = "stop" if stops.hit else _finish(body.get("stopReason"))
        return Completion(text, finish, _usage(body.get("usage")) or Usage())

    async def stream(
        self,
        request: InferenceRequest,
        *,
        first_byte_timeout: float | None = None,
        deadline: float | None = None,
    ) -> AsyncGenerator[Chunk, None]:
        """ConverseStream: text deltas as they come; the last chunk carries the stop reason
        and the ``metadata`` usage. A close before ``messageStop`` is STREAM_CUT."""
        response = await self._post(
            "converse-stream", request, first_byte_timeout=first_byte_timeout, deadline=deadline
        )
        decoder = EventStreamDecoder()
        finish: str | None = None
        usage: Usage | None = None
        join = _Join(request if not self.no_prefill else None)
        stops = _http.StopFilter(self.local_stops(request))
        # A drop after messageStop only loses the metadata event: the answer is whole.
        frames = _http.iter_bytes(
            response,
            provider=self.provider,
            first_byte_timeout=first_byte_timeout,
            deadline=deadline,
        )
        async with _http.opened(
            frames, response=response, answered=lambda: finish is not None
        ) as body:
            async for data in body:
                for message in decoder.feed(data):
                    event = self._event(message)
                    if event is None:
                        continue
                    name, payload = event
                    if name == "contentBlockDelta":
                        delta = payload.get("delta")
                        text = delta.get("text") if isinstance(delta, dict) else None
                        if isinstance(text, str) and text:
                            text = stops.feed(join.feed(text))
                            if text:
                                yield Chunk(text)
                            if stops.hit:  # a stop sequence the model was not sent
                                finish = "stop"
                                break
                    elif name == "messageStop":
                        finish = _finish(payload.get("stopReason")) or "stop"
                    elif name == "metadata":
                        usage = _usage(payload.get("usage"))
                if (usage is not None and finish is not None) or stops.hit:
                    break
            if finish is None:
                where = " mid-frame" if decoder.pending else ""
                raise _http.cut(self.provider, "messageStop", where=where)
            yield Chunk(stops.flush(), finish, usage)
            if not stops.hit:
                await _http.drain(body)

    def _event(self, message: Message) -> tuple[str, dict[str, Any]] | None:
        """``(event name, payload)`` for events; raises for exception and error frames."""
        kind = message.message_type
        if kind == "exception":
            name = message.event_type or "exception"
            detail = message.json().get("message") or message.payload.decode("utf-8", "replace")
            failure = _STREAM_EXCEPTIONS.get(name.lower(), FailureKind.SERVER)
            raise BackendError(failure, f"{self.provider}: {detail} [{name}]"[: _http.MAX_MESSAGE])
        if kind == "error":
            code = message.header(":error-code") or "error"
            detail = message.header(":error-message") or ""
            raise BackendError(FailureKind.SERVER, f"{self.provider}: {detail} [{code}]")
        event = message.event_type
        return (event, message.json()) if event else None

    async def health(self) -> bool:
        """Bedrock Runtime has no health route and its model list lives on another host, so
        the probe is a Converse capped at one output token (billed as such)."""
        probe = InferenceRequest(prompt="ping", max_tokens=1, stream=False)
        try:
            await self.complete(probe, deadline=time.monotonic() + 15.0)
        except (BackendError, NotInstalledError):
            return False
        return True


def _is_claude(model: str) -> bool:
    """Anthropic's models on Bedrock (``anthropic.claude-...``, profiles ``us.anthropic...``)."""
    lowered = model.lower()
    return "anthropic." in lowered or "claude" in lowered


class _Join:
    """Where the continuation meets the prefix. The prefix was sent without its trailing
    whitespace, and the model usually produces that whitespace again, which the user has
    already seen: only what repeats it is dropped (possibly over several deltas), so any
    other whitespace the model produced, such as a paragraph break, is kept."""

    def __init__(self, request: InferenceRequest | None) -> None:
        prefix = request.assistant_prefix if request is not None else ""
        self.pending = prefix[len(prefix.rstrip()) :]

    def feed(self, text: str) -> str:
        """``text`` without the part that repeats the prefix's trailing whitespace."""
        if not self.pending:
            return text
        n = 0
        while n < len(text) and n < len(self.pending) and text[n] == self.pending[n]:
            n += 1
        self.pending = self.pending[n:] if n == len(text) else ""
        return text[n:]
