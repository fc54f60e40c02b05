"""The OpenAI adapter over the gateway's aiohttp client: a representative set of
``test_openai.py`` (stream and blocking answers, error statuses with Retry-After, cuts,
timeouts, refused connections) collected again here under this module's autouse fixture,
which makes the helpers of :mod:`tests.backends._support` send over aiohttp."""

from __future__ import annotations

import pytest

from tests.backends import _support
from tests.backends.test_openai import (  # noqa: F401
    fake,
    server,
    test_429_carries_retry_after_and_request_id,
    test_blocking_body_cut_is_stream_cut,
    test_complete_returns_text_finish_and_usage,
    test_connection_refused_is_connect,
    test_deadline_passing_mid_stream_is_timeout_after_partial_text,
    test_error_statuses_are_classified,
    test_first_byte_timeout_is_timeout,
    test_key_value_never_appears_in_any_error,
    test_retry_after_ms_wins_over_retry_after,
    test_stream_cut_midway_yields_the_partial_answer_then_stream_cut,
    test_stream_yields_each_token_then_finish_and_usage,
    test_wrong_key_is_auth_and_the_key_never_appears,
)


@pytest.fixture(autouse=True)
def over_aiohttp(monkeypatch):
    monkeypatch.setattr(_support, "KIND", "aiohttp")
