"""The Anthropic adapter over the gateway's aiohttp client: a representative set of
``test_anthropic.py`` (named stream events, 429/529, cuts, timeouts, health) collected
again here under this module's autouse fixture, which makes the helpers of
:mod:`tests.backends._support` send over aiohttp."""

from __future__ import annotations

import pytest

from tests.backends import _support
from tests.backends.test_anthropic import (  # noqa: F401
    fake,
    server,
    test_429_and_529,
    test_cut_and_malformed,
    test_error_event_after_the_200_is_overloaded,
    test_first_byte_timeout_and_connection_refused,
    test_health_lists_models,
    test_stream_named_events,
)


@pytest.fixture(autouse=True)
def over_aiohttp(monkeypatch):
    monkeypatch.setattr(_support, "KIND", "aiohttp")
