"""``ollama serve`` stand-in: the loopback Ollama fake as a real process.

Listens where ``$OLLAMA_HOST`` says (as ``ollama serve`` does); ``$FAKE_OLLAMA_PULLABLE``
is ``name=size,...`` of models ``/api/pull`` can fetch. Runs until SIGTERM.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fakes.ollama_server import OllamaFake


def main() -> None:
    host, _, port = os.environ["OLLAMA_HOST"].rpartition(":")
    pullable = dict(
        (name, int(size))
        for name, _, size in (
            p.partition("=") for p in os.environ.get("FAKE_OLLAMA_PULLABLE", "").split(",") if p
        )
    )
    fake = OllamaFake(models=[], pullable=pullable)
    fake.host, fake.port = host or "127.0.0.1", int(port)
    fake.start()
    print(f"Listening on {fake.url} (version {fake.version})", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    done.wait()
    fake.stop()


if __name__ == "__main__":
    main()
