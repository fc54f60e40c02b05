"""Hugging Face Inference Endpoints: a dedicated URL with an inference engine behind it.

``options.engine`` says which protocol that engine speaks:

- ``openai`` (default; TGI's Messages API, vLLM, SGLang, llama.cpp): Chat Completions at
  ``{endpoint}/v1/chat/completions``, delegated to :class:`OpenAIAdapter`;
- ``tgi``: TGI's native ``/generate`` and ``/generate_stream`` (raw prompt, token events),
  exactly as :class:`~batuta.backends.tgi.TGIAdapter` speaks them.

Protected endpoints take the HF token as ``Authorization: Bearer`` (``api_key_env``, default
``HF_TOKEN``). An endpoint scaled to zero answers 503 while it wakes up: OVERLOADED, which
the router retries with backoff within the route's deadline. ``health()`` asks the engine's
``/health`` (``options.health_path`` to change it).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import TYPE_CHECKING

from batuta._util.options import text
from batuta.backends.openai import OpenAIAdapter
from batuta.backends.tgi import TGIAdapter
from batuta.backends.types import Chunk, Completion, InferenceRequest, Target
from batuta.errors import BackendError, FailureKind

if TYPE_CHECKING:
    from batuta.backends._http import HttpClient

ENGINES = ("openai", "tgi")


class HFEndpointAdapter(TGIAdapter):
    """A TGI adapter whose protocol (native or Messages API) is the endpoint's engine."""

    def __init__(self, target: Target, client: HttpClient) -> None:
        super().__init__(target, client)
        self.engine = text(target.options, "engine", "openai").lower()
        self.messages_api = OpenAIAdapter(target, client) if self.engine == "openai" else None

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

    async def complete(
        self,
        request: InferenceRequest,
        *,
        first_byte_timeout: float | None = None,
        deadline: float | None = None,
    ) -> Completion:
        """One blocking call through the endpoint's engine."""
        self._check()
        return await super().complete(
            request, first_byte_timeout=first_byte_timeout, deadline=deadline
        )

    async def stream(
        self,
        request: InferenceRequest,
        *,
        first_byte_timeout: float | None = None,
        deadline: float | None = None,
    ) -> AsyncGenerator[Chunk, None]:
        """Token by token through the endpoint's engine."""
        self._check()
        chunks = super().stream(request, first_byte_timeout=first_byte_timeout, deadline=deadline)
        async with aclosing(chunks):
            async for chunk in chunks:
                yield chunk

    async def health(self) -> bool:
        """The engine's ``/health`` with the token: 200 when ready, 503 while it wakes up."""
        try:
            self._check()
        except BackendError:
            return False
        return await super().health()
