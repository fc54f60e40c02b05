"""What to do after a backend call fails: retry the same target, or fall over.

The decision uses only the :class:`~batuta.errors.FailureKind`, the server's
``Retry-After``, how many retries this target already had, whether output was shown,
and the route's deadline:

- connect / timeout / server / overloaded / rate_limit / malformed / stream_cut:
  retried on the same target up to ``route.retries`` times, then fall over;
- except connect on a local target while another target of the route is left: a local
  server that cannot be reached is down (killed, or being restarted by its supervisor,
  which takes longer than the first backoff), so the next target is asked at once rather
  than after a backoff; the route's last target is still retried;
- auth / client / quota: fall over at once (a wrong key on one provider must not sink
  the route, and repeating the same bad request cannot help); a target this machine
  cannot use at all (an optional extra missing) reaches here as client;
- once text was shown to the user, never re-send to the same target: the next target
  continues from that text (:func:`continuation`), so the user still reads one answer,
  and is asked only for the tokens ``max_tokens`` leaves;
- a retry waits ``Retry-After`` when the server sent one, else exponential backoff with
  jitter (0.5 s x 2^n, capped at 8 s, minus up to 25 %, as the OpenAI and Anthropic SDKs
  do); when the wait would pass the deadline, fall over instead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum

from batuta.backends.types import InferenceRequest
from batuta.errors import BackendError, FailureKind


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: ``min(cap, base * 2**n) * (1 - jitter * r)``."""

    base: float = 0.5
    cap: float = 8.0
    jitter: float = 0.25

    def delay(self, retry_number: int, rnd: float) -> float:
        """Seconds before retry ``retry_number`` (0-based); ``rnd`` is uniform in [0, 1)."""
        return min(self.cap, self.base * 2.0**retry_number) * (1.0 - self.jitter * rnd)


DEFAULT_BACKOFF = Backoff()


class Action(str, Enum):
    """The two things the router can do after a failure."""

    RETRY = "retry"
    FALL_OVER = "fall_over"


@dataclass(frozen=True)
class Decision:
    """What to do next, how long to wait first, and why (for the user)."""

    action: Action
    wait: float = 0.0
    reason: str = ""


def decide(
    error: BackendError,
    *,
    retries_done: int,
    max_retries: int,
    output_shown: bool,
    now: float,
    deadline: float,
    rnd: float,
    backoff: Backoff = DEFAULT_BACKOFF,
    local_with_next: bool = False,
) -> Decision:
    """Retry the same target or fall over to the next one. ``local_with_next``: the target
    is a local server and another target of the route is left after it."""
    if output_shown:
        return Decision(Action.FALL_OVER, reason="output was shown; continuing elsewhere")
    if not error.kind.retryable:
        return Decision(Action.FALL_OVER, reason=f"{error.kind.value} is not retried")
    if local_with_next and error.kind is FailureKind.CONNECT:
        return Decision(Action.FALL_OVER, reason="a local server that cannot be reached is down")
    if retries_done >= max_retries:
        return Decision(Action.FALL_OVER, reason=f"{retries_done} retries used")
    if error.retry_after is not None:
        wait, source = max(0.0, error.retry_after), "Retry-After"
    else:
        wait, source = backoff.delay(retries_done, rnd), "backoff"
    if now + wait >= deadline:
        return Decision(
            Action.FALL_OVER, reason=f"{source} {wait:.1f}s would pass the route's deadline"
        )
    return Decision(Action.RETRY, wait=wait, reason=f"{source} {wait:.1f}s")


def continuation(request: InferenceRequest, shown: str, generated: int = 0) -> InferenceRequest:
    """The request a next target gets after ``shown`` text (``generated`` tokens) was
    already streamed: that text as the assistant prefix, and ``max_tokens`` is a total
    across targets, so only what is left of it (0: the answer is already complete)."""
    if not shown:
        return request
    left = None if request.max_tokens is None else max(0, request.max_tokens - generated)
    return dataclasses.replace(
        request, assistant_prefix=request.assistant_prefix + shown, max_tokens=left
    )


class Splice:
    """Joins the next target's output onto text already shown.

    A server that honours the trailing assistant message continues it; many chat servers
    (llama-cpp-python, OpenAI itself) instead start the answer over. While the new output
    repeats what was shown it is held back; once it has repeated all of it, only the rest
    is released, so a restarted answer still reads as one. Output that diverges is released
    whole: it is a true continuation (or a differently worded restart, which no one can
    splice).
    """

    def __init__(self, shown: str) -> None:
        self._shown = shown.lstrip()
        self._held = ""
        self._matching = bool(self._shown)

    def feed(self, text: str) -> str:
        """The part of ``text`` to show now ("" while it may still be a repeat)."""
        if not self._matching:
            return text
        self._held += text
        candidate = self._held.lstrip()
        if len(candidate) <= len(self._shown) and self._shown.startswith(candidate):
            return ""
        self._matching = False
        if candidate.startswith(self._shown):
            return candidate[len(self._shown) :]
        return self._held

    def held(self) -> str:
        """Text held back so far: a repeat of what was shown, dropped if the answer ends."""
        return self._held if self._matching else ""
