"""``gateway.state``: what the gateway shares with its other replicas, through Redis.

Without it the gateway keeps spend and breakers in ``.batuta/`` files and rate buckets in
memory, exactly as before (one machine). With it, the route and key ledgers, the breakers
and each key's rate bucket are the Redis ones of :mod:`batuta.router.redisstate`; metrics,
the request log and in-flight counts stay per replica.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from batuta.errors import StateError
from batuta.gateway.errors import GatewaySetupError
from batuta.gateway.ratelimit import TokenBucket

if TYPE_CHECKING:
    from batuta.gateway.keys import Keyring
    from batuta.manifest.gateway import Gateway as GatewayBlock
    from batuta.router.redisstate import SharedState


class SharedBucket(TokenBucket):
    """A key's token bucket in Redis; this replica's own while Redis cannot be reached."""

    def __init__(self, shared: SharedState, name: str, count: float, per: float) -> None:
        super().__init__(count, per)
        self.shared = shared
        self.name = name

    def take(self) -> float:
        try:
            return self.shared.take(self.name, self.capacity, self.refill)
        except StateError:
            return super().take()


def open_shared(
    block: GatewayBlock | None, env: Mapping[str, str], keys: Keyring | None
) -> SharedState | None:
    """The shared state ``block`` declares (None: none), its keys' buckets moved into it."""
    if block is None or block.state is None:
        return None
    from batuta.router.redisstate import SharedState

    try:
        shared = SharedState.from_settings(block.state, block.state_password_env, env)
    except StateError as exc:
        raise GatewaySetupError(str(exc)) from None
    for key in keys.by_name.values() if keys is not None else ():
        if key.bucket is not None:
            per = key.bucket.capacity / key.bucket.refill
            key.bucket = SharedBucket(shared, key.name, key.bucket.capacity, per)
    return shared
