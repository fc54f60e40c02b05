"""Azure OpenAI: the OpenAI Chat Completions wire with Azure's URLs and credentials.

Request bodies, SSE parsing, ``choices: []`` content-filter chunks and error classification
are :class:`~batuta.backends.openai.OpenAIAdapter`'s; this module only decides where a call
goes and how it authenticates.

- ``options.api_version`` set → the deployment form
  ``/openai/deployments/{deployment}/chat/completions?api-version=...``;
  absent → the v1 form ``/openai/v1/chat/completions`` with ``model`` = the deployment.
- ``options.deployment`` names the deployment (default: the target's model).
- Versions before ``2024-09-01-preview`` reject ``max_completion_tokens`` and
  ``stream_options``: they get ``max_tokens`` and no usage request (usage is then
  estimated); later versions and the v1 form get the new fields.
- ``options.resource`` fills ``https://{resource}.openai.azure.com`` when no base URL is set.
- Credentials: the ``api-key`` header from ``api_key_env`` (``AZURE_OPENAI_API_KEY``), or a
  Microsoft Entra bearer token from ``options.token_env`` (default ``AZURE_OPENAI_AD_TOKEN``)
  when ``options.auth`` is ``entra`` or when only the token variable is set.

429s carry ``retry-after-ms`` as well as ``Retry-After``; the shared parser prefers the
former. A prompt refused by the content filter is a 400 ``content_filter``: CLIENT, never
retried on the same target.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

from batuta._util.options import text
from batuta.backends import _http
from batuta.backends.openai import OpenAIAdapter
from batuta.backends.types import InferenceRequest, Target
from batuta.errors import BackendError, FailureKind

DEFAULT_ROOT = "https://{resource}.openai.azure.com"
NEW_FIELDS_SINCE = "2024-09-01"  # first api-version taking max_completion_tokens
_ENTRA_ENV = "AZURE_OPENAI_AD_TOKEN"


class AzureOpenAIAdapter(OpenAIAdapter):
    """OpenAIAdapter addressed and authenticated the Azure way."""

    def __init__(self, target: Target, client: _http.HttpClient) -> None:
        super().__init__(target, client)
        self.api_version = text(target.options, "api_version") or None
        self.deployment = text(target.options, "deployment") or target.model

    # ------------------------------------------------------------------ where

    def root(self) -> str:
        """The resource endpoint, without any ``/openai`` path users often paste along."""
        base = (self.target.base_url or DEFAULT_ROOT).rstrip("/")
        if "{resource}" in base:
            resource = text(self.target.options, "resource")
            if not resource:
                raise BackendError(
                    FailureKind.CLIENT,
                    f"{self.provider}: set base_url or options.resource for Azure OpenAI",
                )
            base = base.replace("{resource}", resource)
        for suffix in ("/openai/v1", "/openai"):
            if base.endswith(suffix):
                return base[: -len(suffix)]
        return base

    def url(self, path: str) -> str:
        """Chat goes to the deployment (classic) or to ``/openai/v1``; the models list is
        resource-wide in both forms."""
        if not self.api_version:
            return f"{self.root()}/openai/v1{path}"
        version = quote(self.api_version, safe="")
        if path == self.dialect.models_path:
            return f"{self.root()}/openai{path}?api-version={version}"
        deployment = quote(self.deployment, safe="")
        return f"{self.root()}/openai/deployments/{deployment}{path}?api-version={version}"

    def body(self, request: InferenceRequest, *, stream: bool) -> dict[str, Any]:
        """The OpenAI body; in the v1 form ``model`` must name the deployment, and an
        ``api_version`` older than 2024-09-01-preview gets the fields it knows."""
        body = super().body(request, stream=stream)
        if not request.model:
            body["model"] = self.deployment
        if self.api_version and self.api_version[:10] < NEW_FIELDS_SINCE:
            if "max_completion_tokens" in body:
                body["max_tokens"] = body.pop("max_completion_tokens")
            body.pop("stream_options", None)
        return body

    # ------------------------------------------------------------------ who

    def _entra_env(self) -> str:
        return text(self.target.options, "token_env") or _ENTRA_ENV

    def _uses_entra(self) -> bool:
        auth = text(self.target.options, "auth").lower()
        if auth in ("entra", "aad", "azure-ad"):
            return True
        if auth in ("api-key", "key"):
            return False
        if auth:
            raise BackendError(FailureKind.CLIENT, f"{self.provider}: unknown auth {auth!r}")
        return not super().api_key() and bool(os.environ.get(self._entra_env()))

    def api_key(self) -> str | None:
        """The credential actually sent (key or Entra token), read at call time."""
        if self._uses_entra():
            return os.environ.get(self._entra_env())
        return super().api_key()

    def headers(self) -> dict[str, str]:
        """``api-key: <key>`` or ``Authorization: Bearer <Entra token>``."""
        secret = self.api_key()
        if self._uses_entra():
            if not secret:
                raise BackendError(
                    FailureKind.AUTH, f"{self.provider}: set {self._entra_env()} to an Entra token"
                )
            return {"Authorization": f"Bearer {secret}"}
        if not secret:
            env = self.target.api_key_env or "AZURE_OPENAI_API_KEY"
            raise BackendError(
                FailureKind.AUTH, f"{self.provider}: set {env} (or {self._entra_env()})"
            )
        return {"api-key": secret}

    async def health(self) -> bool:
        """An authenticated ``GET`` of the resource's models list."""
        try:
            headers = self.headers()
            url = self.url(self.dialect.models_path)
        except BackendError:
            return False
        response = await _http.probe(self.client, url, headers=headers)
        return response is not None and response.is_success
