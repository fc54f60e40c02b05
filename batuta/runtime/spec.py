"""What the runtime needs to launch one server, and what it reports back.

A :class:`ServerSpec` is fully resolved (argv, env, port, model file): the runtime never
reads the manifest. ``config_hash`` covers everything that affects the running process,
so the planner replaces a server exactly when its hash changes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

ServerState = Literal[
    "starting",
    "ready",
    "unhealthy",
    "crashloop",
    "stopping",
    "stopped",
    "exited",
    "failed",
    "idle",  # an on-demand server that is recorded and not running: a request wakes it
]
Origin = Literal["manifest", "adhoc"]


@dataclass(frozen=True)
class ServerSpec:
    """One server, ready to launch."""

    name: str
    backend: str
    argv: tuple[str, ...]
    host: str
    port: int
    health_url: str
    model_path: str
    model_digest: str = ""  # sha256 of the model file (or registry digest) when known
    env: dict[str, str] = field(default_factory=dict)
    restart: Literal["always", "on-failure", "never"] = "on-failure"
    origin: Origin = "adhoc"
    manifest: str | None = None  # absolute path of the manifest that declared it
    ready_timeout: float = 120.0
    log_max_size: int = 10 * 2**20
    engine: str = ""  # which engine of a backend that has several (llama.cpp: server|python)
    # How it is run, not what runs: outside config_hash (the plan compares them itself).
    start: Literal["always", "on-demand"] = "always"
    idle_timeout: float = 600.0  # on-demand: stopped after this long without a request
    memory: int | None = None  # bytes it uses (declared, or estimated from the GGUF)
    memory_budget: int | None = None  # on-demand: what local servers may use together

    @property
    def url(self) -> str:
        """Base URL clients use."""
        return f"http://{self.host}:{self.port}"

    @property
    def engine_name(self) -> str:
        """The engine that runs: as recorded or, for records written before engines had
        names, as the command line tells (llama-cpp-python runs as ``python -m``)."""
        if self.engine or self.backend != "llamacpp":
            return self.engine
        return "python" if "llama_cpp.server" in self.argv[1:3] else "server"

    @property
    def config_hash(self) -> str:
        """Digest of everything that affects the running process."""
        relevant = {
            "backend": self.backend,
            "argv": list(self.argv),
            "env": dict(sorted(self.env.items())),
            "host": self.host,
            "port": self.port,
            "model_path": self.model_path,
            "model_digest": self.model_digest,
        }
        if self.engine:  # absent before engines had names: those hashes stay as they were
            relevant["engine"] = self.engine
        blob = json.dumps(relevant, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (env values are the user's own settings, never secrets)."""
        data = asdict(self)
        data["argv"] = list(self.argv)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServerSpec:
        """Inverse of :meth:`to_json`."""
        return cls(**{**data, "argv": tuple(data["argv"])})


@dataclass(frozen=True)
class ServerStatus:
    """What the runtime knows about one server right now."""

    spec: ServerSpec
    state: ServerState
    pid: int | None = None
    create_time: float | None = None  # psutil create_time of pid: ownership proof
    started_at: float | None = None  # wall clock of the current process's start
    restarts: int = 0
    last_exit: int | None = None  # return code of the last process that ended
    message: str = ""

    @property
    def name(self) -> str:
        """The server's name (its identity)."""
        return self.spec.name
