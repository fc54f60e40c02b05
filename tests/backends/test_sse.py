"""Server-sent event parsing, line by line (the socket-level cases are in test_http)."""

from __future__ import annotations

import asyncio

from batuta.backends._sse import SSEEvent, parse_sse


def parse(lines: list[str]) -> list[SSEEvent]:
    async def source():
        for line in lines:
            yield line

    async def go():
        return [event async for event in parse_sse(source())]

    return asyncio.run(go())


def test_blank_line_dispatches_and_comments_are_ignored():
    assert parse([": ping", "data: a", "", ":", "data: b", ""]) == [
        SSEEvent("message", "a"),
        SSEEvent("message", "b"),
    ]


def test_named_event_without_data_is_still_an_event():
    assert parse(["event: message_stop", ""]) == [SSEEvent("message_stop", "")]


def test_only_one_leading_space_is_removed_and_empty_data_lines_count():
    assert parse(["data:  two spaces", "data:", ""]) == [SSEEvent("message", " two spaces\n")]


def test_ids_persist_and_nul_ids_are_ignored():
    events = parse(["id: 1", "data: a", "", "data: b", "", "id: x\0y", "data: c", ""])
    assert [e.id for e in events] == ["1", "1", "1"]


def test_a_field_line_without_colon_and_lone_blank_lines():
    assert parse(["", "", "data", "", "event: done"]) == [
        SSEEvent("message", ""),
        SSEEvent("done", ""),
    ]


def test_done_marker():
    assert SSEEvent("message", " [DONE] ").is_done()
    assert not SSEEvent("message", "{}").is_done()
