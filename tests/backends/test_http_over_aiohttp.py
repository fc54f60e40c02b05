"""batuta.backends._http over the gateway's aiohttp client, against the same fakes.

The body-reader and stale-connection tests of ``test_http.py`` run again here with the
helpers of :mod:`tests.backends._support` sending over
:class:`batuta.backends._aio.AioClient` (pytest collects the imported test functions under
this module's autouse fixture); then what is particular to aiohttp: how bodies are encoded,
when a connection goes back to the pool, how its failures classify.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from batuta.backends import _aio, _http
from batuta.errors import BackendError, FailureKind
from tests.backends import _support
from tests.backends.test_http import (  # noqa: F401
    test_a_kept_alive_connection_the_server_dropped_is_resent_on_a_new_one,
    test_a_server_that_drops_every_request_still_fails_as_connect,
    test_deadline_already_passed_times_out_at_once,
    test_error_whose_body_is_cut_is_still_classified,
    test_first_byte_timeout_covers_a_body_that_does_not_start,
    test_ndjson_skips_blank_lines_and_fails_on_bad_json,
    test_non_2xx_reads_the_body_for_the_message,
    test_sse_cut_mid_body_is_stream_cut,
    test_sse_framing_variants_over_a_real_socket,
)
from tests.fakes.scripted import QuietFake as FakeServer


@pytest.fixture(autouse=True)
def over_aiohttp(monkeypatch):
    monkeypatch.setattr(_support, "KIND", "aiohttp")


def test_the_helpers_send_over_aiohttp_here():
    assert isinstance(_support.new_client(), _aio.AioClient)
    assert test_sse_cut_mid_body_is_stream_cut.__module__ == "tests.backends.test_http"


def _exchange(server: FakeServer, **send: object) -> tuple[int, dict[str, str], bytes]:
    async def go() -> tuple[int, dict[str, str], bytes]:
        async with _aio.AioClient() as client:
            response = await _http.send(client, "POST", server.url + "/s", provider="p", **send)
            body = await response.aread()
            await response.aclose()
            return response.status_code, dict(response.headers), body

    return asyncio.run(go())


def test_json_bodies_are_sent_as_httpx_sends_them():
    server = FakeServer()
    server.route("POST", "/s", lambda req, resp: resp.send_json(200, {"ok": True}))
    with server:
        status, headers, body = _exchange(
            server, json_body={"text": "café", 7: "token id"}, params={"alt": "sse"}
        )
        content = _exchange(server, content=b"signed", headers={"Content-Type": "x/signed"})
    assert status == 200 and body == b'{"ok": true}'
    assert headers["Content-Type"] == "application/json"
    first, second = server.requests
    assert first.body == '{"text":"café","7":"token id"}'.encode()
    assert first.headers["content-type"] == "application/json" and first.query == {"alt": ["sse"]}
    assert content[0] == 200 and second.body == b"signed"
    assert second.headers["content-type"] == "x/signed"


def test_an_abandoned_body_closes_its_connection_a_finished_one_is_reused():
    server = FakeServer()
    server.route("POST", "/s", lambda req, resp: resp.stream(200, [b"a" * 10, 0.3, b"b"]))

    async def go() -> None:
        async with _aio.AioClient() as client:
            for _ in range(2):
                response = await _http.send(client, "POST", server.url + "/s", provider="p")
                await response.aclose()  # nothing read: the connection must not go back
            response = await _http.send(client, "POST", server.url + "/s", provider="p")
            assert [c async for c in _http.iter_bytes(response, provider="p")] == [b"a" * 10, b"b"]
            response = await _http.send(client, "POST", server.url + "/s", provider="p")
            assert b"".join([c async for c in _http.iter_bytes(response, provider="p")]) == (
                b"a" * 10 + b"b"
            )

    with server:
        asyncio.run(go())
    ports = [r.client[1] for r in server.requests]
    assert len(set(ports[:3])) == 3  # each abandoned answer's connection was closed
    assert ports[3] == ports[2]  # a body read to its end gives the connection back


@pytest.mark.parametrize(
    ("error", "sent", "kind"),
    [
        (_aio.aiohttp.ServerDisconnectedError(), False, FailureKind.CONNECT),
        (_aio.aiohttp.ServerDisconnectedError(), True, FailureKind.STREAM_CUT),
        (_aio.aiohttp.ClientPayloadError("incomplete"), True, FailureKind.STREAM_CUT),
        (_aio.aiohttp.ClientOSError(104, "reset"), True, FailureKind.STREAM_CUT),
        (_aio.aiohttp.ClientOSError(104, "reset"), False, FailureKind.CONNECT),
        (_aio.aiohttp.ConnectionTimeoutError(), False, FailureKind.TIMEOUT),
        (_aio.aiohttp.SocketTimeoutError(), True, FailureKind.TIMEOUT),
        (_aio.aiohttp.InvalidURL("nope://x?key=k"), False, FailureKind.CLIENT),
        (_aio.aiohttp.ClientError("odd"), False, FailureKind.CONNECT),
    ],
)
def test_aiohttp_failures_classify_as_the_same_httpx_failure(error, sent, kind):
    translated = _aio.translate(error, ("POST", "http://127.0.0.1:9/v1/x?key=k"), sent=sent)
    classified = _http.transport_error(translated, provider="p", received=sent)
    assert classified.kind is kind
    assert "key=k" not in str(classified)


def test_a_redirect_loop_is_a_server_failure():
    server = FakeServer()
    server.route(
        "POST", "/s", lambda req, resp: resp.send_bytes(307, b"", headers={"Location": "/s"})
    )
    with server, pytest.raises(BackendError) as failed:
        _exchange(server, params={"key": "k-secret"})
    assert failed.value.kind is FailureKind.SERVER and "redirects" in str(failed.value)
    assert "k-secret" not in str(failed.value)


def test_probe_over_aiohttp_reads_and_closes_and_is_none_when_unreachable(free_port):
    server = FakeServer()
    server.route("GET", "/h", lambda req, resp: resp.send_json(503, {"loading": True}))

    async def go(url: str) -> int | None:
        async with _aio.AioClient() as client:
            response = await _http.probe(client, url)
            return None if response is None else response.status_code

    with server:
        assert asyncio.run(go(server.url + "/h")) == 503
    assert asyncio.run(go(f"http://127.0.0.1:{free_port}/h")) is None


def _read_blocking(pieces: list[bytes | float | None], after_send: float) -> object:
    """read_json of a blocking answer (no first-byte timeout) whose deadline is
    ``after_send`` seconds after its headers arrived."""
    server = FakeServer()
    server.route("POST", "/s", lambda q, r: r.stream(200, pieces, "application/json"))

    async def go() -> object:
        async with _support.new_client() as client:
            response = await _http.send(client, "POST", server.url + "/s", provider="p")
            await asyncio.sleep(0.2)  # what the server sends at once has arrived by now
            deadline = time.monotonic() + after_send
            return await _http.read_json(response, provider="p", deadline=deadline)

    with server:
        return asyncio.run(go())


def test_a_blocking_body_still_arriving_is_read_under_the_deadline():
    with pytest.raises(BackendError) as late:
        _read_blocking([b'{"a":', 3.0, b" 1}"], after_send=0.3)
    assert late.value.kind is FailureKind.TIMEOUT
    assert "deadline passed mid-answer" in str(late.value)


def test_a_blocking_body_already_read_to_its_end_is_parsed_without_a_timer():
    # Reading it cannot wait, so no timer is set: even a deadline passed meanwhile
    # leaves the answer that is already there, as it did under a timer.
    assert _read_blocking([b'{"a": 1}'], after_send=-1.0) == {"a": 1}


def test_a_stream_that_stalls_mid_body_ends_at_the_deadline_without_aiohttp_read_timer():
    """With a deadline, aiohttp's per-read timer is left off: the body readers' own timer
    ends a stalled stream at the deadline, classified as before."""
    server = FakeServer()
    server.route("POST", "/s", lambda q, r: r.stream(200, [b"data: a\n\n", 3.0, b"data: b\n\n"]))

    async def go() -> tuple[list[str], float | None, BackendError | None]:
        got: list[str] = []
        async with _support.new_client() as client:
            deadline = time.monotonic() + 0.6
            response = await _http.send(
                client, "POST", server.url + "/s", provider="p", deadline=deadline
            )
            read_timer = response._response.connection.protocol.read_timeout
            try:
                async for event in _http.iter_sse(response, provider="p", deadline=deadline):
                    got.append(event.data)
            except BackendError as exc:
                return got, read_timer, exc
        return got, read_timer, None

    with server:
        began = time.monotonic()
        got, read_timer, error = asyncio.run(go())
        took = time.monotonic() - began
    assert got == ["a"] and read_timer is None
    assert error is not None and error.kind is FailureKind.TIMEOUT
    assert "deadline passed mid-answer" in str(error) and took < 2.5
