"""Apply: make what runs match the manifest, then write the routing table.

Under the apply lock, the state is observed again and the plan recomputed (a saved plan
is applied only if the manifest and the state are exactly as when it was made). Then:
pull missing models, stop removed servers, start new and changed ones (a replaced
server comes back on the same port), wait until each is ready, and write
``.batuta/routes.json`` atomically.

Crash safety comes from the runtime: a server is recorded in state.json *before* its
supervisor starts it, so an apply killed at any point leaves records the next plan sees,
and the next apply converges from them without starting anything twice.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from batuta._util.paths import same_manifest
from batuta.apply.gateway import start_gateway, stop_gateway
from batuta.errors import BatutaError, RuntimeStartError, StateError
from batuta.plan import Desired, desired_state, plan_from, resolve_models
from batuta.plan.diff import LIVE_STATES, Plan, ServerChange
from batuta.plan.gateway import check_gateway_port
from batuta.plan.observe import PROBE_TIMEOUT, observe, probe_all
from batuta.plan.render import NO_CHANGES
from batuta.routing.build import with_health
from batuta.routing.table import table_path, write_table
from batuta.runtime.gateway import SHOWN
from batuta.runtime.spec import ServerSpec, ServerStatus

if TYPE_CHECKING:
    from batuta.manifest import LoadedManifest
    from batuta.runtime import Runtime
    from batuta.runtime.ollama import Progress

Echo = Callable[[str], None]
T = TypeVar("T")

MAX_PARALLEL_STARTS = 4


@dataclass(frozen=True)
class ApplyResult:
    """What an apply did."""

    plan: Plan
    added: int = 0
    changed: int = 0
    destroyed: int = 0
    table: Path | None = None  # the routing table written, if one was
    started: tuple[str, ...] = ()
    stopped: tuple[str, ...] = ()

    @property
    def summary(self) -> str:
        """``Apply complete! Resources: X added, Y changed, Z destroyed.``"""
        return (
            f"Apply complete! Resources: {self.added} added, {self.changed} changed, "
            f"{self.destroyed} destroyed."
        )


class ApplyFailed(RuntimeStartError):
    """Some servers did not come up; those that did are running and recorded."""

    def __init__(self, result: ApplyResult, failures: Mapping[str, RuntimeStartError]) -> None:
        self.result = result
        self.failures = dict(failures)
        servers = sum(1 for name in failures if name != SHOWN)
        what = [f"{servers} server(s)"] if servers else []
        if SHOWN in failures:
            what.append("the gateway")
        lines = [f"{' and '.join(what)} failed to start:"]
        tails: list[str] = []
        for name, exc in sorted(failures.items()):
            first = str(exc).split("\n--- last log lines ---")[0]
            lines.append(f"  {name}: {first}")
            if exc.log_tail:
                tails.append(f"[{name}]\n{exc.log_tail}")
        super().__init__("\n".join(lines), "\n".join(tails))


def check_saved(saved: Plan, fresh: Plan) -> None:
    """Refuse a saved plan when the manifest, its environment or the state moved since."""
    if not same_manifest(saved.manifest, fresh.manifest):
        raise StateError(f"the plan was made for {saved.manifest}, not {fresh.manifest}")
    if saved.manifest_digest != fresh.manifest_digest:
        raise StateError(
            f"{fresh.manifest} changed since the plan was saved: run `batuta plan` again"
        )
    if saved.fingerprint != fresh.fingerprint:
        raise StateError(
            "the running servers changed since the plan was saved (a server started, stopped "
            "or restarted): run `batuta plan` again"
        )
    for change in saved.servers:
        now = fresh.server(change.name)
        if now is None or (not change.pending_model and now.config_hash != change.config_hash):
            raise StateError(
                f"server {change.name!r} would now launch differently than the plan says "
                "(an ${env:...} value changed?): run `batuta plan` again"
            )


def _pull(
    loaded: LoadedManifest,
    plan: Plan,
    statuses: Mapping[str, ServerStatus],
    echo: Echo,
    progress: Progress | None,
    cache_dir: Path | None,
) -> Desired:
    """Fetch the plan's missing models and return the specs now that their files exist."""
    from batuta.runtime.sources import default_cache_dir, resolve_model

    cache = cache_dir or default_cache_dir()
    manifest = loaded.manifest
    for pull in plan.pulls:
        echo(f"model.{pull.name}: Pulling from {pull.source}...")
        started = time.monotonic()
        resolve_model(
            manifest.models[pull.name],
            base_dir=loaded.path.parent,
            cache_dir=cache,
            download=True,
            progress=progress,
        )
        echo(f"model.{pull.name}: Pull complete after {time.monotonic() - started:.1f}s")
    resolved, _ = resolve_models(loaded, cache_dir=cache)
    return desired_state(loaded, statuses, resolved=resolved, cache_dir=cache)


class _Executor:
    """Carries out one plan's server changes against the runtime."""

    def __init__(self, runtime: Runtime, specs: Mapping[str, ServerSpec], echo: Echo) -> None:
        self.runtime = runtime
        self.specs = specs
        self._echo = echo
        self._lock = threading.Lock()
        self.failures: dict[str, RuntimeStartError] = {}
        self.started: list[str] = []
        self.stopped: list[str] = []

    def echo(self, text: str) -> None:
        with self._lock:
            self._echo(text)

    def stop(self, change: ServerChange) -> None:
        pid = f" [pid {change.pid}]" if change.pid and change.state in LIVE_STATES else ""
        self.echo(f"server.{change.name}: Destroying...{pid}")
        started = time.monotonic()
        self.runtime.stop(change.name)
        self.stopped.append(change.name)
        self.echo(
            f"server.{change.name}: Destruction complete after {time.monotonic() - started:.1f}s"
        )

    def wait(self, name: str) -> None:
        """Wait for a server that is already starting (an interrupted apply's)."""
        spec = self.specs[name]
        self.echo(f"server.{name}: Still starting, waiting...")
        deadline = time.monotonic() + spec.ready_timeout
        while time.monotonic() < deadline:
            status = self.runtime.status().get(name)
            if status is None or status.state not in ("starting",):
                return
            time.sleep(0.05)

    def start(self, change: ServerChange, verb: str) -> None:
        spec = self.specs[change.name]
        detail = ", ".join(str(c) for c in change.changes) or (
            f"{spec.backend} on {spec.host}:{spec.port}"
        )
        self.echo(f"server.{change.name}: {verb}... [{detail}]")
        started = time.monotonic()
        if spec.start == "on-demand":
            self.record(change.name, spec, started)
            return
        try:
            status = self.runtime.start(spec, wait=True, timeout=spec.ready_timeout)
        except BatutaError as exc:
            failure = exc if isinstance(exc, RuntimeStartError) else RuntimeStartError(str(exc))
            with self._lock:
                self.failures[change.name] = failure
            self.echo(f"server.{change.name}: failed: {str(exc).splitlines()[0]}")
            return
        with self._lock:
            self.started.append(change.name)
        noun = "Creation" if verb == "Creating" else "Replacement"
        self.echo(
            f"server.{change.name}: {noun} complete after {time.monotonic() - started:.1f}s "
            f"[pid {status.pid}]"
        )

    def record(self, name: str, spec: ServerSpec, started: float) -> None:
        """An on-demand server is recorded, idle: its first request starts it."""
        from batuta.runtime.ondemand import record_idle

        try:
            record_idle(self.runtime, spec)
        except BatutaError as exc:
            with self._lock:
                self.failures[name] = RuntimeStartError(str(exc))
            self.echo(f"server.{name}: failed: {str(exc).splitlines()[0]}")
            return
        with self._lock:
            self.started.append(name)
        self.echo(
            f"server.{name}: Recorded after {time.monotonic() - started:.1f}s"
            " [on-demand: idle until its first request]"
        )


def in_parallel(fn: Callable[[T], None], items: Sequence[T], limit: int) -> None:
    """``fn`` over ``items``, at most ``limit`` at once, re-raising the first error.

    Daemon threads joined in short steps: Ctrl-C reaches the main thread at once and
    the process can exit without waiting for servers still loading (they are recorded,
    so the next apply picks them up).
    """
    gate = threading.Semaphore(limit)
    errors: list[BaseException] = []

    def work(item: T) -> None:
        with gate:
            try:
                fn(item)
            except BaseException as exc:  # handed to the main thread below
                errors.append(exc)

    threads = [threading.Thread(target=work, args=(item,), daemon=True) for item in items]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.1)
    if errors:
        raise errors[0]


def _blocking_replacements(plan: Plan, specs: Mapping[str, ServerSpec]) -> list[ServerChange]:
    """Replaced servers whose current port another starting server wants: stop them first."""
    wanted = {
        specs[c.name].port: c.name
        for c in plan.servers
        if c.action in ("create", "replace") and c.name in specs
    }
    return [
        c
        for c in plan.servers
        if c.action == "replace"
        and c.recorded is not None
        and wanted.get(c.recorded.port, c.name) != c.name
    ]


def execute(
    loaded: LoadedManifest,
    plan: Plan,
    desired: Desired,
    runtime: Runtime,
    *,
    echo: Echo,
    probe_timeout: float = PROBE_TIMEOUT,
) -> ApplyResult:
    """Carry out ``plan`` (whose models are already pulled) with ``desired``'s specs."""
    run = _Executor(runtime, desired.specs, echo)
    statuses = runtime.status()
    gateway = plan.gateway
    if gateway is not None and gateway.action == "destroy":
        stop_gateway(runtime, gateway, echo)
    for change in plan.servers:
        if change.action == "destroy":
            run.stop(change)
    for change in _blocking_replacements(plan, desired.specs):
        run.stop(change)
    todo: list[tuple[ServerChange, str]] = []
    for change in plan.servers:
        status = statuses.get(change.name)
        spec = desired.specs.get(change.name)
        if change.action in ("create", "replace") and spec is not None:
            if (
                change.pending_model
                and status is not None
                and status.state in LIVE_STATES
                and status.spec.config_hash == spec.config_hash
            ):
                continue  # the pulled file is the one it already serves
            todo.append((change, "Creating" if change.action == "create" else "Replacing"))
        elif change.action == "no-op" and status is not None and status.state == "starting":
            # Started by an apply that was interrupted: wait for it like any other start.
            todo.append((change, "Waiting"))
    if todo:

        def one(item: tuple[ServerChange, str]) -> None:
            change, verb = item
            if verb == "Waiting":
                run.wait(change.name)
            else:
                run.start(change, verb)

        in_parallel(one, todo, MAX_PARALLEL_STARTS)
    declared = set(desired.specs)
    live = {n: s for n, s in runtime.status().items() if n in declared}
    # An on-demand server asleep is not down: its health is unknown until a request.
    health = {name: "down" for name in declared if desired.specs[name].start != "on-demand"}
    health.update(probe_all(live, timeout=probe_timeout))
    table = with_health(desired.table, health, declared)
    path = table_path(loaded.state_dir)
    write_table(path, table)
    echo(f"routes: Wrote {_rel(path)} [{len(table.routes)} route(s)]")
    gateway_up = False
    if gateway is not None and gateway.action in ("create", "replace") and desired.gateway:
        failure = start_gateway(runtime, gateway, desired.gateway, echo)
        if failure is not None:
            run.failures[SHOWN] = failure
        gateway_up = failure is None
    started = set(run.started)
    replaced = {c.name for c in plan.servers if c.action == "replace" and c.name in started}
    added = len(started) + sum(1 for r in plan.routes if r.action == "create") + gateway_up
    changed = sum(1 for r in plan.routes if r.action == "update")
    destroyed = len(set(run.stopped) | replaced)
    destroyed += sum(1 for r in plan.routes if r.action == "destroy")
    if gateway is not None:
        destroyed += gateway.action == "destroy" or (gateway.action == "replace" and gateway_up)
    result = ApplyResult(
        plan=plan,
        added=added,
        changed=changed,
        destroyed=destroyed,
        table=path,
        started=tuple(sorted(run.started)),
        stopped=tuple(sorted(run.stopped)),
    )
    if run.failures:
        raise ApplyFailed(result, run.failures)
    return result


def _rel(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def apply_loaded(
    loaded: LoadedManifest,
    *,
    saved: Plan | None = None,
    echo: Echo = print,
    progress: Progress | None = None,
    runtime: Runtime | None = None,
    cache_dir: Path | None = None,
    probe_timeout: float = PROBE_TIMEOUT,
) -> ApplyResult:
    """Apply ``loaded`` (or exactly ``saved``, when the state has not moved since)."""
    from batuta.runtime.state import apply_lock

    if runtime is None:
        from batuta.runtime import Runtime

        runtime = Runtime(loaded.state_dir)
    with apply_lock(loaded.state_dir):
        observation = observe(loaded.state_dir, runtime=runtime, probe_timeout=probe_timeout)
        desired = desired_state(loaded, observation.statuses, cache_dir=cache_dir)
        plan = plan_from(loaded, observation, desired=desired)
        if saved is not None:
            check_saved(saved, plan)
            plan = saved
        if not plan.has_changes:
            echo(NO_CHANGES)
            return ApplyResult(plan=plan)
        check_gateway_port(loaded, plan.gateway, desired.specs)  # before anything changes
        if plan.pulls:
            desired = _pull(loaded, plan, observation.statuses, echo, progress, cache_dir)
        result = execute(loaded, plan, desired, runtime, echo=echo, probe_timeout=probe_timeout)
    echo(result.summary)
    return result


def apply(
    path: str | os.PathLike[str] | None = None,
    *,
    saved: Plan | None = None,
    echo: Echo = print,
    progress: Progress | None = None,
    cache_dir: Path | None = None,
) -> ApplyResult:
    """Load the manifest and apply it; raises ApplyFailed when a server does not come up."""
    from batuta.manifest import load_manifest

    loaded = load_manifest(path)
    return apply_loaded(loaded, saved=saved, echo=echo, progress=progress, cache_dir=cache_dir)
