"""The shared HTTP plumbing: URLs, auth headers, timeouts, sending and the body readers."""

from __future__ import annotations

import asyncio
import time

import pytest

from batuta.backends import _http
from batuta.backends.types import Target
from batuta.errors import BackendError, FailureKind
from tests.backends._support import new_client
from tests.fakes.scripted import QuietFake as FakeServer

# ---------------------------------------------------------------------------- URLs, auth, misc


def test_api_url_adds_v1_only_when_the_base_has_no_version():
    assert (
        _http.api_url("http://127.0.0.1:8080", "/chat/completions")
        == "http://127.0.0.1:8080/v1/chat/completions"
    )
    assert _http.api_url("http://h:8000/v1/", "models") == "http://h:8000/v1/models"
    assert (
        _http.api_url("https://api.groq.com/openai/v1", "/x") == "https://api.groq.com/openai/v1/x"
    )
    assert _http.api_url("https://g.example/v1beta", "/m") == "https://g.example/v1beta/m"
    assert _http.api_url("http://h", "/x", prefix="") == "http://h/x"
    assert _http.origin("http://h:8000/v1") == "http://h:8000"
    assert (
        _http.origin("https://api.fireworks.ai/inference/v1/")
        == "https://api.fireworks.ai/inference"
    )
    assert _http.origin("http://h:1") == "http://h:1"


def target(backend="openai", **options):
    return Target(
        "t", backend, "openai", "http://h", "m", api_key_env="OPENAI_API_KEY", options=options
    )


def test_auth_header_styles():
    assert _http.auth_headers(target(), "k") == {"Authorization": "Bearer k"}
    assert _http.auth_headers(target(), "k", "api-key") == {"api-key": "k"}
    assert _http.auth_headers(target(), "k", "x-api-key") == {"x-api-key": "k"}
    assert _http.auth_headers(target(auth_header="x-api-key"), "k") == {"x-api-key": "k"}
    with pytest.raises(BackendError) as bad:
        _http.auth_headers(target(auth_header="cookie"), "k")
    assert bad.value.kind is FailureKind.CLIENT


def test_missing_key_is_auth_only_where_a_key_is_required():
    with pytest.raises(BackendError) as missing:
        _http.auth_headers(target(), None)
    assert missing.value.kind is FailureKind.AUTH and "OPENAI_API_KEY" in str(missing.value)
    assert _http.auth_headers(target("llamacpp"), None) == {}
    assert _http.auth_headers(target("not-in-catalogue"), "") == {}


def test_request_timeout():
    t = _http.request_timeout()
    assert t.connect == _http.CONNECT_TIMEOUT and t.read == _http.READ_TIMEOUT
    t = _http.request_timeout(connect=5, first_byte=2, total=1)
    assert t.connect == 1 and t.read == 1
    assert _http.request_timeout(connect=None, total=3).connect == 3


# ---------------------------------------------------------------------------- body readers


def serve(pieces, status=200, content_type="text/event-stream"):
    server = FakeServer()
    server.route("POST", "/s", lambda req, resp: resp.stream(status, pieces, content_type))
    return server


async def _collect(url, reader, **kw):
    async with new_client() as client:
        response = await _http.send(client, "POST", url, provider="p", json_body={"a": 1})
        return [x async for x in reader(response, provider="p", **kw)]


def collect(server, reader=_http.iter_sse, **kw):
    with server:
        try:
            return asyncio.run(_collect(server.url + "/s", reader, **kw)), None
        except BackendError as exc:
            return None, exc


def test_sse_framing_variants_over_a_real_socket():
    pieces = [
        b": comment\r\n",
        b'event: token\r\ndata: {"a":',
        b" 1}\r\nid: 7\r\n\r\n",
        b"data:no-space\r",
        b"\n\r\ndata: line1\ndata: line2\n\n",
        "data: caf\u00e9 \u2028 sep\n\n".encode()[:10],  # splits the é
        "data: caf\u00e9 \u2028 sep\n\n".encode()[10:],
        b"retry: 100\nunknown: x\ndata: [DONE]",  # last event without a blank line
    ]
    events, error = collect(serve(pieces))
    assert error is None
    assert [(e.event, e.data, e.id) for e in events] == [
        ("token", '{"a": 1}', "7"),
        ("message", "no-space", "7"),
        ("message", "line1\nline2", "7"),
        ("message", "caf\u00e9 \u2028 sep", "7"),
        ("message", "[DONE]", "7"),
    ]
    assert events[-1].is_done()


def test_sse_cut_mid_body_is_stream_cut():
    events, error = collect(serve([b"data: 1\n\n", None]))
    assert events is None and error.kind is FailureKind.STREAM_CUT


def test_ndjson_skips_blank_lines_and_fails_on_bad_json():
    good, error = collect(
        serve([b'{"a": 1}\n\n{"b"', b': 2}\r\n{"c": 3}'], content_type="application/x-ndjson"),
        _http.iter_ndjson,
    )
    assert error is None and good == [{"a": 1}, {"b": 2}, {"c": 3}]
    _, error = collect(serve([b'{"a": 1}\n{oops}\n']), _http.iter_ndjson)
    assert error.kind is FailureKind.MALFORMED


def test_non_2xx_reads_the_body_for_the_message():
    _, error = collect(serve([b'{"error": "nope"}'], status=418, content_type="application/json"))
    assert error.kind is FailureKind.CLIENT and error.status == 418 and "nope" in str(error)


def test_first_byte_timeout_covers_a_body_that_does_not_start():
    _, error = collect(serve([1.0, b"data: late\n\n"]), first_byte_timeout=0.2)
    assert error.kind is FailureKind.TIMEOUT and "no answer within" in str(error)


def test_deadline_already_passed_times_out_at_once():
    with serve([b"data: x\n\n"]) as server:

        async def go():
            async with new_client() as client:
                await _http.send(
                    client, "POST", server.url + "/s", provider="p", deadline=time.monotonic() - 1
                )

        with pytest.raises(BackendError) as late:
            asyncio.run(go())
    assert late.value.kind is FailureKind.TIMEOUT


def test_error_whose_body_is_cut_is_still_classified():
    _, error = collect(serve([b'{"error": "ha', None], status=500, content_type="application/json"))
    assert error.kind is FailureKind.SERVER and error.status == 500


# ------------------------------------------------------------- stale keep-alive connections


class DropsKeptAlive:
    """A raw HTTP/1.1 server on 127.0.0.1 that answers the first request on a connection
    with keep-alive headers, then reads the next request on that connection and closes it
    without a byte of answer: what llama-server does after some streamed answers.
    ``drop_fresh`` closes new connections without answering too (a server that is gone)."""

    def __init__(self, drop_fresh: bool = False) -> None:
        import socket
        import threading

        self.requests = 0
        self.connections = 0
        self._drop_fresh = drop_fresh
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import threading

        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _read_request(self, conn) -> bool:
        data = b""
        while b"\r\n\r\n" not in data:
            piece = conn.recv(65536)
            if not piece:
                return False
            data += piece
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n")
             if line.lower().startswith(b"content-length:")), 0,
        )  # fmt: skip
        while len(body) < length:
            body += conn.recv(65536)
        self.requests += 1
        return True

    def _serve(self, conn) -> None:
        with conn:
            if not self._read_request(conn) or self._drop_fresh:
                return
            answer = b'{"ok": true}'
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Keep-Alive: timeout=5, max=100\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer)
            )
            self._read_request(conn)  # the next request on this connection: no answer

    def close(self) -> None:
        self._sock.close()


def _post_twice(url: str) -> list[bytes | BackendError]:
    async def go() -> list[bytes | BackendError]:
        out: list[bytes | BackendError] = []
        async with new_client() as client:
            for _ in range(2):
                try:
                    response = await _http.send(client, "POST", url, provider="p", json_body={})
                    out.append(await response.aread())
                    await response.aclose()
                except BackendError as exc:
                    out.append(exc)
        return out

    return asyncio.run(go())


def test_a_kept_alive_connection_the_server_dropped_is_resent_on_a_new_one():
    server = DropsKeptAlive()
    try:
        first, second = _post_twice(server.url + "/v1/chat/completions")
    finally:
        server.close()
    assert first == b'{"ok": true}' and second == b'{"ok": true}'
    # the second request went out on the pooled connection, was dropped, and was resent
    assert server.requests == 3 and server.connections == 2


def test_a_server_that_drops_every_request_still_fails_as_connect():
    server = DropsKeptAlive(drop_fresh=True)
    try:
        (only, _) = _post_twice(server.url + "/v1/chat/completions")
    finally:
        server.close()
    assert isinstance(only, BackendError) and only.kind is FailureKind.CONNECT
    assert "disconnected without sending a response" in str(only)
    assert server.requests == 2 * (1 + _http.STALE_RESENDS)  # bounded, for both requests
