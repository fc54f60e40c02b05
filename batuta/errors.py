"""Every error batuta raises on purpose.

::

    BatutaError                     anything the CLI prints as a clean message, exit 1
    ├── ManifestError               one or more problems in batuta.yaml
    │                               (each a ManifestIssue: file, line, col, path, message)
    ├── NotInstalledError           an executable or optional extra is missing
    ├── ModelSourceError            a model cannot be fetched, verified or read
    ├── RuntimeStartError           a server did not come up (carries its last log lines)
    ├── StateError                  .batuta/ is locked, corrupt or moved under a saved plan
    ├── RoutingError                no route / no target can answer
    │   └── AllTargetsFailed        every target of a route failed (carries the attempts)
    └── BackendError                one call to one backend failed, classified for the router
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class BatutaError(Exception):
    """Base of every error batuta raises deliberately."""

    exit_code = 1


@dataclass(frozen=True)
class ManifestIssue:
    """One problem found in a manifest, pointing at the line that causes it."""

    file: str
    line: int
    col: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ManifestError(BatutaError):
    """The manifest is invalid; ``issues`` lists every problem found, in file order."""

    def __init__(self, issues: list[ManifestIssue]) -> None:
        self.issues = sorted(issues, key=lambda i: (i.file, i.line, i.col, i.path))
        super().__init__("\n".join(str(i) for i in self.issues))


class NotInstalledError(BatutaError):
    """A needed executable or Python extra is absent; the message says how to install it."""


class PluginError(BatutaError):
    """An installed backend plugin failed to load or registered a bad record; the message
    names its distribution."""


class ModelSourceError(BatutaError):
    """A model source could not be resolved, downloaded, verified or parsed."""


class RuntimeStartError(BatutaError):
    """A server failed to start or become healthy."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        self.log_tail = log_tail
        text = message if not log_tail else f"{message}\n--- last log lines ---\n{log_tail}"
        super().__init__(text)


class MemoryBudgetError(RuntimeStartError):
    """An on-demand server cannot start within ``defaults.memory_budget``, even after
    stopping the idle ones; the message names the budget and what uses it."""


class StateError(BatutaError):
    """The state directory is locked by another run, unreadable, or changed since a plan."""


class RoutingError(BatutaError):
    """A query cannot be routed (unknown route, no routing table, privacy, budget)."""


class FailureKind(str, Enum):
    """How a backend call failed; the router decides retry and fallback from this alone."""

    CONNECT = "connect"  # refused / reset / DNS: retry, then fall over
    TIMEOUT = "timeout"  # no first byte in time: retry, then fall over
    RATE_LIMIT = "rate_limit"  # 429 (honours Retry-After)
    OVERLOADED = "overloaded"  # 503 / 529 / cold start
    SERVER = "server"  # other 5xx, 408
    MALFORMED = "malformed"  # body or stream that does not parse
    STREAM_CUT = "stream_cut"  # a stream ended before its terminal event
    AUTH = "auth"  # 401 / 403: never retried on the same target
    CLIENT = "client"  # 400 / 404 / 413 / 422: never retried on the same target
    QUOTA = "quota"  # billing problem (insufficient_quota): never retried

    @property
    def retryable(self) -> bool:
        """Whether trying the same target again could help."""
        return self not in (FailureKind.AUTH, FailureKind.CLIENT, FailureKind.QUOTA)


class BackendError(BatutaError):
    """One backend call failed. ``retry_after`` is seconds the server asked us to wait."""

    def __init__(
        self,
        kind: FailureKind,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        self.kind = kind
        self.status = status
        self.retry_after = retry_after
        self.request_id = request_id
        prefix = f"HTTP {status}: " if status is not None else ""
        suffix = f" (request id {request_id})" if request_id else ""
        super().__init__(f"{kind.value}: {prefix}{message}{suffix}")


@dataclass(frozen=True)
class Attempt:
    """One try of one target, as reported after a routed query."""

    target: str
    error: str | None
    kind: FailureKind | None = None
    elapsed_ms: float = 0.0
    tokens_before_failure: int = 0
    retry_after: float | None = None  # seconds the server asked to wait (429, 503)


class AllTargetsFailed(RoutingError):
    """Every target of the route failed; ``attempts`` says how each one did. ``what`` is
    ``endpoint`` when a bare endpoint (no route) was asked."""

    def __init__(self, route: str, attempts: list[Attempt], *, what: str = "route") -> None:
        self.route = route
        self.attempts = attempts
        self.what = what
        super().__init__(
            "\n".join([self.headline, *(f"  {a.target}: {a.error}" for a in attempts)])
        )

    @property
    def headline(self) -> str:
        """The first line: what failed, without the attempts."""
        if self.what == "route":
            return f"route {self.route!r}: every target failed"
        tries = len(self.attempts)
        return f"endpoint {self.route!r} failed ({tries} attempt{'' if tries == 1 else 's'})"
