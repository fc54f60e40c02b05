"""Loopback servers for model downloads: a plain file server with byte ranges, and the
Hugging Face Hub's ``resolve`` endpoint as ``huggingface_hub`` uses it."""

from __future__ import annotations

import hashlib
import re

from tests.fakes.base import FakeServer, Request, Responder


class FileFake(FakeServer):
    """Serves ``files`` (path → bytes) with ``Range`` support like a CDN.

    ``ranges=False`` ignores Range (answers 200 with the whole file); ``cut_after`` drops
    the connection after that many bytes of the first GET (an interrupted download).
    """

    def __init__(
        self, files: dict[str, bytes], *, ranges: bool = True, cut_after: int | None = None
    ):
        super().__init__()
        self.files = files
        self.ranges = ranges
        self.cut_after = cut_after
        self.route("GET", r"/.*", self._get)

    def _get(self, req: Request, resp: Responder) -> None:
        data = self.files.get(req.path)
        if data is None:
            resp.send_bytes(404, b"not found", "text/plain")
            return
        match = re.match(r"bytes=(\d+)-$", req.headers.get("range", ""))
        if match and self.ranges:
            start = int(match.group(1))
            if start >= len(data):
                resp.send_bytes(416, b"", "text/plain", {"Content-Range": f"bytes */{len(data)}"})
                return
            body = data[start:]
            headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
            resp.send_bytes(206, body, "application/octet-stream", headers)
            return
        if self.cut_after is not None:
            cut, self.cut_after = self.cut_after, None
            resp.stream(200, [data[:cut], None], "application/octet-stream")
            return
        resp.send_bytes(200, data, "application/octet-stream")


class HubFake(FakeServer):
    """``HEAD|GET /{org}/{repo}/resolve/{revision}/{file}`` as the Hub answers them:
    ``X-Repo-Commit`` and ``ETag`` headers, 404 with ``X-Error-Code: EntryNotFound``."""

    def __init__(self, files: dict[str, bytes], commit: str = "c0ffee" * 6 + "abcd"):
        super().__init__()
        self.files = files  # "org/repo/file" -> bytes
        self.commit = commit
        pattern = r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)"
        self.route("HEAD", pattern, self._resolve)
        self.route("GET", pattern, self._resolve)

    def _resolve(self, req: Request, resp: Responder) -> None:
        assert req.match is not None
        repo, _revision, filename = req.match.groups()
        data = self.files.get(f"{repo}/{filename}")
        if data is None:
            resp.send_json(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
            return
        headers = {
            "X-Repo-Commit": self.commit,
            "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
            "Accept-Ranges": "bytes",
        }
        if req.method == "HEAD":
            handler = resp._h
            handler.send_response(200)
            for key, value in {**headers, "Content-Length": str(len(data))}.items():
                handler.send_header(key, value)
            handler.end_headers()
            return
        resp.send_bytes(200, data, "application/octet-stream", headers)
