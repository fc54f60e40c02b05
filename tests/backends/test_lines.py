"""The line splitter under the streamed readers: newlines split across chunks."""

from batuta.backends._lines import LineSplitter
from batuta.backends._sse import SSEEvent, SSEParser


def split(*chunks: bytes) -> list[str]:
    lines = LineSplitter()
    out = [line for chunk in chunks for line in lines.feed(chunk)]
    return out + lines.close()


def test_crlf_split_across_chunks_is_one_newline() -> None:
    assert split(b"data: a\r", b"\ndata: b\r\n") == ["data: a", "data: b"]


def test_lone_cr_and_lf_end_lines_and_a_last_line_without_newline_is_kept() -> None:
    assert split(b"a\rb\nc") == ["a", "b", "c"]
    assert split(b"a\r") == ["a"]


def test_utf8_split_across_chunks_is_decoded_whole_and_u2028_stays() -> None:
    text = "é\u2028x\n".encode()
    assert split(text[:1], text[1:]) == ["é\u2028x"]


def test_parser_keeps_an_event_open_across_feeds() -> None:
    parser = SSEParser()
    assert parser.feed(["event: delta", "data: 1"]) == []
    assert parser.feed(["data: 2", "", "data: [DONE]"]) == [SSEEvent("delta", "1\n2")]
    last = parser.close()
    assert last is not None and last.is_done()
