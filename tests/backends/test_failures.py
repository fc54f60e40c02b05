"""Failure classification: status codes, every provider's error body, retry hints, transport."""

from __future__ import annotations

import email.utils
import json
import time

import httpx
import pytest

from batuta.backends import _http
from batuta.errors import FailureKind

# ---------------------------------------------------------------------------- Retry-After


def test_retry_after_ms_then_seconds_then_http_date():
    assert _http.parse_retry_after({"retry-after-ms": "1500", "Retry-After": "9"}) == 1.5
    assert _http.parse_retry_after({"Retry-After": "12"}) == 12.0
    assert _http.parse_retry_after({"retry-after": "-3"}) == 0.0
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < _http.parse_retry_after(httpx.Headers({"Retry-After": when})) <= 30
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert _http.parse_retry_after({"Retry-After": past}) == 0.0


def test_retry_after_absent_or_unreadable():
    assert _http.parse_retry_after({}) is None
    assert _http.parse_retry_after({"Retry-After": "soon"}) is None
    assert _http.parse_retry_after({"retry-after-ms": "x", "retry-after": "2"}) == 2.0


# ---------------------------------------------------------------------------- error bodies


def classify(status, body, headers=None, **kw):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return _http.error_from_response(status, headers or {}, raw, provider="p", **kw)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (408, FailureKind.SERVER),
        (409, FailureKind.SERVER),
        (500, FailureKind.SERVER),
        (502, FailureKind.SERVER),
        (503, FailureKind.OVERLOADED),
        (529, FailureKind.OVERLOADED),
        (429, FailureKind.RATE_LIMIT),
        (401, FailureKind.AUTH),
        (403, FailureKind.AUTH),
        (402, FailureKind.QUOTA),
        (400, FailureKind.CLIENT),
        (404, FailureKind.CLIENT),
        (413, FailureKind.CLIENT),
        (422, FailureKind.CLIENT),
        (424, FailureKind.SERVER),
    ],
)
def test_status_classes(status, kind):
    assert classify(status, {}).kind is kind


def test_every_provider_error_shape_yields_its_message():
    shapes = [
        {"error": {"message": "openai says", "type": "invalid_request_error", "code": None}},
        {"object": "error", "message": "flat vllm says", "type": "BadRequestError", "code": 400},
        {"error": "ollama says"},
        {"error": "tgi says", "error_type": "validation"},
        {"type": "error", "error": {"type": "invalid_request_error", "message": "anthropic says"}},
        {"error": {"code": 400, "message": "gemini says", "status": "INVALID_ARGUMENT"}},
        {"type": "about:blank", "title": "Invalid", "detail": "replicate says", "status": 400},
        {"message": "bedrock says"},
    ]
    for body in shapes:
        error = classify(400, body)
        assert "says" in str(error), body
        assert error.kind is FailureKind.CLIENT and error.status == 400


def test_fastapi_style_detail_list_is_kept_readable():
    error = classify(422, {"detail": [{"loc": ["body", "prompt"], "msg": "field required"}]})
    assert "field required" in str(error)


def test_bedrock_error_type_header_and_request_id():
    headers = {
        "x-amzn-ErrorType": "ThrottlingException:http://internal.amazon.com/",
        "x-amzn-RequestId": "abc-1",
    }
    error = classify(429, {"message": "Too many requests"}, headers)
    assert error.kind is FailureKind.RATE_LIMIT and error.request_id == "abc-1"
    assert "ThrottlingException" in str(error) and "internal.amazon" not in str(error)
    not_ready = classify(
        429, {"message": "warming"}, {"x-amzn-ErrorType": "ModelNotReadyException"}
    )
    assert not_ready.kind is FailureKind.OVERLOADED
    quota = classify(400, {"message": "q"}, {"x-amzn-ErrorType": "ServiceQuotaExceededException"})
    assert quota.kind is FailureKind.QUOTA


def test_request_ids_from_headers_or_body():
    assert classify(500, {}, {"x-request-id": "r1"}).request_id == "r1"
    assert classify(500, {}, {"request-id": "r2"}).request_id == "r2"
    body = {"type": "error", "error": {"type": "api_error", "message": "m"}, "request_id": "req_3"}
    assert classify(500, body).request_id == "req_3"


def test_x_should_retry_overrides_the_status():
    assert classify(500, {}, {"x-should-retry": "false"}).kind is FailureKind.CLIENT
    assert classify(429, {}, {"x-should-retry": "false"}).kind is FailureKind.QUOTA
    assert classify(400, {}, {"x-should-retry": "true"}).kind is FailureKind.SERVER
    assert classify(401, {}, {"x-should-retry": "true"}).kind is FailureKind.AUTH


def test_gemini_retry_info_gives_retry_after():
    details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "30s"}]
    body = {
        "error": {
            "code": 429,
            "message": "quota",
            "status": "RESOURCE_EXHAUSTED",
            "details": details,
        }
    }
    error = classify(429, body)
    assert error.kind is FailureKind.RATE_LIMIT and error.retry_after == 30.0
    assert classify(429, body, {"retry-after": "2"}).retry_after == 2.0
    bad = {"error": {"message": "m", "details": [{"retryDelay": "soons"}, {"retryDelay": 5}]}}
    assert classify(429, bad).retry_after is None


def test_unparseable_or_empty_bodies():
    assert "upstream exploded" in str(classify(502, b"upstream exploded"))
    assert "Service Unavailable" in str(classify(503, b""))
    assert classify(500, b"[1, 2]").status == 500


def test_secret_is_masked_and_messages_are_capped():
    error = classify(401, {"error": {"message": "bad key sk-12345678 given"}}, secret="sk-12345678")
    assert "sk-12345678" not in str(error) and "***" in str(error)
    assert len(str(classify(400, {"error": "x" * 5000}))) < 700


def test_in_stream_error_bodies():
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert _http.error_from_body(overloaded, provider="p").kind is FailureKind.OVERLOADED
    assert _http.error_from_body({"error": "boom"}, provider="p").kind is FailureKind.SERVER
    assert _http.error_from_body("not a dict", provider="p").kind is FailureKind.SERVER
    assert "error in stream" in str(_http.error_from_body({}, provider="p"))


# ---------------------------------------------------------------------------- transport


def test_transport_errors_are_classified_without_query_strings():
    request = httpx.Request("GET", "https://h.example/v1/x?key=SECRETKEY")
    connect = _http.transport_error(httpx.ConnectError("refused", request=request), provider="p")
    assert connect.kind is FailureKind.CONNECT and "SECRETKEY" not in str(connect)
    assert "https://h.example/v1/x" in str(connect)
    assert (
        _http.transport_error(httpx.ReadTimeout("slow", request=request)).kind
        is FailureKind.TIMEOUT
    )
    assert _http.transport_error(httpx.ConnectTimeout("slow")).kind is FailureKind.TIMEOUT
    dropped = httpx.RemoteProtocolError("peer closed")
    assert _http.transport_error(dropped).kind is FailureKind.CONNECT
    assert _http.transport_error(dropped, received=True).kind is FailureKind.STREAM_CUT
    assert (
        _http.transport_error(httpx.ReadError("reset"), received=True).kind
        is FailureKind.STREAM_CUT
    )
    assert _http.transport_error(httpx.DecodingError("gzip")).kind is FailureKind.MALFORMED
    assert _http.transport_error(httpx.TooManyRedirects("loop")).kind is FailureKind.SERVER
    assert _http.transport_error(httpx.UnsupportedProtocol("ftp")).kind is FailureKind.CLIENT
