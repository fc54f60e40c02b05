"""Google Gemini: the Developer API and Vertex AI, ``generateContent`` and its SSE stream.

Both speak the same JSON (``systemInstruction``, ``contents`` with roles ``user`` /
``model``, ``generationConfig``, ``usageMetadata``); they differ in address and credentials:

- Developer API (backend ``gemini``): ``{base}/models/{model}:generateContent``, key in the
  ``x-goog-api-key`` header (never ``?key=``: URLs end up in logs) from ``api_key_env``,
  else ``GOOGLE_API_KEY`` / ``GEMINI_API_KEY``.
- Vertex AI (backend ``vertex``, or ``options.project`` set):
  ``{base}/projects/{project}/locations/{location}/publishers/google/models/{model}:...``
  with ``options.project`` / ``options.location`` (else ``GOOGLE_CLOUD_PROJECT`` /
  ``GOOGLE_CLOUD_LOCATION``, location default ``global``, served by
  ``aiplatform.googleapis.com`` rather than ``{location}-aiplatform...``). The OAuth token
  comes from ``options.token_env`` or ``api_key_env`` (``VERTEX_ACCESS_TOKEN``), else from
  Application Default Credentials through google-auth (the ``batuta[vertex]`` extra).

Streams use ``:streamGenerateContent?alt=sse``: each event is a whole response holding the
next fragment, with no terminator; the last carries ``finishReason`` and full usage. Safety
blocks (``finishReason: SAFETY``, or no candidates and ``promptFeedback.blockReason``) end the
answer with finish reason ``content_filter`` rather than failing. Errors keep Google's
``RetryInfo.retryDelay`` as ``retry_after``.

An answer to continue goes as a trailing ``model`` turn. Newer models refuse a request
ending that way (400 INVALID_ARGUMENT); after such a 400 the adapter asks once more with the
partial answer as an ordinary ``model`` turn followed by a user turn asking to continue it,
and from then on always that way. (The 400 names no reason a client can rely on, so any
400 to a request ending in a model turn gets that one retry, which is not billed; a 400 for
another reason comes back again and is raised.)
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import quote

import anyio

from batuta._util.options import text
from batuta.backends import _http
from batuta.backends._payload import CONTINUE_INSTRUCTION
from batuta.backends.base import Adapter
from batuta.backends.types import Chunk, Completion, InferenceRequest, Target, Usage
from batuta.errors import BackendError, FailureKind, NotInstalledError

DEVELOPER_BASE = "https://generativelanguage.googleapis.com/v1beta"
VERTEX_BASE = "https://{location}-aiplatform.googleapis.com/v1"
VERTEX_GLOBAL = "https://aiplatform.googleapis.com/v1"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"

_BLOCKED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}
_FINISH = {"FINISH_REASON_UNSPECIFIED": None, "MALFORMED_FUNCTION_CALL": "tool_calls"}


def _finish(raw: object) -> str | None:
    if not isinstance(raw, str) or not raw:
        return None
    if raw in _BLOCKED:
        return "content_filter"
    if raw in _FINISH:
        return _FINISH[raw]
    return _http.finish_reason(raw.lower())


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    output = _http.int_or_none(raw.get("candidatesTokenCount"))
    thoughts = _http.int_or_none(raw.get("thoughtsTokenCount"))
    if thoughts is not None:
        output = (output or 0) + thoughts  # thinking tokens are billed as output
    return Usage(_http.int_or_none(raw.get("promptTokenCount")), output)


class _ADC:
    """Application Default Credentials, shared by every adapter and refreshed when stale."""

    _lock = threading.Lock()
    _credentials: Any = None
    project: str | None = None

    @classmethod
    def token(cls) -> str:
        """A valid access token (blocking: call it in a worker thread)."""
        try:
            import google.auth
            import google.auth.exceptions
            from google.auth.transport.requests import Request
        except ImportError as exc:
            raise NotInstalledError(
                "Vertex AI credentials need google-auth: pip install 'batuta[vertex]' "
                "(or set options.token_env to a variable holding an access token)"
            ) from exc
        with cls._lock:
            try:
                if cls._credentials is None:
                    cls._credentials, cls.project = google.auth.default(scopes=[SCOPE])
                if not cls._credentials.valid:
                    cls._credentials.refresh(Request())
            except google.auth.exceptions.GoogleAuthError as exc:
                cls._credentials = None
                unreachable = isinstance(exc, google.auth.exceptions.TransportError)
                raise BackendError(
                    FailureKind.CONNECT if unreachable else FailureKind.AUTH,
                    f"Google credentials unusable ({type(exc).__name__}): run "
                    "`gcloud auth application-default login` or set options.token_env",
                ) from exc
            return str(cls._credentials.token)


class GeminiAdapter(Adapter):
    """``generateContent`` / ``streamGenerateContent`` for Gemini and Vertex AI."""

    enforces_deadlines = True

    def __init__(self, target: Target, client: _http.HttpClient) -> None:
        super().__init__(target, client)
        self.provider = target.name or target.backend
        self.options = target.options
        self.no_prefill = False  # set once the model refused a trailing model turn
        self.vertex = (
            target.backend in ("vertex", "google-vertex", "google_vertex")
            or "project" in self.options
            or self.options.get("api") == "vertex"
        )

    # ------------------------------------------------------------------ where

    def location(self) -> str:
        location = text(self.options, "location")
        return location or os.environ.get("GOOGLE_CLOUD_LOCATION") or "global"

    def project(self) -> str:
        project = (
            text(self.options, "project") or os.environ.get("GOOGLE_CLOUD_PROJECT") or _ADC.project
        )
        if not project:
            raise BackendError(
                FailureKind.CLIENT,
                f"{self.provider}: set options.project (or GOOGLE_CLOUD_PROJECT) for Vertex AI",
            )
        return project

    def base(self) -> str:
        """The API root, version included (``/v1`` Vertex, ``/v1beta`` Developer API)."""
        if not self.vertex:
            return _http.api_url(self.target.base_url or DEVELOPER_BASE, "", prefix="/v1beta")
        base = self.target.base_url or VERTEX_BASE
        if "{location}" in base:
            location = self.location()
            base = VERTEX_GLOBAL if location == "global" else base.replace("{location}", location)
        return _http.api_url(base, "", prefix="/v1")

    def model_path(self, model: str | None = None) -> str:
        """``/models/{m}`` (Developer API) or the Vertex publisher-model resource."""
        name = model or self.target.model
        if not self.vertex:
            return "/" + (name if name.startswith("models/") else f"models/{quote(name)}")
        if name.startswith("projects/"):
            return "/" + name
        scope = f"/projects/{quote(self.project())}/locations/{quote(self.location())}"
        if name.startswith("publishers/"):
            return f"{scope}/{name}"
        return f"{scope}/publishers/google/models/{quote(name)}"

    def url(self, method: str, model: str | None = None) -> str:
        return f"{self.base().rstrip('/')}{self.model_path(model)}:{method}"

    # ------------------------------------------------------------------ who

    def _token_env(self) -> str | None:
        return text(self.options, "token_env") or self.target.api_key_env

    def _developer_key(self) -> str | None:
        for env in (self.target.api_key_env, "GOOGLE_API_KEY", "GEMINI_API_KEY"):
            if env and os.environ.get(env):
                return os.environ[env]
        return None

    async def credential(self) -> str:
        """The key or token sent (also masked in errors), read at call time."""
        if not self.vertex:
            key = self._developer_key()
            if not key:
                env = self.target.api_key_env or "GEMINI_API_KEY"
                raise BackendError(FailureKind.AUTH, f"{self.provider}: set {env} to the API key")
            return key
        token_env = self._token_env()
        if token_env and os.environ.get(token_env):
            return os.environ[token_env]
        return await anyio.to_thread.run_sync(_ADC.token)

    def _headers(self, credential: str) -> dict[str, str]:
        if self.vertex:
            return {"Authorization": f"Bearer {credential}"}
        return {"x-goog-api-key": credential}

    # ------------------------------------------------------------------ request

    def body(self, request: InferenceRequest) -> dict[str, Any]:
        """The GenerateContentRequest for ``request``."""
        system = [request.system] if request.system else []
        contents: list[dict[str, Any]] = []
        for m in request.history:
            if m.role == "system":
                system.append(m.content)
            else:
                role = "model" if m.role == "assistant" else "user"
                contents.append({"role": role, "parts": [{"text": m.content}]})
        contents.append({"role": "user", "parts": [{"text": request.prompt}]})
        if request.assistant_prefix:
            contents.append({"role": "model", "parts": [{"text": request.assistant_prefix}]})
            if self.no_prefill:
                contents.append({"role": "user", "parts": [{"text": CONTINUE_INSTRUCTION}]})
        body: dict[str, Any] = {"contents": contents}
        if system:
            body["systemInstruction"] = {"parts": [{"text": s} for s in system]}
        config: dict[str, Any] = {}
        for field, value in (
            ("maxOutputTokens", request.max_tokens),
            ("temperature", request.temperature),
            ("topP", request.top_p),
            ("seed", request.seed),
        ):
            if value is not None:
                config[field] = value
        if request.stop:
            config["stopSequences"] = list(request.stop)
        config.update(_http.body_extras(self.options))
        if config:
            body["generationConfig"] = config
        return body

    async def _generate(
        self,
        method: str,
        request: InferenceRequest,
        *,
        params: dict[str, str] | None = None,
        first_byte_timeout: float | None = None,
        deadline: float | None = None,
    ) -> _http.Response:
        """``method`` for ``request``; a refused trailing model turn is asked again once
        with the continuation as a user turn."""
        kwargs: dict[str, Any] = {
            "model": request.model,
            "params": params,
            "first_byte_timeout": first_byte_timeout,
            "deadline": deadline,
        }
        try:
            return await self._post(method, self.body(request), **kwargs)
        except BackendError as exc:
            refused = exc.kind is FailureKind.CLIENT and exc.status == 400
            if not request.assistant_prefix or self.no_prefill or not refused:
                raise
        self.no_prefill = True
        return await self._post(method, self.body(request), **kwargs)

    async def _post(
        self,
        method: str,
        body: dict[str, Any],
        *,
        model: str | None = None,
        params: dict[str, str] | None = None,
        first_byte_timeout: float | None = None,
        deadline: float | None = None,
    ) -> _http.Response:
        credential = await self.credential()
        try:
            return await _http.send(
                self.client,
                "POST",
                self.url(method, model),
                provider=self.provider,
                headers=self._headers(credential),
                json_body=body,
                params=params,
                first_byte_timeout=first_byte_timeout,
                deadline=deadline,
                secret=credential,
            )
        except BackendError as exc:
            better = self._reclassify(exc)
            if better is exc:
                raise
            raise better from exc

    def _reclassify(self, exc: BackendError) -> BackendError:
        """The Developer API answers a bad key with 400 INVALID_ARGUMENT ("API key not
        valid"); that is a credentials problem, not a malformed request."""
        if exc.status == 400 and not self.vertex and "API key" in str(exc):
            text = str(exc).split(": ", 2)[-1]
            if exc.request_id:
                text = text.replace(f" (request id {exc.request_id})", "")
            return BackendError(
                FailureKind.AUTH, text, status=exc.status, request_id=exc.request_id
            )
        return exc

    def _check(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _http.malformed(self.provider, "answer is not a JSON object")
        if body.get("error"):
            raise _http.error_from_body(body, provider=self.provider)
        return body

    # ------------------------------------------------------------------ calls

    async def complete(
        self,
        request: InferenceRequest,
        *,
        first_byte_timeout: float | None = None,
        deadline: float | None = None,
    ) -> Completion:
        """One ``generateContent`` call."""
        response = await self._generate(
            "generateContent",
            request,
            first_byte_timeout=first_byte_timeout,
            deadline=deadline,
        )
        body = await _http.read_answer(response, provider=self.provider, deadline=deadline)
        text, finish = self._content(body)
        if finish is None and not body.get("candidates"):
            raise _http.malformed(self.provider, "answer has no candidates")
        return Completion(text, finish, _usage(body.get("usageMetadata")) or Usage())

    async def stream(
        self,
        request: InferenceRequest,
        *,
        first_byte_timeout: float | None = None,
        deadline: float | None = None,
    ) -> AsyncGenerator[Chunk, None]:
        """``streamGenerateContent?alt=sse``: ends when the server closes after a finish
        reason; a close before any finish reason is STREAM_CUT."""
        response = await self._generate(
            "streamGenerateContent",
            request,
            params={"alt": "sse"},
            first_byte_timeout=first_byte_timeout,
            deadline=deadline,
        )
        finish: str | None = None
        usage: Usage | None = None
        async with _http.sse_stream(
            response,
            provider=self.provider,
            first_byte_timeout=first_byte_timeout,
            deadline=deadline,
            answered=lambda: finish is not None,
        ) as events:
            async for event in events:
                body = self._check(_http.parse_json(event.data, provider=self.provider))
                text, reason = self._content(body)
                if text:
                    yield Chunk(text)
                finish = reason or finish
                usage = _usage(body.get("usageMetadata")) or usage
        if finish is None:
            raise _http.cut(self.provider, "a finish reason")
        yield Chunk("", finish, usage)

    @staticmethod
    def _content(body: dict[str, Any]) -> tuple[str, str | None]:
        """``(text, finish reason)`` of candidate 0, skipping thought parts; a blocked prompt
        (no candidates, ``promptFeedback.blockReason``) finishes as ``content_filter``."""
        candidates = body.get("candidates")
        candidate = next(
            (c for c in candidates or () if isinstance(c, dict) and c.get("index", 0) == 0),
            None,
        )
        if candidate is None:
            feedback = body.get("promptFeedback")
            blocked = isinstance(feedback, dict) and feedback.get("blockReason")
            return "", "content_filter" if blocked else None
        content = candidate.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        text = "".join(
            p["text"]
            for p in parts or ()
            if isinstance(p, dict) and isinstance(p.get("text"), str) and not p.get("thought")
        )
        return text, _finish(candidate.get("finishReason"))

    # ------------------------------------------------------------------ probes

    async def health(self) -> bool:
        """Developer API: ``GET models/{model}`` (the models list when no model is named, as
        when the API itself is checked). Vertex: ``countTokens`` (free), since a model
        lookup there needs another API version. Both prove the credential works."""
        try:
            headers = self._headers(await self.credential())
            if self.vertex:
                url = self.url("countTokens")
                probe: Any = {"contents": [{"role": "user", "parts": [{"text": "ping"}]}]}
            else:
                path = self.model_path() if self.target.model else "/models"
                url, probe = self.base().rstrip("/") + path, None
        except (BackendError, NotInstalledError):
            return False
        response = await _http.probe(self.client, url, headers=headers, json_body=probe)
        return response is not None and response.is_success
