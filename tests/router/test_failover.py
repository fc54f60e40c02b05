"""Failure policy: which failures retry, which fall over, waits and deadlines."""

from __future__ import annotations

import pytest

from batuta.backends.types import InferenceRequest
from batuta.errors import BackendError, FailureKind
from batuta.router.failover import Action, Backoff, Splice, continuation, decide

RETRIED = [
    FailureKind.CONNECT,
    FailureKind.TIMEOUT,
    FailureKind.SERVER,
    FailureKind.OVERLOADED,
    FailureKind.RATE_LIMIT,
    FailureKind.MALFORMED,
    FailureKind.STREAM_CUT,
]
NOT_RETRIED = [FailureKind.AUTH, FailureKind.CLIENT, FailureKind.QUOTA]


def _decide(
    kind,
    *,
    retries_done=0,
    max_retries=2,
    shown=False,
    now=0.0,
    deadline=100.0,
    retry_after=None,
    rnd=0.0,
):
    return decide(
        BackendError(kind, "x", retry_after=retry_after),
        retries_done=retries_done,
        max_retries=max_retries,
        output_shown=shown,
        now=now,
        deadline=deadline,
        rnd=rnd,
    )


@pytest.mark.parametrize("kind", RETRIED)
def test_transient_failures_retry_then_fall_over(kind: FailureKind) -> None:
    assert _decide(kind, retries_done=0).action is Action.RETRY
    assert _decide(kind, retries_done=1).action is Action.RETRY
    last = _decide(kind, retries_done=2)
    assert last.action is Action.FALL_OVER and "2 retries used" in last.reason


@pytest.mark.parametrize("kind", NOT_RETRIED)
def test_request_and_account_failures_fall_over_at_once(kind: FailureKind) -> None:
    d = _decide(kind, retries_done=0, max_retries=5)
    assert d.action is Action.FALL_OVER
    assert kind.value in d.reason


def test_never_resend_after_output_was_shown() -> None:
    d = _decide(FailureKind.STREAM_CUT, shown=True, max_retries=5)
    assert d.action is Action.FALL_OVER and "shown" in d.reason


def test_zero_retries_means_fall_over() -> None:
    assert _decide(FailureKind.SERVER, max_retries=0).action is Action.FALL_OVER


def test_backoff_is_exponential_capped_with_jitter() -> None:
    b = Backoff()
    assert [b.delay(n, 0.0) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert b.delay(0, 0.999) == pytest.approx(0.5 * (1 - 0.25 * 0.999))
    assert all(0.375 <= b.delay(0, r / 10) <= 0.5 for r in range(10))
    d = _decide(FailureKind.SERVER, retries_done=1, rnd=0.5)
    assert d.action is Action.RETRY and d.wait == pytest.approx(1.0 * 0.875)
    assert "backoff" in d.reason


def test_retry_after_is_honoured_within_the_deadline() -> None:
    d = _decide(FailureKind.RATE_LIMIT, retry_after=3.0, now=10.0, deadline=20.0)
    assert d.action is Action.RETRY and d.wait == 3.0 and "Retry-After" in d.reason
    d = _decide(FailureKind.OVERLOADED, retry_after=12.0, now=10.0, deadline=20.0)
    assert d.action is Action.FALL_OVER and "deadline" in d.reason
    d = _decide(FailureKind.RATE_LIMIT, retry_after=-5.0)
    assert d.action is Action.RETRY and d.wait == 0.0


def test_backoff_past_the_deadline_falls_over() -> None:
    d = _decide(FailureKind.CONNECT, now=99.8, deadline=100.0)
    assert d.action is Action.FALL_OVER and "backoff" in d.reason


def test_continuation_appends_shown_text() -> None:
    req = InferenceRequest("q", assistant_prefix="The ")
    assert continuation(req, "") is req
    cont = continuation(req, "capital is")
    assert cont.assistant_prefix == "The capital is"
    assert cont.messages()[-1].role == "assistant"
    assert cont.prompt == "q"


def test_continuation_asks_only_for_the_tokens_max_tokens_leaves() -> None:
    req = InferenceRequest("q", max_tokens=60)
    assert continuation(req, "Once upon a time", 4).max_tokens == 56
    assert continuation(req, "x" * 80, 75).max_tokens == 0  # spent: never below zero
    assert continuation(req, "", 4) is req  # nothing shown, nothing taken off
    unlimited = continuation(InferenceRequest("q"), "Once", 1)
    assert unlimited.max_tokens is None and unlimited.assistant_prefix == "Once"


def test_splice_drops_a_restarted_answer_s_repeat() -> None:
    s = Splice("Paris is a city")
    assert [s.feed(t) for t in ["Paris", " is", " a"]] == ["", "", ""]
    assert s.held() == "Paris is a"
    assert s.feed(" city that") == " that"
    assert s.feed(" never sleeps") == " never sleeps"
    assert s.held() == ""


def test_splice_joins_inside_a_word_and_ignores_leading_space() -> None:
    s = Splice("It has")
    assert s.feed("\nIt hasn") == "n"
    assert s.feed("'t") == "'t"


def test_splice_releases_a_true_continuation_at_once() -> None:
    s = Splice("Paris is")
    assert s.feed(" a city") == " a city"
    s = Splice("Paris is a city")
    assert s.feed("Paris was") == "Paris was"  # a differently worded restart: shown as is
    assert Splice("").feed("x") == "x"


@pytest.mark.parametrize("kind", RETRIED)
def test_a_local_server_that_cannot_be_reached_falls_over_at_once_when_another_is_left(
    kind,
) -> None:
    d = decide(
        BackendError(kind, "x"), retries_done=0, max_retries=2, output_shown=False,
        now=0.0, deadline=100.0, rnd=0.0, local_with_next=True,
    )  # fmt: skip
    if kind is FailureKind.CONNECT:
        assert d.action is Action.FALL_OVER and d.wait == 0.0 and "down" in d.reason
    else:  # a server that answered badly may answer the retry
        assert d.action is Action.RETRY
    assert _decide(FailureKind.CONNECT).action is Action.RETRY  # the route's last target
