"""Answer ids: the prefix and 32 hex digits, never the same twice, and different in
another process (the random half is drawn per process)."""

from __future__ import annotations

import re
import subprocess
import sys

from batuta.gateway.ids import answer_id

SHAPE = re.compile(r"chatcmpl-[0-9a-f]{32}")


def test_ids_have_the_providers_shape_and_do_not_repeat() -> None:
    ids = [answer_id("chatcmpl-") for _ in range(10_000)]
    assert all(SHAPE.fullmatch(i) for i in ids), ids[:3]
    assert len(set(ids)) == len(ids)
    assert answer_id("msg_").startswith("msg_")


def test_another_process_draws_other_ids() -> None:
    code = "from batuta.gateway.ids import answer_id; print(answer_id('chatcmpl-'))"
    theirs = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.strip()  # fmt: skip
    assert SHAPE.fullmatch(theirs)
    assert theirs[:25] != answer_id("chatcmpl-")[:25]  # the per-process half differs
