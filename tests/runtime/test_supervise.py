"""The supervisor's rules with a fake clock, spawner, signaller and prober (honcho-style):
restart policy, exponential backoff, crash loops, readiness, stopping, adoption, the
${env:} values a command hands over, a corrupt state.json, and process group ownership."""

from __future__ import annotations

import signal
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from batuta.runtime import logs
from batuta.runtime.process import UNKNOWN_EXIT
from batuta.runtime.spec import ServerSpec
from batuta.runtime.state import ServerRecord, locked_state, read_state
from batuta.runtime.supervise import (
    PROBE_SLOW_START,
    PROBE_STARTING,
    Seams,
    Supervisor,
    describe_exit,
)


@dataclass
class FakeProc:
    pid: int
    create_time: float
    returncode: int | None = None
    ignores_term: bool = False
    leftover: bool = False  # a grandchild stays in the group after the leader exits

    def poll(self) -> int | None:
        return self.returncode


class World:
    """Fake time and processes the supervisor acts on."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.procs: dict[int, FakeProc] = {}
        self.next_pid = 100
        self.signals: list[tuple[int, int]] = []
        self.health: dict[str, str] = {}
        self.spawned: list[ServerSpec] = []
        self.values: list[dict[str, str]] = []  # the ${env:} values each spawn got
        self.spawn_error: OSError | None = None
        self.ignore_term = False
        self.groups: dict[int, dict[int, float]] = {}  # pgid -> other members: pid -> ct
        self.said: list[str] = []
        self.marks: dict[int, str] = {}  # pid -> the spawn mark in its environment

    def seams(self) -> Seams:
        return Seams(
            clock=lambda: self.now,
            wall=lambda: 1.7e9 + self.now,
            spawner=self.spawn,
            signaller=self.signal,
            prober=lambda url: self.health.get(url, "ready"),
            owned=self.owned,
            adopt=lambda pid, ct: self.procs[pid],
            members=self.members,
            say=self.said.append,
            marked=self.marked,
        )

    def marked(self, prefix: str) -> list[tuple[int, float, str]]:
        return [
            (pid, self.procs[pid].create_time, mark)
            for pid, mark in self.marks.items()
            if mark.startswith(prefix) and self.procs[pid].returncode is None
        ]

    def spawn(
        self, spec: ServerSpec, log_path: Path, values: Mapping[str, str], mark: str
    ) -> FakeProc:
        if self.spawn_error is not None:
            raise self.spawn_error
        self.next_pid += 1
        proc = FakeProc(self.next_pid, create_time=self.now, ignores_term=self.ignore_term)
        self.procs[proc.pid] = proc
        self.marks[proc.pid] = mark
        self.spawned.append(spec)
        self.values.append(dict(values))
        return proc

    def members(self, pgid: int) -> dict[int, float]:
        leader = self.procs.get(pgid)
        alive = (
            {} if leader is None or leader.returncode is not None else {pgid: leader.create_time}
        )
        others = {p: ct for p, ct in self.groups.get(pgid, {}).items() if self.owned(p, ct)}
        return {**alive, **others}

    def signal(self, pgid: int, sig: int) -> bool:
        self.signals.append((pgid, sig))
        proc = self.procs.get(pgid)
        if proc is None:
            return False
        if sig == 0:
            return proc.returncode is None or proc.leftover
        if sig == signal.SIGKILL:
            proc.leftover = False
            if proc.returncode is None:
                proc.returncode = -9
            for member in self.groups.get(pgid, {}):
                if member in self.procs and self.procs[member].returncode is None:
                    self.procs[member].returncode = -9
        elif sig == signal.SIGTERM and not proc.ignores_term and proc.returncode is None:
            proc.returncode = -15
        return True

    def owned(self, pid: int | None, create_time: float | None) -> bool:
        proc = self.procs.get(pid or -1)
        return proc is not None and proc.returncode is None and proc.create_time == create_time

    def advance(self, seconds: float) -> None:
        self.now += seconds


def spec(name: str = "s", restart: str = "on-failure", **fields: object) -> ServerSpec:
    values: dict[str, object] = {
        "name": name,
        "backend": "llamacpp",
        "argv": ("llama-server", "-m", "/m.gguf"),
        "host": "127.0.0.1",
        "port": 8081,
        "health_url": f"http://127.0.0.1:8081/{name}/health",
        "model_path": "/m.gguf",
        "restart": restart,
        **fields,
    }
    return ServerSpec(**values)  # type: ignore[arg-type]


def put(state_dir: Path, server: ServerSpec, **fields: object) -> ServerRecord:
    """Request ``server`` as Runtime does: a new generation of its record."""
    with locked_state(state_dir) as state:
        current = state.servers.get(server.name)
        generation = (current.generation if current else 0) + 1
        record = ServerRecord(spec=server, generation=generation, **fields)  # type: ignore[arg-type]
        state.servers[server.name] = record
    return record


def request_stop(state_dir: Path, name: str, timeout: float = 10.0) -> None:
    with locked_state(state_dir) as state:
        rec = state.servers[name]
        state.servers[name] = replace(
            rec, desired="stopped", generation=rec.generation + 1, stop_timeout=timeout
        )


def saved(state_dir: Path, name: str = "s") -> ServerRecord:
    return read_state(state_dir).servers[name]


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def sup(tmp_path: Path, world: World) -> Supervisor:
    return Supervisor(tmp_path, world.seams())


def boot(sup: Supervisor) -> None:
    """Load state.json, spawn what it asks for, and probe it once."""
    sup.load()
    sup.tick()
    sup.tick()


def crash(world: World, sup: Supervisor, code: int = 1) -> None:
    proc = sup.slots["s"].proc
    assert isinstance(proc, FakeProc)
    proc.returncode = code
    sup.tick()


def test_describe_exit() -> None:
    assert describe_exit(0) == "exit code 0"
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(-200) == "killed by signal 200"
    assert describe_exit(None) == describe_exit(UNKNOWN_EXIT) == "exit status unknown"


def test_starts_a_requested_server_and_reports_ready(tmp_path, world, sup) -> None:
    put(tmp_path, spec())
    sup.load()
    assert saved(tmp_path).state == "starting"
    sup.tick()
    assert [s.name for s in world.spawned] == ["s"]
    assert saved(tmp_path).state == "starting"
    sup.tick()
    assert saved(tmp_path).pid == 101 and saved(tmp_path).state == "ready"
    record = saved(tmp_path)
    assert (record.pid_generation, record.create_time) == (1, 1000.0)
    assert record.ready_at == pytest.approx(1.7e9 + 1000.0)
    assert "ready at http://127.0.0.1:8081" in logs.tail(logs.log_path(tmp_path, "s"))


def test_loading_server_stays_starting_until_ready(tmp_path, world, sup) -> None:
    world.health[spec().health_url] = "loading"
    put(tmp_path, spec())
    sup.load()
    sup.tick()
    assert saved(tmp_path).state == "starting"
    # Polls as often as a bare client would while loading (each poll adds latency) ...
    assert sup.tick() == pytest.approx(PROBE_STARTING) and PROBE_STARTING <= 0.01
    world.advance(6)
    sup.tick()
    # ... and less often after a few seconds, but still well within a second.
    assert sup._next_due(world.now) == pytest.approx(PROBE_SLOW_START) and PROBE_SLOW_START <= 0.1
    world.health.clear()
    world.advance(PROBE_SLOW_START)
    sup.tick()
    assert saved(tmp_path).state == "ready"


def test_not_ready_in_time_is_unhealthy_until_it_answers(tmp_path, world, sup) -> None:
    world.health[spec().health_url] = "down"
    put(tmp_path, spec(ready_timeout=10.0))
    sup.load()
    sup.tick()
    world.advance(10.5)
    sup.tick()
    record = saved(tmp_path)
    assert record.state == "unhealthy" and "not ready after 10s (down)" in record.message
    world.health.clear()
    world.advance(1)
    sup.tick()
    assert saved(tmp_path).state == "ready"


def test_ready_server_turns_unhealthy_after_three_failed_probes(tmp_path, world, sup) -> None:
    put(tmp_path, spec())
    boot(sup)
    world.health[spec().health_url] = "loading"
    for _ in range(2):
        world.advance(2.0)
        sup.tick()
        assert saved(tmp_path).state == "ready"
    world.advance(0.5)
    sup.tick()
    assert saved(tmp_path).state == "unhealthy"
    assert saved(tmp_path).message == "readiness check says loading"


def test_crash_restarts_with_doubling_backoff(tmp_path, world, sup) -> None:
    put(tmp_path, spec())
    boot(sup)
    for n, delay in enumerate((0.5, 1.0, 2.0, 4.0), start=1):
        crash(world, sup)
        record = saved(tmp_path)
        assert record.state == "starting" and record.restarts == n and record.last_exit == 1
        assert record.pid is None and f"restarting in {delay:g}s" in record.message
        world.advance(delay - 0.01)
        sup.tick()
        assert len(world.spawned) == n  # not yet
        world.advance(0.01)
        sup.tick()
        assert len(world.spawned) == n + 1
    sup.tick()
    assert saved(tmp_path).state == "ready"


def test_backoff_is_capped_at_30s(tmp_path, world, sup) -> None:
    put(tmp_path, spec())
    sup.load()
    sup.tick()
    slot = sup.slots["s"]
    slot.failures = 10
    crash(world, sup)
    assert slot.next_start == pytest.approx(world.now + 30.0)


def test_crash_loop_stops_restarting_and_reports(tmp_path, world, sup) -> None:
    put(tmp_path, spec())
    sup.load()
    sup.tick()
    log = logs.log_path(tmp_path, "s")
    for _ in range(5):
        crash(world, sup, 2)
        world.advance(sup.slots["s"].next_start - world.now)
        sup.tick()
    with open(log, "a") as f:
        f.write("error: model file is corrupt (--api-key sk-secret-in-argv)\n")
    crash(world, sup, 2)
    record = saved(tmp_path)
    assert record.state == "crashloop" and record.restarts == 5 and record.last_exit == 2
    assert record.message == (f"crash loop: 5 restarts within 60s, last exit code 2; see {log}")
    # The log's lines (a server may print its secrets) never reach state.json.
    assert "sk-secret-in-argv" not in (tmp_path / "state.json").read_text()
    world.advance(120)
    sup.tick()
    assert len(world.spawned) == 6 and sup.idle()


def test_crashes_far_apart_are_not_a_loop(tmp_path, world, sup) -> None:
    put(tmp_path, spec())
    boot(sup)
    for _ in range(8):
        world.advance(20)  # each run was ready for 20 s: not long enough to reset backoff
        crash(world, sup)
        world.advance(sup.slots["s"].next_start - world.now)
        sup.tick()
        sup.tick()
    assert saved(tmp_path).state == "ready" and saved(tmp_path).restarts == 8


def test_backoff_resets_after_60s_ready(tmp_path, world, sup) -> None:
    put(tmp_path, spec())
    boot(sup)
    crash(world, sup)
    world.advance(0.5)
    sup.tick()
    crash(world, sup)
    assert sup.slots["s"].failures == 2
    world.advance(1.0)
    sup.tick()  # restarted
    sup.tick()  # ... and ready again
    world.advance(61)
    crash(world, sup)
    assert sup.slots["s"].failures == 1
    assert "restarting in 0.5s" in saved(tmp_path).message


@pytest.mark.parametrize(
    "policy, code, state",
    [
        ("on-failure", 0, "exited"),
        ("on-failure", 1, "starting"),
        ("on-failure", -9, "starting"),
        ("never", 1, "exited"),
        ("never", 0, "exited"),
        ("always", 0, "starting"),
        ("always", 1, "starting"),
    ],
)
def test_restart_policy(tmp_path, world, sup, policy, code, state) -> None:
    put(tmp_path, spec(restart=policy))
    sup.load()
    sup.tick()
    crash(world, sup, code)
    assert saved(tmp_path).state == state
    assert saved(tmp_path).last_exit == code
    assert sup.idle() is (state == "exited")


def test_spawn_failure_counts_as_a_failed_start(tmp_path, world, sup) -> None:
    world.spawn_error = FileNotFoundError(2, "No such file or directory")
    put(tmp_path, spec(restart="never"))
    sup.load()
    sup.tick()
    record = saved(tmp_path)
    assert record.state == "exited" and record.last_exit == 127
    assert "cannot run llama-server: No such file or directory" in logs.tail(
        logs.log_path(tmp_path, "s")
    )


def test_stop_sends_term_then_kill_after_the_deadline(tmp_path, world, sup) -> None:
    world.ignore_term = True
    put(tmp_path, spec())
    sup.load()
    sup.tick()
    request_stop(tmp_path, "s", timeout=5.0)
    sup.load()
    assert world.signals[-1] == (101, signal.SIGTERM)
    assert sup.slots["s"].state == "stopping"
    assert saved(tmp_path).pid == 101  # still on record until it is gone
    world.advance(4.9)
    sup.tick()
    assert (101, signal.SIGKILL) not in world.signals
    world.advance(0.2)
    sup.tick()
    assert (101, signal.SIGKILL) in world.signals
    sup.tick()
    record = saved(tmp_path)
    assert record.state == "stopped" and record.pid is None and record.desired == "stopped"
    assert sup.idle()
    assert "did not stop in time: SIGKILL" in logs.tail(logs.log_path(tmp_path, "s"))


def test_leftover_group_members_are_killed(tmp_path, world, sup) -> None:
    put(tmp_path, spec())
    sup.load()
    sup.tick()
    world.procs[555] = FakeProc(555, create_time=1000.2)  # the server forked a helper
    world.groups[101] = {555: 1000.2}
    world.advance(1.0)
    sup.tick()  # the census records it (pid + create time) while the leader lives
    crash(world, sup)
    assert world.signals[-1] == (101, signal.SIGKILL)
    assert world.procs[555].returncode == -9


def test_a_reused_process_group_id_is_never_signalled(tmp_path, world, sup) -> None:
    put(tmp_path, spec())
    sup.load()
    sup.tick()
    world.procs[555] = FakeProc(555, create_time=1000.2)
    world.groups[101] = {555: 1000.2}
    world.advance(1.0)
    sup.tick()
    # The helper ends, then the leader: the group id is free, and an unrelated process
    # (another user's session, say) now leads a group with the same id.
    world.procs[555].returncode = 0
    world.procs[555] = FakeProc(555, create_time=1234.0)  # even the helper's pid is reused
    world.procs[101].leftover = True  # killpg(101, 0) would succeed: the id is in use
    crash(world, sup)
    assert all(sig != signal.SIGKILL for _, sig in world.signals)
    assert world.procs[555].returncode is None


def test_new_generation_replaces_the_running_process(tmp_path, world, sup) -> None:
    put(tmp_path, spec())
    boot(sup)
    put(
        tmp_path,
        spec(argv=("llama-server", "-m", "/other.gguf")),
        pid=101,
        create_time=1000.0,
        pid_generation=1,
    )
    sup.load()
    assert world.signals == [(101, signal.SIGTERM)]
    assert saved(tmp_path).pid == 101  # the old process, until it is gone
    sup.tick()  # exit seen: the new generation starts at once
    sup.tick()
    assert world.spawned[-1].argv[-1] == "/other.gguf"
    record = saved(tmp_path)
    assert (record.generation, record.pid_generation, record.pid) == (2, 2, 102)


def test_removed_record_is_stopped_and_forgotten(tmp_path, world, sup) -> None:
    put(tmp_path, spec())
    sup.load()
    sup.tick()
    with locked_state(tmp_path) as state:
        del state.servers["s"]
    sup.load()
    sup.tick()
    assert world.signals[0] == (101, signal.SIGTERM)
    assert sup.slots == {} and sup.idle()


def test_pid_that_is_no_longer_ours_is_never_signalled(tmp_path, world, sup) -> None:
    put(tmp_path, spec())
    boot(sup)
    world.procs[101] = FakeProc(101, create_time=5.0)  # the pid now belongs to someone else
    request_stop(tmp_path, "s")
    sup.load()
    assert world.signals == []
    assert saved(tmp_path).state == "stopped"


def test_boot_adopts_a_live_process(tmp_path, world, sup) -> None:
    world.procs[77] = FakeProc(77, create_time=500.0)
    put(tmp_path, spec(), state="ready", pid=77, create_time=500.0, pid_generation=1)
    sup.load()
    sup.tick()
    assert world.spawned == [] and saved(tmp_path).pid == 77
    assert sup._next_due(world.now) <= 0.5  # adopted processes are polled
    world.procs[77].returncode = UNKNOWN_EXIT
    sup.tick()
    record = saved(tmp_path)
    assert record.last_exit is None and "exit status unknown" in record.message
    world.advance(0.5)
    sup.tick()
    assert saved(tmp_path).pid == 101


def test_boot_finds_a_dead_process_and_applies_the_policy(tmp_path, world, sup) -> None:
    put(tmp_path, spec(restart="never"), state="ready", pid=77, create_time=500.0, pid_generation=1)
    sup.load()
    assert saved(tmp_path).state == "exited" and world.spawned == []


def test_boot_keeps_crash_loops_as_they_are(tmp_path, world, sup) -> None:
    put(tmp_path, spec(), state="crashloop", last_exit=1, message="crash loop")
    sup.load()
    sup.tick()
    assert world.spawned == [] and saved(tmp_path).state == "crashloop" and sup.idle()


def test_boot_stops_a_process_of_an_older_generation(tmp_path, world, sup) -> None:
    world.procs[77] = FakeProc(77, create_time=500.0)
    put(tmp_path, spec())
    put(tmp_path, spec(argv=("new",)), pid=77, create_time=500.0, pid_generation=1)
    sup.load()
    assert world.signals == [(77, signal.SIGTERM)]
    sup.tick()
    sup.tick()
    assert world.spawned[-1].argv == ("new",) and saved(tmp_path).pid_generation == 2


def test_boot_with_desired_stopped_stops_the_live_process(tmp_path, world, sup) -> None:
    world.procs[77] = FakeProc(77, create_time=500.0)
    put(
        tmp_path,
        spec(),
        desired="stopped",
        state="ready",
        pid=77,
        create_time=500.0,
        pid_generation=1,
    )
    sup.load()
    assert world.signals == [(77, signal.SIGTERM)]
    sup.tick()
    assert saved(tmp_path).state == "stopped" and sup.idle()


def test_request_for_a_stopped_slot_starts_it_again(tmp_path, world, sup) -> None:
    put(tmp_path, spec(restart="never"))
    boot(sup)
    crash(world, sup)
    assert saved(tmp_path).state == "exited"
    put(tmp_path, spec(restart="never"))
    boot(sup)
    assert len(world.spawned) == 2 and saved(tmp_path).state == "ready"


def test_shutdown_stops_every_server_and_records_it(tmp_path, world, sup) -> None:
    put(tmp_path, spec("a"))
    put(tmp_path, spec("b", restart="never"))
    sup.load()
    sup.tick()
    world.procs[102].returncode = 1
    sup.tick()  # b exited: stays on record as exited
    sup.shutdown()
    sup.tick()
    state = read_state(tmp_path).servers
    assert state["a"].state == "stopped" and state["a"].desired == "stopped"
    assert state["b"].state == "exited"
    assert sup.idle()


def test_logs_are_rotated_when_too_big(tmp_path, world, sup) -> None:
    put(tmp_path, spec(log_max_size=100))
    boot(sup)
    log = logs.log_path(tmp_path, "s")
    log.write_text("x" * 500)
    world.advance(2.5)
    sup.tick()
    assert log.stat().st_size == 0
    assert (log.parent / "s.log.1").read_text() == "x" * 500


# --- ${env:} values: only those the requesting command handed over ----------------------


def secret_spec(**fields: object) -> ServerSpec:
    return spec(env={"HF_TOKEN": "${env:SERVER_TOKEN}"}, **fields)


def test_a_request_starts_with_the_values_its_command_handed_over(tmp_path, world, sup) -> None:
    put(tmp_path, secret_spec(), handoff="t1")
    sup.load()
    sup.tick()
    assert world.spawned == []  # it waits for the values instead of reading its own env
    assert saved(tmp_path).state == "starting"
    sup.receive("t1", {"SERVER_TOKEN": "sk-1"})
    sup.tick()
    assert world.values == [{"SERVER_TOKEN": "sk-1"}]
    crash(world, sup)
    world.advance(0.5)
    sup.tick()  # the restart uses exactly the same values
    assert world.values == [{"SERVER_TOKEN": "sk-1"}] * 2
    assert "sk-1" not in (tmp_path / "state.json").read_text()


def test_a_restart_without_the_values_fails_loudly(tmp_path, world, sup, monkeypatch) -> None:
    # A supervisor respawned (by `batuta status`, say) finds the server running and
    # adopts it; it never got the values, and must not take them from its own env.
    monkeypatch.setenv("SERVER_TOKEN", "from-the-supervisor's-own-environment")
    world.procs[77] = FakeProc(77, create_time=500.0)
    put(
        tmp_path, secret_spec(), handoff="t1", state="ready", pid=77, create_time=500.0,
        pid_generation=1,
    )  # fmt: skip
    sup.load()
    sup.tick()
    world.procs[77].returncode = UNKNOWN_EXIT
    sup.tick()
    world.advance(0.5)
    sup.tick()
    assert world.spawned == []
    record = saved(tmp_path)
    assert record.state == "failed" and record.pid is None and sup.idle()
    assert "SERVER_TOKEN" in record.message and "batuta apply" in record.message
    assert "own-environment" not in (tmp_path / "state.json").read_text()
    assert any("SERVER_TOKEN" in line for line in world.said)
    assert "needs the value of SERVER_TOKEN" in logs.tail(logs.log_path(tmp_path, "s"))


def test_a_request_whose_values_never_come_fails(tmp_path, world, sup) -> None:
    put(tmp_path, secret_spec(), handoff="t1")
    sup.load()
    sup.tick()
    assert not sup.idle()  # waiting is work: the supervisor stays
    world.advance(30.0)
    sup.tick()
    assert world.spawned == [] and saved(tmp_path).state == "failed"


def test_values_lacking_a_referenced_variable_fail(tmp_path, world, sup) -> None:
    put(tmp_path, secret_spec(argv=("srv", "--key=${env:API_KEY}")), handoff="t1")
    sup.receive("t1", {"SERVER_TOKEN": "sk-1"})
    sup.load()
    sup.tick()
    assert world.spawned == []
    record = saved(tmp_path)
    assert record.state == "failed" and "API_KEY is set" in record.message


def test_a_record_without_a_handoff_never_uses_the_supervisors_env(
    tmp_path, world, sup, monkeypatch
) -> None:
    monkeypatch.setenv("SERVER_TOKEN", "sk-own")
    put(tmp_path, secret_spec())
    sup.load()
    sup.tick()
    assert world.spawned == [] and saved(tmp_path).state == "failed"


def test_values_of_a_forgotten_request_are_dropped(tmp_path, world, sup) -> None:
    put(tmp_path, secret_spec(), handoff="t1")
    sup.receive("t1", {"SERVER_TOKEN": "sk-1"})
    boot(sup)
    put(tmp_path, secret_spec(), handoff="t2")  # a new request, from another shell
    sup.receive("t2", {"SERVER_TOKEN": "sk-2"})
    sup.load()
    sup.tick()
    sup.tick()
    assert world.values[-1] == {"SERVER_TOKEN": "sk-2"}
    assert list(sup.env_values._values) == ["t2"]


def test_a_spec_without_references_needs_no_values(tmp_path, world, sup) -> None:
    put(tmp_path, spec(env={"PLAIN": "1"}))
    boot(sup)
    assert world.values == [{}] and saved(tmp_path).state == "ready"


# --- a corrupt state.json, a failing rotation ------------------------------------------


def test_a_corrupt_state_file_keeps_the_last_good_desired_state(tmp_path, world, sup) -> None:
    put(tmp_path, spec())
    boot(sup)
    (tmp_path / "state.json").write_text("{ not json")
    sup.load()
    crash(world, sup)  # ... and keeps supervising: the crash is seen, a restart scheduled
    world.advance(0.5)
    sup.tick()
    assert len(world.spawned) == 2
    assert len([line for line in world.said if "is corrupt" in line]) == 1  # said once
    assert "state.json is unreadable" in logs.tail(logs.log_path(tmp_path, "s"))
    (tmp_path / "state.json").unlink()  # moved away: an empty state, which is readable
    put(tmp_path, spec())
    sup.load()
    assert world.said[-1] == "state.json is readable again"


def test_a_failing_rotation_is_reported_and_retried(tmp_path, world, sup) -> None:
    put(tmp_path, spec(log_max_size=10))
    boot(sup)
    log = logs.log_path(tmp_path, "s")
    log.write_text("x" * 50)
    rotated = log.parent / "s.log.1"
    rotated.unlink(missing_ok=True)  # the start's own lines were rotated already
    rotated.mkdir()  # the copy cannot be written: IsADirectoryError
    world.advance(2.5)
    sup.tick()
    record = saved(tmp_path)
    assert record.state == "ready" and f"cannot rotate {log}" in record.message
    assert any(f"cannot rotate {log}" in line for line in world.said)
    rotated.rmdir()
    world.advance(2.5)
    sup.tick()
    assert rotated.read_text().startswith("x" * 50) and saved(tmp_path).message == ""


def forget_pid(state_dir: Path, name: str = "s") -> None:
    """state.json as it was before the supervisor saved the pid it had just spawned."""
    with locked_state(state_dir) as state:
        rec = state.servers[name]
        assert rec.pid is not None
        state.servers[name] = replace(rec, pid=None, create_time=None, pid_generation=0)


def test_a_server_spawned_by_a_supervisor_that_died_before_saving_is_adopted(
    tmp_path, world, sup
) -> None:
    put(tmp_path, spec())
    sup.load()
    sup.tick()  # spawned pid 101 ...
    forget_pid(tmp_path)  # ... and "died" before saving it
    successor = Supervisor(tmp_path, world.seams())
    successor.load()
    successor.tick()
    record = saved(tmp_path)
    assert record.pid == 101 and len(world.spawned) == 1  # found by its mark, not respawned
    assert any("spawn mark" in line for line in world.said)


def test_an_unrecorded_process_of_an_outdated_generation_is_stopped(tmp_path, world, sup) -> None:
    put(tmp_path, spec())
    sup.load()
    sup.tick()
    forget_pid(tmp_path)
    put(tmp_path, spec(port=9))  # a new spec (generation 2) was asked for meanwhile
    successor = Supervisor(tmp_path, world.seams())
    successor.load()
    assert (101, signal.SIGTERM) in world.signals  # the old generation's process goes


def test_only_the_first_read_of_state_json_looks_for_unrecorded_processes(
    tmp_path, world, sup
) -> None:
    # A record written after that read was written while this supervisor held the lock:
    # no earlier one can have started its server, and scanning every process's
    # environment would only delay its start.
    scans: list[str] = []
    sup.seams.marked = lambda prefix: scans.append(prefix) or world.marked(prefix)
    sup.load()  # nothing recorded yet
    put(tmp_path, spec())
    sup.load()
    sup.tick()
    assert [s.name for s in world.spawned] == ["s"] and scans == []
    put(tmp_path, spec("t", port=8090))  # no pid recorded: a successor looks for it
    Supervisor(tmp_path, sup.seams).load()
    assert len(scans) == 1 and scans[0].endswith("|t|")
