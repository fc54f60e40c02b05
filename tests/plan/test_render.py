"""Rendering plans and status for people."""

from __future__ import annotations

import click
import pytest

from batuta.errors import StateError
from batuta.plan.diff import AttrChange, ModelPull, Plan, RouteChange, ServerChange
from batuta.plan.render import (
    NO_CHANGES,
    plan_from_json,
    plan_json,
    render_plan,
    render_status,
    route_rows,
    server_rows,
    summary,
)
from batuta.routing.table import RouteEntry, RoutingTable, TargetEntry
from tests.plan.test_diff import spec


def _plan() -> Plan:
    return Plan(
        manifest="/m",
        servers=(
            ServerChange("new", "create", desired=spec(port=8105)),
            ServerChange(
                "moved",
                "replace",
                reasons=("config changed",),
                changes=(AttrChange("port", "8101", "8102"),),
                desired=spec(port=8102),
                recorded=spec(),
            ),
            ServerChange(
                "same-port",
                "replace",
                reasons=("crash loop after 5 restarts",),
                desired=spec(),
                recorded=spec(),
                state="crashloop",
            ),
            ServerChange("old", "destroy", recorded=spec(), pid=42, state="ready"),
            ServerChange("kept", "no-op", desired=spec(), recorded=spec(), pid=43, state="ready"),
        ),
        routes=(
            RouteChange("fresh", "create", targets=("new", "groq")),
            RouteChange("tuned", "update", changes=(AttrChange("retries", "1", "3"),)),
            RouteChange("gone", "destroy", targets=()),
            RouteChange("same", "no-op"),
        ),
        pulls=(ModelPull("m", "hf://org/repo/m.gguf", ("new",)),),
    )


def test_plan_text_follows_terraform_conventions() -> None:
    text = click.unstyle(render_plan(_plan()))
    assert text.splitlines() == [
        "batuta will perform the following actions:",
        "",
        "  ↓ model m from hf://org/repo/m.gguf",
        "        for new",
        "",
        "  + server new: llamacpp on 127.0.0.1:8105, model m.gguf",
        "-/+ server moved: replaced",
        "      ~ port: 8101 → 8102",
        "-/+ server same-port: replaced on the same port",
        "        crash loop after 5 restarts",
        "  - server old: stop pid 42",
        "",
        "  + route fresh → new, groq",
        "  ~ route tuned",
        "      ~ retries: 1 → 3",
        "  - route gone → (no targets)",
        "",
        "Plan: 4 to add, 1 to change, 4 to destroy.",
    ]
    assert summary(_plan()) == "Plan: 4 to add, 1 to change, 4 to destroy."


def test_plan_text_is_coloured_for_terminals() -> None:
    styled = render_plan(_plan())
    assert click.style("  +", fg="green", bold=True) in styled
    assert click.style("  -", fg="red", bold=True) in styled
    assert click.style("-/+", fg="magenta", bold=True) in styled
    assert click.style("  ~", fg="yellow", bold=True) in styled


def test_no_changes_with_a_note() -> None:
    plan = Plan(manifest="/m", notes=("server 'a' is running but its health check says down",))
    text = click.unstyle(render_plan(plan))
    assert text.splitlines() == [
        "Note: server 'a' is running but its health check says down",
        NO_CHANGES,
    ]


def test_a_note_before_changes_is_set_apart() -> None:
    plan = Plan(manifest="/m", routes=(RouteChange("r", "create", targets=("a",)),), notes=("n",))
    lines = click.unstyle(render_plan(plan)).splitlines()
    assert lines[:3] == ["Note: n", "", "batuta will perform the following actions:"]


def test_status_rows_name_the_drift() -> None:
    rows = {r.name: r for r in server_rows(_plan(), {"kept": 2})}
    assert rows["kept"].drift == "in sync" and rows["kept"].restarts == 2
    assert (rows["kept"].state, rows["kept"].pid, rows["kept"].health) == ("ready", 43, "unknown")
    assert rows["new"].drift == "not started" and rows["new"].state == "absent"
    assert rows["moved"].drift == "config changed" and rows["moved"].port == 8101
    assert rows["same-port"].drift == "crash loop" and rows["same-port"].health == "down"
    assert rows["old"].drift == "not declared"
    dead = Plan(
        manifest="/m",
        servers=(ServerChange("d", "create", desired=spec(), recorded=spec(), state="exited"),),
    )
    (row,) = server_rows(dead)
    assert (row.drift, row.pid, row.health) == ("not running", None, "down")
    assert row.to_json()["drift"] == "not running"


def test_status_screen() -> None:
    table = RoutingTable(
        manifest="/m",
        routes={
            "r": RouteEntry(
                "r",
                "interactive",
                "standard",
                "balanced",
                targets=(
                    TargetEntry("kept", "llamacpp", "openai", "http://x", "m", True),
                    TargetEntry("old", "llamacpp", "openai", "http://y", "m", True),
                    TargetEntry("groq", "groq", "openai", "https://g", "m", False),
                ),
            ),
            "empty": RouteEntry("empty", "interactive", "standard", "balanced", targets=()),
        },
    )
    routes = route_rows(table, {"kept": "ready"}, {"kept", "old"})
    assert routes == [
        ("empty", []),
        ("r", [("kept", "ready"), ("old", "down"), ("groq", "not probed")]),
    ]
    assert route_rows(None, {}, set()) == []
    text = click.unstyle(render_status(server_rows(_plan()), routes, "batuta.yaml"))
    lines = text.splitlines()
    assert lines[0] == "Manifest: batuta.yaml"
    assert lines[2].split() == [
        "SERVER", "BACKEND", "STATE", "HEALTH", "PID", "PORT", "RESTARTS", "DRIFT",
    ]  # fmt: skip
    assert "kept       llamacpp (server)  ready      unknown  43" in text
    assert "  r → kept (ready), old (down), groq (not probed)" in lines
    assert "  empty → (no targets)" in lines
    empty = click.unstyle(render_status([], [], "batuta.yaml"))
    assert "No servers declared or running." in empty


def test_plan_json_round_trip_and_bad_files() -> None:
    plan = Plan(
        manifest="/m",
        servers=(
            ServerChange(
                "a",
                "replace",
                reasons=("config changed",),
                changes=(AttrChange("ctx", "1", "2"),),
                desired=spec(),
                recorded=spec("-c", "1"),
                pid=3,
                state="ready",
                health="ready",
                config_hash=spec().config_hash,
            ),
        ),
        routes=(RouteChange("r", "create", targets=("a",)),),
        pulls=(ModelPull("m", "hf://a/b/c.gguf", ("a",)),),
        fingerprint="f",
        manifest_digest="d",
        state_dir="/s",
        notes=("n",),
    )
    data = plan_json(plan)
    assert data["summary"] == {"add": 2, "change": 0, "destroy": 1}
    assert plan_from_json(data) == plan
    with pytest.raises(StateError, match="plan format 9 is not supported"):
        plan_from_json({**data, "format_version": 9})
    with pytest.raises(StateError, match="not a batuta plan file"):
        plan_from_json({"format_version": 1})
