"""The gateway's API keys: who is asking, what they may use, and how fast.

Built once when the gateway starts, from the manifest's ``gateway.keys`` and the
environment: each key's value is read from the variable it names, kept only as its
SHA-256 digest, and never written or shown anywhere. A request presents its key as
``Authorization: Bearer KEY`` (OpenAI clients) or ``x-api-key: KEY`` (Anthropic clients;
the bearer token counts when both are sent). Lookup is one hash and one dict access, then a
constant-time comparison of the digests, so the time taken says nothing about how close a
wrong key came.

A key with ``routes:`` may use those routes, by name or by an alias; a server or endpoint
asked for by name (a one-target route) only with a key that has no ``routes:`` restriction.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from batuta.gateway.errors import GatewayError, GatewaySetupError
from batuta.gateway.ratelimit import TokenBucket

if TYPE_CHECKING:
    from batuta.gateway.select import Selected
    from batuta.manifest.gateway import Gateway as GatewayBlock

_NO_KEY = "this gateway needs an API key: send it as Authorization: Bearer KEY or x-api-key: KEY"


def digest(value: str | bytes) -> bytes:
    """The SHA-256 digest a key is known by."""
    return hashlib.sha256(value.encode() if isinstance(value, str) else value).digest()


@dataclass
class Key:
    """One enabled key: its name (what logs and metrics show), digest and limits."""

    name: str
    digest: bytes
    routes: frozenset[str] | None = None  # None: every route, and targets by name
    daily_usd: float | None = None
    per_request_usd: float | None = None
    bucket: TokenBucket | None = None

    @property
    def budgeted(self) -> bool:
        return self.daily_usd is not None or self.per_request_usd is not None


def _presented(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    found = None
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() == b"bearer":
                return token.strip()
        elif name == b"x-api-key" and found is None:
            found = value.strip()
    return found


class Keyring:
    """The enabled keys, by digest and by name."""

    def __init__(self, keys: Iterable[Key]) -> None:
        self.by_digest: dict[bytes, Key] = {}
        self.by_name: dict[str, Key] = {}
        for key in keys:
            self.by_digest[key.digest] = key
            self.by_name[key.name] = key

    @classmethod
    def from_manifest(
        cls, block: GatewayBlock, env: Mapping[str, str], warn: Callable[[str], None]
    ) -> Keyring:
        """The keys of ``block`` whose variable is set in ``env``. One with its variable
        unset is disabled and ``warn`` is told (the variable's name, never a value); a
        GatewaySetupError when none is left, or when two keys hold the same value."""
        from batuta.manifest.gateway import parse_rate

        keys: list[Key] = []
        owner: dict[bytes, str] = {}
        for name, spec in block.keys.items():
            value = env.get(spec.key_env, "").strip()
            if not value:
                warn(f"⚠ gateway.keys.{name}: ${spec.key_env} is not set, so key {name!r} is"
                     " disabled")  # fmt: skip
                continue
            known = digest(value)
            if known in owner:
                first = block.keys[owner[known]].key_env
                raise GatewaySetupError(
                    f"gateway.keys: keys {owner[known]!r} and {name!r} have the same value"
                    f" (${first} and ${spec.key_env}): give each key its own"
                )
            owner[known] = name
            budget = spec.budget
            bucket = TokenBucket(*parse_rate(spec.rate)) if spec.rate is not None else None
            keys.append(
                Key(name, known, frozenset(spec.routes) if spec.routes is not None else None,
                    budget.daily_usd if budget else None,
                    budget.per_request_usd if budget else None, bucket)
            )  # fmt: skip
        if not keys:
            names = ", ".join(f"${s.key_env}" for s in block.keys.values())
            raise GatewaySetupError(
                f"gateway.keys: none of the keys' variables is set ({names}), so no client"
                " could use the gateway: set at least one"
            )
        return cls(keys)

    def admit(self, headers: Iterable[tuple[bytes, bytes]]) -> Key:
        """The key a request presents, when it is known and within its rate; else the
        401 (no or unknown key) or 429 (``Retry-After``: until a token is back)."""
        presented = _presented(headers)
        if not presented:
            raise GatewayError(401, _NO_KEY, code="missing_api_key")
        seen = digest(presented)
        key = self.by_digest.get(seen)
        if key is None or not hmac.compare_digest(key.digest, seen):
            raise GatewayError(401, "the API key is not valid here", code="invalid_api_key")
        if key.bucket is not None:
            wait = key.bucket.take()
            if wait > 0:
                raise GatewayError(
                    429, f"key {key.name!r} is over its rate limit; retry in {wait:.2f} s",
                    type_="requests", code="rate_limit_exceeded", retry_after=wait,
                )  # fmt: skip
        return key

    @staticmethod
    def allow(key: Key, selected: Selected) -> None:
        """A 403 unless ``key`` may use what was selected (see the module docstring)."""
        if key.routes is None:
            return
        name = selected.route.name
        if selected.bare:
            why = f"{name!r} is a server or endpoint; a key with routes: may use only those"
        elif name not in key.routes:
            why = f"route {name!r} is not one of its routes"
        else:
            return
        raise GatewayError(
            403, f"key {key.name!r} may not use this model: {why} ({_names(key.routes)})",
            type_="permission_error", param="model", code="route_not_allowed",
        )  # fmt: skip


def _names(routes: Collection[str]) -> str:
    return ", ".join(sorted(routes)) or "none"
