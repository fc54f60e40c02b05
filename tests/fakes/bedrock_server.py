"""A loopback AWS Bedrock Runtime: Converse and ConverseStream, SigV4 checked for real.

Every request's SigV4 signature is recomputed with botocore from the known secret and
compared, exactly as AWS would reject a bad one (403 ``InvalidSignatureException``); the
Bedrock API-key form (``Authorization: Bearer``) is accepted when a token is configured.
ConverseStream answers with real ``application/vnd.amazon.eventstream`` frames built by the
encoder below, which is independent of the decoder under test and can corrupt a CRC,
re-chunk the bytes at any size, or cut the connection mid-frame.

Claude models (``anthropic`` in the model id) validate the body as Bedrock does for them:
a ValidationException for a final assistant turn ending in whitespace, for a stop sequence
that is only whitespace, for ``temperature`` above 1 or together with ``topP``, and, for a
model id in ``no_prefill`` (the newer models), for any final assistant turn.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hmac
import json
import re
import struct
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.base import FakeServer, Request, Responder

EVENTSTREAM = "application/vnd.amazon.eventstream"
PAD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0"  # AWS pads events with "p"

# x-amzn-ErrorType → HTTP status, as Bedrock Runtime answers them.
ERROR_STATUS = {
    "ThrottlingException": 429,
    "ModelNotReadyException": 429,
    "ServiceUnavailableException": 503,
    "InternalServerException": 500,
    "ValidationException": 400,
    "ServiceQuotaExceededException": 400,
    "AccessDeniedException": 403,
    "ResourceNotFoundException": 404,
    "ModelTimeoutException": 408,
    "ModelErrorException": 424,
    "UnrecognizedClientException": 403,
    "InvalidSignatureException": 403,
    "MissingAuthenticationTokenException": 403,
}
ERROR_MESSAGE = {
    "ThrottlingException": "Too many requests, please wait before trying again.",
    "ServiceUnavailableException": "Bedrock is unable to process your request.",
    "InternalServerException": "The server encountered an internal error.",
    "ValidationException": "The provided model identifier is invalid.",
    "ModelNotReadyException": "Model is not ready to serve inference requests.",
}

_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), "
    r"Signature=(?P<sig>[0-9a-f]{64})$"
)


# ---------------------------------------------------------------------------- encoder


@dataclass(frozen=True)
class Typed:
    """A header value with an explicit event-stream type (2 int8 … 9 uuid)."""

    kind: int
    value: Any


def _header(name: str, value: Any) -> bytes:
    raw = name.encode()
    out = bytes([len(raw)]) + raw
    if not isinstance(value, Typed):
        if isinstance(value, bool):
            value = Typed(0 if value else 1, value)
        elif isinstance(value, int):
            value = Typed(4, value)
        elif isinstance(value, bytes):
            value = Typed(6, value)
        elif isinstance(value, uuid.UUID):
            value = Typed(9, value)
        else:
            value = Typed(7, str(value))
    kind, v = value.kind, value.value
    out += bytes([kind])
    if kind in (0, 1):
        return out
    packers = {2: ">b", 3: ">h", 4: ">i", 5: ">q", 8: ">q"}
    if kind in packers:
        return out + struct.pack(packers[kind], v)
    if kind in (6, 7):
        data = v if isinstance(v, bytes) else str(v).encode()
        return out + struct.pack(">H", len(data)) + data
    if kind == 9:
        return out + v.bytes
    raise ValueError(kind)


def encode_frame(headers: dict[str, Any], payload: bytes, corrupt: str | None = None) -> bytes:
    """One event-stream message. ``corrupt``: "prelude" or "message" flips that CRC."""
    block = b"".join(_header(n, v) for n, v in headers.items())
    total = 16 + len(block) + len(payload)
    prelude = struct.pack(">II", total, len(block))
    prelude_crc = zlib.crc32(prelude) ^ (0xDEAD if corrupt == "prelude" else 0)
    body = prelude + struct.pack(">I", prelude_crc) + block + payload
    message_crc = zlib.crc32(body) ^ (0xBEEF if corrupt == "message" else 0)
    return body + struct.pack(">I", message_crc)


def event_frame(event: str, body: dict[str, Any], corrupt: str | None = None) -> bytes:
    payload = json.dumps({**body, "p": PAD[: 10 + len(event)]}).encode()
    headers = {":event-type": event, ":content-type": "application/json", ":message-type": "event"}
    return encode_frame(headers, payload, corrupt)


def exception_frame(name: str, message: str) -> bytes:
    headers = {
        ":exception-type": name,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_frame(headers, json.dumps({"message": message}).encode())


# ---------------------------------------------------------------------------- behaviour


@dataclass
class Script:
    """What the next Converse / ConverseStream call does."""

    text: list[str] = field(default_factory=lambda: ["Hello", ", world", "!"])
    stop_reason: str = "end_turn"
    usage: tuple[int, int] | None = (7, 3)
    delay: float = 0.0  # seconds between frames (or between re-chunked pieces)
    error: str | None = None  # answer with this x-amzn-ErrorType instead
    message: str | None = None
    exception: str | None = None  # in-stream exception frame after the text
    corrupt: str | None = None  # "prelude" | "message"
    corrupt_at: int = 1  # index of the frame to corrupt
    chunk_size: int | None = None  # re-chunk the byte stream at this size
    cut_after: int | None = None  # frames sent before the connection is cut
    cut_mid_frame: bool = False  # with cut_after: also send half of the next frame
    malformed: bool = False  # Converse: a 200 whose body is not JSON
    skip_metadata: bool = False
    raw_frames: list[bytes] | None = None  # ConverseStream: send exactly these frames


@dataclass
class BedrockFake(FakeServer):
    """Bedrock Runtime on 127.0.0.1, scriptable per call through ``queue``/``default``."""

    access_key: str = "AKIAFAKEEXAMPLE00001"
    secret_key: str = "fake/Secret+Key/0123456789abcdefghijklmn"
    session_token: str | None = None
    bearer_token: str | None = None
    region: str = "us-east-1"
    check_clock: bool = True
    queue: list[Script] = field(default_factory=list)
    default: Script = field(default_factory=Script)
    auth_failures: list[str] = field(default_factory=list)
    no_prefill: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget scripts, recorded requests, extra routes and per-test knobs."""
        self.routes.clear()
        self.requests.clear()
        self.queue.clear()
        self.auth_failures.clear()
        self.default = Script()
        self.no_prefill = set()
        self.session_token = None
        self.bearer_token = None
        self.check_clock = True
        self.route("POST", r"/model/(?P<model>[^/]+)/converse", self._converse)
        self.route("POST", r"/model/(?P<model>[^/]+)/converse-stream", self._converse_stream)

    def prepend(self, method: str, pattern: str, handler: Any) -> None:
        """A test-specific route tried before the protocol's own."""
        self.route(method, pattern, handler)
        self.routes.insert(0, self.routes.pop())

    def next_script(self) -> Script:
        return self.queue.pop(0) if self.queue else self.default

    # ------------------------------------------------------------------ auth

    def _reject(self, res: Responder, error: str, message: str) -> None:
        self.auth_failures.append(error)
        self._error(res, error, message)

    def _error(self, res: Responder, error: str, message: str | None = None) -> None:
        text = message or ERROR_MESSAGE.get(error, f"{error} from the fake")
        res.send_json(
            ERROR_STATUS.get(error, 400),
            {"message": text},
            {
                # The real header carries a namespace after a colon.
                "x-amzn-ErrorType": f"{error}:http://internal.amazon.com/coral/com.amazon.bedrock/",
                "x-amzn-RequestId": str(uuid.uuid4()),
            },
        )

    def authenticate(self, req: Request, res: Responder) -> bool:
        """Check the request as AWS does; answer the rejection and return False if bad."""
        auth = req.headers.get("authorization", "")
        if auth.startswith("Bearer "):
            if self.bearer_token and hmac.compare_digest(auth[7:], self.bearer_token):
                return True
            self._reject(res, "UnrecognizedClientException", "Invalid API Key format or value.")
            return False
        m = _AUTH.match(auth)
        if not m:
            self._reject(res, "MissingAuthenticationTokenException", "Missing Authentication Token")
            return False
        if m["key"] != self.access_key:
            self._reject(
                res,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
            return False
        if m["service"] != "bedrock" or m["region"] != self.region:
            self._reject(
                res,
                "InvalidSignatureException",
                f"Credential should be scoped to a valid region and service 'bedrock' "
                f"(got {m['region']}/{m['service']}).",
            )
            return False
        signed = m["signed"].split(";")
        amz_date = req.headers.get("x-amz-date", "")
        if "host" not in signed or "x-amz-date" not in signed or not amz_date.startswith(m["date"]):
            self._reject(res, "InvalidSignatureException", "host and x-amz-date must be signed.")
            return False
        if self.session_token is not None and (
            req.headers.get("x-amz-security-token") != self.session_token
            or "x-amz-security-token" not in signed
        ):
            self._reject(
                res,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
            return False
        if self.check_clock:
            when = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
            if abs((dt.datetime.now(dt.timezone.utc) - when).total_seconds()) > 300:
                self._reject(res, "InvalidSignatureException", "Signature expired.")
                return False
        if not hmac.compare_digest(self.expected_signature(req, signed, amz_date), m["sig"]):
            self._reject(
                res,
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you "
                "provided. Check your AWS Secret Access Key and signing method.",
            )
            return False
        return True

    def expected_signature(self, req: Request, signed: list[str], amz_date: str) -> str:
        """What AWS computes: botocore's canonical request over the bytes received."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        missing = [h for h in signed if h not in req.headers]
        if missing:
            return "0" * 64
        aws = AWSRequest(
            method=req.method,
            url=f"http://{req.headers['host']}{req.path}",
            data=req.body,
            headers={h: req.headers[h] for h in signed},
        )
        aws.context["timestamp"] = amz_date
        signer = SigV4Auth(
            Credentials(self.access_key, self.secret_key, self.session_token),
            "bedrock",
            self.region,
        )
        canonical = signer.canonical_request(aws)
        return str(signer.signature(signer.string_to_sign(aws, canonical), aws))

    # ------------------------------------------------------------------ validation

    def invalid(self, req: Request) -> str | None:
        """What Bedrock's validation says about a Claude request (None: acceptable)."""
        from urllib.parse import unquote

        model = unquote(req.match["model"]) if req.match else ""
        if "anthropic" not in model:
            return None
        body = json.loads(req.body or b"{}")
        messages = body.get("messages") or [{}]
        last = messages[-1]
        text = "".join(str(c.get("text", "")) for c in last.get("content") or [])
        if last.get("role") == "assistant" and model in self.no_prefill:
            return (
                "This model does not support assistant message prefill. The conversation "
                "must end with a user message."
            )
        if last.get("role") == "assistant" and text != text.rstrip():
            return (
                "The model returned the following errors: final assistant content cannot "
                "end with trailing whitespace"
            )
        config = body.get("inferenceConfig") or {}
        if any(not str(s).strip() for s in config.get("stopSequences") or []):
            return "The model returned the following errors: stop_sequences: each stop " + (
                "sequence must contain non-whitespace"
            )
        temperature = config.get("temperature")
        if temperature is not None and not 0 <= temperature <= 1:
            return "The model returned the following errors: temperature: must be <= 1"
        if temperature is not None and config.get("topP") is not None:
            return (
                "The model returned the following errors: `temperature` and `top_p` cannot "
                "both be specified for this model. Please use only one."
            )
        return None

    # ------------------------------------------------------------------ operations

    def _converse(self, req: Request, res: Responder) -> None:
        if not self.authenticate(req, res):
            return
        problem = self.invalid(req)
        if problem:
            self._error(res, "ValidationException", problem)
            return
        script = self.next_script()
        if script.error:
            self._error(res, script.error, script.message)
            return
        if script.malformed:
            res.send_bytes(200, b'{"output": {"message": ', "application/json")
            return
        body: dict[str, Any] = {
            "output": {
                "message": {"role": "assistant", "content": [{"text": "".join(script.text)}]}
            },
            "stopReason": script.stop_reason,
            "metrics": {"latencyMs": 42},
        }
        if script.usage:
            i, o = script.usage
            body["usage"] = {"inputTokens": i, "outputTokens": o, "totalTokens": i + o}
        res.send_json(200, body, {"x-amzn-RequestId": str(uuid.uuid4())})

    def stream_frames(self, script: Script) -> list[bytes]:
        if script.raw_frames is not None:
            return list(script.raw_frames)
        frames = [event_frame("messageStart", {"role": "assistant"})]
        for piece in script.text:
            frames.append(
                event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}})
            )
        if script.exception:
            frames.append(
                exception_frame(script.exception, script.message or "stream failed in the fake")
            )
            return frames
        frames.append(event_frame("contentBlockStop", {"contentBlockIndex": 0}))
        frames.append(event_frame("messageStop", {"stopReason": script.stop_reason}))
        if script.usage and not script.skip_metadata:
            i, o = script.usage
            usage = {"inputTokens": i, "outputTokens": o, "totalTokens": i + o}
            frames.append(event_frame("metadata", {"usage": usage, "metrics": {"latencyMs": 9}}))
        if script.corrupt:
            frames[script.corrupt_at] = _corrupt(frames[script.corrupt_at], script.corrupt)
        return frames

    def _converse_stream(self, req: Request, res: Responder) -> None:
        if not self.authenticate(req, res):
            return
        problem = self.invalid(req)
        if problem:
            self._error(res, "ValidationException", problem)
            return
        script = self.next_script()
        if script.error:
            self._error(res, script.error, script.message)
            return
        frames = self.stream_frames(script)
        cut = script.cut_after is not None
        if cut:
            tail = frames[script.cut_after] if script.cut_after < len(frames) else b""
            frames = frames[: script.cut_after]
            if script.cut_mid_frame and tail:
                frames.append(tail[: len(tail) // 2])
        pieces: list[bytes | float | None] = []
        if script.chunk_size:
            blob = b"".join(frames)
            for i in range(0, len(blob), script.chunk_size):
                pieces += [blob[i : i + script.chunk_size], script.delay]
        else:
            for frame in frames:
                pieces += [frame, script.delay]
        if cut:
            pieces.append(None)
        # The client may give up first (a deadline): nothing is left to say then.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            res.stream(200, pieces, EVENTSTREAM, {"x-amzn-RequestId": str(uuid.uuid4())})


def _corrupt(frame: bytes, which: str) -> bytes:
    """Flip one CRC of an already-encoded frame."""
    data = bytearray(frame)
    if which == "prelude":
        data[8] ^= 0xFF
    else:
        data[-1] ^= 0xFF
    return bytes(data)
