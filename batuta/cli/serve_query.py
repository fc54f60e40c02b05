"""``batuta serve query``: answer one prompt through a route, a named endpoint or a backend.

Parses options, picks the route or target, calls :class:`batuta.router.engine.Router`, and
renders: the answer on stdout (streamed as it arrives when stdout is a terminal), then the
response facts and any retry/failover notes on stderr, or everything as JSON with
``--json``. The routing table ``.batuta/routes.json`` is the source of routes; the manifest
itself is not parsed here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click

if TYPE_CHECKING:
    from batuta.backends.types import InferenceRequest, InferenceResponse, Target
    from batuta.router.engine import Router
    from batuta.routing.table import RouteEntry, RoutingTable

DEFAULT_ROUTE = "default"
BARE_TIMEOUT = 120.0  # a bare endpoint has no route to say how long to wait


def _table(path: Path, *, required: bool) -> RoutingTable | None:
    from batuta.errors import RoutingError
    from batuta.routing.table import read_table

    if not required and not path.exists():
        return None
    try:
        return read_table(path)
    except RoutingError as exc:
        if required:
            raise RoutingError(f"{exc} (or name a server with --endpoint HOST:PORT)") from None
        return None  # a broken table must not stop a query to an explicit endpoint


def _read_prompt(prompt: str) -> str:
    if prompt == "-":
        prompt = sys.stdin.read()
    if not prompt.strip():
        raise click.UsageError("the prompt is empty")
    return prompt


class _Screen:
    """Where text and notes go: text to stdout as it arrives, notes to stderr, held back
    while an answer is mid-line so they never split it."""

    def __init__(self, *, show_text: bool, as_json: bool) -> None:
        self.show_text = show_text
        self.as_json = as_json
        self.events: list[str] = []
        self._held: list[str] = []
        self._wrote = False
        self._last = ""

    def text(self, piece: str) -> None:
        if self.show_text:
            _write(sys.stdout, piece)
            self._wrote = True
            self._last = piece[-1:] or self._last

    def event(self, line: str) -> None:
        self.events.append(line)
        if self.as_json:
            return
        if self._wrote:
            self._held.append(line)
        else:
            click.echo(line, err=True)

    def end_text(self, full: str | None = None) -> None:
        """Finish the answer's line (or print a blocking answer whole), then held notes."""
        if full is not None and not self.as_json:
            _write(sys.stdout, full)
            self._wrote, self._last = bool(full), full[-1:]
        if self._wrote and self._last != "\n":
            _write(sys.stdout, "\n")
        for line in self._held:
            click.echo(line, err=True)
        self._held.clear()


def _write(stream: TextIO, text: str) -> None:
    stream.write(text)
    stream.flush()


def _summary(resp: InferenceResponse) -> str:
    est = " (estimated)" if resp.usage_source == "estimate" else ""
    ttft = f", first token {resp.ttft_ms:.0f} ms" if resp.ttft_ms is not None else ""
    cost = f", ${resp.cost_usd:.6f}" if resp.cost_usd else ""
    tries = "attempt" if resp.attempts == 1 else "attempts"
    falls = "fallback" if resp.fallbacks == 1 else "fallbacks"
    return (
        f"── {resp.target}: {resp.tokens_generated} tokens{est} in {resp.latency_ms:.0f} ms"
        f"{ttft}, {resp.tokens_per_second:.1f} tokens/s, {resp.attempts} {tries}, "
        f"{resp.fallbacks} {falls}{cost}"
    )


async def _discover_model(router: Router, target: Target) -> Target:
    """A bare server queried without --model: ask it which model it serves."""
    import asyncio
    import dataclasses

    from batuta.errors import BatutaError
    from batuta.router.targets import served_model

    try:
        name = await served_model(router.adapter(target), timeout=5.0)
    except (BatutaError, asyncio.TimeoutError):
        return target  # the query itself will report what is wrong
    return dataclasses.replace(target, model=name) if name and not target.model else target


async def _answer(
    route: RouteEntry | None,
    target: Target | None,
    request: InferenceRequest,
    state: Path,
    screen: _Screen,
    timeout: float,
) -> int:
    """Ask, then render; all inside the event loop. (Rendering after ``asyncio.run`` would
    work the same, but CPython 3.11 stops tracing that frame, which hides it from coverage.)"""
    from batuta.errors import AllTargetsFailed, BatutaError, RoutingError
    from batuta.router.engine import Router
    from batuta.runtime.ondemand import waker

    try:
        async with Router(state_dir=state, wake=waker(state)) as router:
            if route is not None:
                resp = await router.query(
                    route, request, on_text=screen.text, on_event=screen.event
                )
            else:
                assert target is not None
                chosen = await _discover_model(router, target)
                resp = await router.query_target(
                    chosen, request, on_text=screen.text, on_event=screen.event, timeout=timeout
                )
    except AllTargetsFailed as exc:
        screen.end_text()
        if screen.as_json:
            click.echo(_as_json(None, screen.events, exc))
            return 1
        # Each attempt was already printed as it happened (✗ / ↻ / · lines): say only
        # what failed, rather than every error a second time.
        raise RoutingError(exc.headline) from None
    except BatutaError:
        screen.end_text()
        raise
    if screen.as_json:
        click.echo(_as_json(resp, screen.events))
        return 0
    screen.end_text(None if screen.show_text else resp.text)
    click.echo(_summary(resp), err=True)
    return 0


def _as_json(resp: InferenceResponse | None, events: list[str], error: Any = None) -> str:
    import dataclasses
    import json

    data: dict[str, Any] = dataclasses.asdict(resp) if resp is not None else {}
    if error is not None:
        data["error"] = str(error)
        attempts = getattr(error, "attempts", [])
        data["attempts"] = [
            {**dataclasses.asdict(a), "kind": a.kind.value if a.kind else None} for a in attempts
        ]
    data["events"] = events
    return json.dumps(data, indent=2, ensure_ascii=False)


@click.command()
@click.argument("prompt")
@click.option(
    "--route",
    "-r",
    "route_name",
    metavar="NAME",
    help="Route of the routing table (default: the route named 'default').",
)
@click.option(
    "--endpoint",
    "-e",
    metavar="TARGET",
    help="A routing-table target, HOST:PORT, a "
    "URL, or a provider such as 'together' (with --model).",
)
@click.option(
    "--backend",
    "-b",
    metavar="BACKEND",
    help="Protocol of --endpoint; alone, the "
    "backend's local server on its default port ($BATUTA_SERVE_PORT when set).",
)
@click.option("--model", "-m", help="Model to ask for (overrides the target's).")
@click.option("--system", "-s", help="System prompt.")
@click.option("--max-tokens", type=click.IntRange(min=1), help="Longest answer, in tokens.")
@click.option("--temperature", type=click.FloatRange(min=0.0), help="Sampling temperature.")
@click.option("--top-p", type=click.FloatRange(min=0.0, max=1.0), help="Nucleus sampling.")
@click.option("--stop", multiple=True, help="Stop sequence (repeatable).")
@click.option("--seed", type=int, help="Sampling seed, where the backend honours one.")
@click.option(
    "--stream/--no-stream",
    default=None,
    help="Stream tokens as they arrive (default: when stdout is a terminal).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.001),
    help="Seconds a bare endpoint "
    f"may take in all (default {BARE_TIMEOUT:g}); routes use their own.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the answer and its facts as JSON.")
@click.option("-f", "--file", "manifest", metavar="FILE", help="Manifest whose .batuta/ holds "
              "the routing table (default $BATUTA_FILE, else ./batuta.yaml).")  # fmt: skip
def query(
    prompt: str,
    route_name: str | None,
    endpoint: str | None,
    backend: str | None,
    model: str | None,
    system: str | None,
    max_tokens: int | None,
    temperature: float | None,
    top_p: float | None,
    stop: tuple[str, ...],
    seed: int | None,
    stream: bool | None,
    timeout: float | None,
    as_json: bool,
    manifest: str | None,
) -> int:
    """Answer PROMPT (`-` reads stdin) through a route, an endpoint or a backend."""
    import asyncio

    from batuta.backends.types import InferenceRequest
    from batuta.errors import BatutaError
    from batuta.router.targets import backend_target, resolve_endpoint
    from batuta.routing.table import table_path
    from batuta.selection import env_port

    if route_name is not None and (endpoint is not None or backend is not None):
        raise click.UsageError("give either --route or --endpoint/--backend, not both")
    text = _read_prompt(prompt)
    if stream is None:
        stream = sys.stdout.isatty() and not as_json
    from batuta._util.paths import state_dir_for

    state = state_dir_for(manifest)
    path = table_path(state)
    route: RouteEntry | None = None
    target: Target | None = None
    if endpoint is not None:
        target = resolve_endpoint(
            endpoint, model=model, backend=backend, table=_table(path, required=False)
        )
    elif backend is not None:
        try:
            port = env_port()
        except BatutaError as exc:
            raise click.UsageError(str(exc)) from None
        target = backend_target(backend, model=model, port=port)
    else:
        table = _table(path, required=True)
        assert table is not None
        route = table.route(route_name or DEFAULT_ROUTE, path)
    request = InferenceRequest(
        prompt=text, system=system, max_tokens=max_tokens, temperature=temperature,
        top_p=top_p, stop=stop, stream=stream, seed=seed,
        model=model if route is not None else None,
    )  # fmt: skip
    screen = _Screen(show_text=stream and not as_json, as_json=as_json)
    return asyncio.run(_answer(route, target, request, state, screen, timeout or BARE_TIMEOUT))
