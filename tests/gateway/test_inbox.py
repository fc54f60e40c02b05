"""The stream hand-over: pieces in order, batched while the writer is busy, woken by the
end of a task, and a timeout when nothing comes."""

from __future__ import annotations

import asyncio

from batuta.gateway.inbox import Inbox


def test_pieces_arrive_in_order_and_in_one_batch_while_the_writer_is_away() -> None:
    inbox = Inbox()
    for piece in ("The", " capital", " is"):
        inbox.put(piece)  # no writer waiting: nothing to wake
    first = inbox.take()
    later = inbox.take()
    assert first == ["The", " capital", " is"]
    assert later == []


def test_wait_is_woken_by_text_by_a_finished_task_and_times_out_otherwise() -> None:
    async def main() -> tuple[bool, bool, bool, float]:
        loop = asyncio.get_running_loop()
        inbox = Inbox()
        loop.call_later(0.02, inbox.put, "hi")
        by_text = await inbox.wait(5.0)
        assert inbox.take() == ["hi"]
        task = asyncio.ensure_future(asyncio.sleep(0.02))
        task.add_done_callback(inbox.wake)
        by_task = await inbox.wait(5.0)
        start = loop.time()
        timed_out = await inbox.wait(0.05)
        return by_text, by_task, timed_out, loop.time() - start

    by_text, by_task, timed_out, waited = asyncio.run(main())
    assert by_text and by_task
    assert timed_out is False and 0.04 <= waited < 1.0


def test_wait_returns_at_once_when_text_is_already_there() -> None:
    async def main() -> bool:
        inbox = Inbox()
        inbox.put("x")
        return await inbox.wait(None)

    assert asyncio.run(main()) is True
