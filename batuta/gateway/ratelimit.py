"""A token bucket: how many requests a key may make, and how long to wait when it may not.

The bucket holds up to ``count`` tokens (the count of the rate as declared: 60 for
``60/min``) and refills continuously at ``count / per`` tokens a second; each request takes
one. Buckets live in the gateway process (one event loop, so no lock) and start full.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """``count`` requests per ``per`` seconds, with bursts of up to ``count``."""

    def __init__(
        self, count: float, per: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.capacity = count
        self.refill = count / per  # tokens a second
        self._clock = clock
        self._tokens = count
        self._stamp = clock()

    def take(self) -> float:
        """Take a token: 0.0 when one was there, else the seconds until one will be."""
        now = self._clock()
        tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.refill)
        self._stamp = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return 0.0
        self._tokens = tokens
        return (1.0 - tokens) / self.refill
