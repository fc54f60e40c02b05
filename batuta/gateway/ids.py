"""Ids of the gateway's answers (``chatcmpl-…``, ``cmpl-…``, ``msg_…``), 32 hex digits as
OpenAI's and Anthropic's are: a random half drawn once per process and a counter, so they
are unique across replicas and restarts without a system call per answer."""

from __future__ import annotations

import itertools
import os

_PROCESS = os.urandom(8).hex()
_COUNTER = itertools.count(int.from_bytes(os.urandom(4), "big"))


def answer_id(prefix: str) -> str:
    """A new id: ``prefix`` and 32 hex digits."""
    return f"{prefix}{_PROCESS}{next(_COUNTER):016x}"
