"""The one small interface every wire-protocol adapter implements.

An adapter turns an :class:`InferenceRequest` into HTTP for one protocol family and turns
what comes back into :class:`Chunk` objects. Every failure leaves it as a
:class:`~batuta.errors.BackendError` with a :class:`~batuta.errors.FailureKind`, which is all
the router needs to decide between retrying, falling over and giving up.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from batuta.backends.types import Chunk, Completion, InferenceRequest, Target, Usage

if TYPE_CHECKING:
    from batuta.backends._http import HttpClient


class Adapter(ABC):
    """Speaks one wire protocol to one target over a shared HTTP client (an httpx or an
    aiohttp one: :func:`batuta.backends._http.send` takes either)."""

    def __init__(self, target: Target, client: HttpClient) -> None:
        self.target = target
        self.client = client

    def api_key(self) -> str | None:
        """The key's value, read from the named variable at call time (never stored)."""
        env = self.target.api_key_env
        return os.environ.get(env) if env else None

    def continues(self, request: InferenceRequest) -> bool:
        """Whether this adapter sends ``request``'s assistant prefix in a form the model
        continues exactly (so the router need not splice off a restarted answer)."""
        return False

    @abstractmethod
    def stream(self, request: InferenceRequest) -> AsyncIterator[Chunk]:
        """Yield the answer as it is generated. Raises BackendError on any failure,
        including a stream that ends without its protocol's terminal event (STREAM_CUT)."""

    async def complete(self, request: InferenceRequest) -> Completion:
        """The whole answer at once. Default: drain :meth:`stream`."""
        parts: list[str] = []
        finish: str | None = None
        usage = Usage()
        async for chunk in self.stream(request):
            parts.append(chunk.text)
            finish = chunk.finish_reason or finish
            usage = chunk.usage or usage
        return Completion("".join(parts), finish, usage)

    @abstractmethod
    async def health(self) -> bool:
        """True when the target answers its readiness check (or a cheap authenticated call)."""
