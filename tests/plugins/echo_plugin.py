"""A third-party backend plugin, written out as a real distribution by the tests.

``batuta-echo`` registers the local backend ``echo`` through the ``batuta.backends`` entry
point group. Its server is a tiny OpenAI-compatible HTTP server shipped in the plugin
(``python -m batuta_echo.server``): it answers ``/health``, ``/v1/models`` and
``/v1/chat/completions`` (blocking and SSE), echoing the last user message.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# The venv's setuptools (65) cannot build a wheel without the ``wheel`` package, which is
# not installed and cannot be fetched offline; the plugin carries a PEP 517 backend of its
# own instead (``backend-path``), as a distribution may, so pip builds and installs it
# with nothing but the standard library.
PYPROJECT = """\
[build-system]
requires = []
build-backend = "wheel_backend"
backend-path = ["_build"]

[project]
name = "batuta-echo"
version = "1.2.0"

[project.entry-points."batuta.backends"]
echo = "batuta_echo:backends"
"""

BACKEND = '''\
"""A PEP 517 backend that packs batuta_echo/ into a wheel (standard library only)."""
import base64
import hashlib
import os
import zipfile

NAME, VERSION = "batuta_echo", "1.2.0"
INFO = f"{NAME}-{VERSION}.dist-info"
METADATA = "Metadata-Version: 2.1\\nName: batuta-echo\\nVersion: 1.2.0\\n"
WHEEL = "Wheel-Version: 1.0\\nGenerator: wheel_backend\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"
ENTRY_POINTS = "[batuta.backends]\\necho = batuta_echo:backends\\n"


def _files():
    for name in sorted(os.listdir(NAME)):
        if name.endswith(".py"):
            with open(os.path.join(NAME, name), "rb") as file:
                yield f"{NAME}/{name}", file.read()
    yield f"{INFO}/METADATA", METADATA.encode()
    yield f"{INFO}/WHEEL", WHEEL.encode()
    yield f"{INFO}/entry_points.txt", ENTRY_POINTS.encode()


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    filename = f"{NAME}-{VERSION}-py3-none-any.whl"
    record = []
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w") as wheel:
        for path, data in _files():
            wheel.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{path},sha256={digest.decode()},{len(data)}")
        record.append(f"{INFO}/RECORD,,")
        wheel.writestr(f"{INFO}/RECORD", "\\n".join(record) + "\\n")
    return filename
'''

INIT = '''\
"""The echo backend: one record, served by the OpenAI adapter."""
from batuta.catalogue import ModelFormat, Recipe, local_backend


def backends():
    return [
        local_backend(
            "echo", None, "Echo server", language="Python", feature="Echoes prompts",
            group="python_based", formats=(ModelFormat.GGUF,), quants=("Q8_0",),
            port=8765, health="/health", executable=None,
            install="pip install batuta-echo",
            api_key_env="ECHO_API_KEY",
            launch=(
                Recipe(
                    "python",
                    ("--model", "{model}", "--port", "{port}", "--host", "{host}"),
                    module="batuta_echo.server",
                    key_arg="env:ECHO_API_KEY",
                ),
            ),
        )
    ]
'''

SERVER = '''\
"""A minimal OpenAI-compatible server: it answers by echoing the prompt."""
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

args = sys.argv[1:]


def opt(flag):
    return args[args.index(flag) + 1]


MODEL = os.path.basename(opt("--model"))
KEY = os.environ.get("ECHO_API_KEY")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            self.send(200, {"status": "ok"})
        elif self.path == "/v1/models":
            self.send(200, {"object": "list", "data": [{"id": MODEL}]})
        else:
            self.send(404, {"error": {"message": "not found"}})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if KEY and self.headers.get("Authorization") != "Bearer " + KEY:
            return self.send(401, {"error": {"message": "bad key", "type": "auth"}})
        if self.path != "/v1/chat/completions":
            return self.send(404, {"error": {"message": "not found"}})
        prompt = body["messages"][-1]["content"]
        words = ("echo: " + prompt).split(" ")
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(words)}
        if not body.get("stream"):
            message = {"role": "assistant", "content": " ".join(words)}
            return self.send(200, {
                "model": MODEL, "usage": usage,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            })
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
        for piece in pieces:
            delta = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
            self.event({"model": MODEL, "choices": [delta]})
        last = {"index": 0, "delta": {}, "finish_reason": "stop"}
        self.event({"model": MODEL, "choices": [last], "usage": usage})
        self.wfile.write(b"data: [DONE]\\n\\n")
        self.wfile.flush()
        self.close_connection = True

    def event(self, obj):
        self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\\n\\n")
        self.wfile.flush()

    def log_message(self, *args):
        pass


print(f"echo server on {opt('--host')}:{opt('--port')} serving {MODEL}", flush=True)
ThreadingHTTPServer((opt("--host"), int(opt("--port"))), Handler).serve_forever()
'''


def write_source(folder: Path, init: str = INIT) -> Path:
    """The plugin's source tree: pyproject.toml, the record module and the server."""
    package = folder / "batuta_echo"
    package.mkdir(parents=True)
    (folder / "pyproject.toml").write_text(PYPROJECT)
    (folder / "_build").mkdir()
    (folder / "_build" / "wheel_backend.py").write_text(BACKEND)
    (package / "__init__.py").write_text(init)
    (package / "server.py").write_text(SERVER)
    return folder


def install(source: Path, target: Path) -> Path:
    """``pip install --no-deps --no-build-isolation --no-index --target``: offline, built
    by the plugin's own backend."""
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
            "--no-build-isolation", "--no-index", "--target", str(target), str(source),
        ],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return target


def fake_distribution(folder: Path, name: str, entry: str, module: str, code: str) -> Path:
    """A distribution as an installer leaves it (a ``.dist-info`` beside the module),
    written directly: for plugins that fail, without paying for a build."""
    info = folder / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[batuta.backends]\n{entry}\n")
    (folder / f"{module}.py").write_text(code)
    return folder
