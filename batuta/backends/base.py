"""The one interface every wire-protocol adapter implements, and all the router relies on.

An adapter turns an :class:`InferenceRequest` into HTTP for one protocol family and turns
what comes back into :class:`Chunk` objects. Every failure leaves it as a
:class:`~batuta.errors.BackendError` with a :class:`~batuta.errors.FailureKind`, which is all
the router needs to decide between retrying, falling over and giving up.

The router calls only what is declared here: :meth:`Adapter.stream` and
:meth:`Adapter.complete` (always with ``first_byte_timeout`` and ``deadline``),
:meth:`Adapter.continues`, :meth:`Adapter.models` and :meth:`Adapter.health`. An adapter that
sets :attr:`Adapter.enforces_deadlines` bounds its own waits (with precise messages); for
any other the router bounds each step itself.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, ClassVar

from batuta.backends.types import Chunk, Completion, InferenceRequest, Target, Usage

if TYPE_CHECKING:
    from batuta.backends._http import HttpClient
    from batuta.catalogue import BackendCapabilities


class Adapter(ABC):
    """Speaks one wire protocol to one target over a shared HTTP client (an httpx or an
    aiohttp one: :func:`batuta.backends._http.send` takes either)."""

    # True: stream() and complete() honour first_byte_timeout and deadline themselves.
    enforces_deadlines: ClassVar[bool] = False

    def __init__(self, target: Target, client: HttpClient) -> None:
        self.target = target
        self.client = client

    def api_key(self) -> str | None:
        """The key's value, read from the named variable at call time (never stored)."""
        env = self.target.api_key_env
        return os.environ.get(env) if env else None

    def capabilities(self) -> BackendCapabilities:
        """What the target's backend can do: its catalogue record's, else the defaults."""
        from batuta.catalogue import BackendCapabilities, lookup

        record = lookup(self.target.backend)
        return record.capabilities if record is not None else BackendCapabilities()

    def continues(self, request: InferenceRequest) -> bool:
        """Whether this adapter sends ``request``'s assistant prefix in a form the model
        continues exactly (so the router need not splice off a restarted answer)."""
        return False

    @abstractmethod
    def stream(
        self,
        request: InferenceRequest,
        *,
        first_byte_timeout: float | None = None,
        deadline: float | None = None,
    ) -> AsyncGenerator[Chunk, None]:
        """Yield the answer as it is generated. Raises BackendError on any failure,
        including a stream that ends without its protocol's terminal event (STREAM_CUT).
        ``first_byte_timeout`` (seconds) bounds the wait for the first byte, ``deadline``
        (a ``time.monotonic()`` instant) the whole call."""

    async def complete(
        self,
        request: InferenceRequest,
        *,
        first_byte_timeout: float | None = None,
        deadline: float | None = None,
    ) -> Completion:
        """The whole answer at once. Default: drain :meth:`stream`."""
        parts: list[str] = []
        finish: str | None = None
        usage = Usage()
        chunks = self.stream(request, first_byte_timeout=first_byte_timeout, deadline=deadline)
        try:
            async for chunk in chunks:
                parts.append(chunk.text)
                finish = chunk.finish_reason or finish
                usage = chunk.usage or usage
        finally:
            await chunks.aclose()
        return Completion("".join(parts), finish, usage)

    async def models(self) -> list[str]:
        """Model ids the target serves; empty when its protocol cannot list them."""
        return []

    @abstractmethod
    async def health(self) -> bool:
        """True when the target answers its readiness check (or a cheap authenticated call)."""
