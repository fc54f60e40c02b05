"""The plan and on-demand servers: a sleeping one is a no-op, a changed one is replaced."""

from __future__ import annotations

import pytest

from batuta.plan.diff import Plan, diff
from batuta.runtime.spec import ServerSpec, ServerStatus
from tests.plan.test_diff import spec

OD = {"start": "on-demand", "idle_timeout": 600.0}


def plan_of(desired: ServerSpec, state: str, recorded: ServerSpec | None = None) -> Plan:
    status = ServerStatus(spec=recorded or desired, state=state)  # type: ignore[arg-type]
    return diff({"a": desired}, {"a": status}, None, None, manifest="/batuta.yaml")


@pytest.mark.parametrize("state", ["idle", "ready", "starting", "stopping"])
def test_sleeping_or_awake_is_a_no_op(state: str) -> None:
    plan = plan_of(spec(**OD), state)
    change = plan.server("a")
    assert change is not None and change.action == "no-op" and not plan.has_changes


def test_idle_timeout_change_is_shown() -> None:
    plan = plan_of(spec(start="on-demand", idle_timeout=30.0), "idle", spec(**OD))
    change = plan.server("a")
    assert change is not None and change.action == "replace"
    assert [str(c) for c in change.changes] == ["idle_timeout: 600s → 30s"]


def test_config_change_while_asleep_is_a_replacement() -> None:
    plan = plan_of(spec("-c", "4096", **OD), "idle", spec("-c", "2048", **OD))
    change = plan.server("a")
    assert change is not None and change.action == "replace"
    assert [str(c) for c in change.changes] == ["ctx: 2048 → 4096"]


@pytest.mark.parametrize(
    ("desired", "recorded", "state", "shown"),
    [
        (spec(), spec(**OD), "idle", "start: on-demand → always"),
        (spec(**OD), spec(), "ready", "start: always → on-demand"),
    ],
)
def test_switching_start_is_a_replacement(
    desired: ServerSpec, recorded: ServerSpec, state: str, shown: str
) -> None:
    change = plan_of(desired, state, recorded).server("a")
    assert change is not None and change.action == "replace"
    assert [str(c) for c in change.changes] == [shown]


def test_an_exited_on_demand_server_is_recorded_again() -> None:
    change = plan_of(spec(**OD), "exited").server("a")
    assert change is not None and change.action == "create"
