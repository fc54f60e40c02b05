"""``batuta logs --requests`` and ``batuta spend`` over a request log written here, and the
manifest's ``gateway`` settings that decide what the gateway records."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from batuta.cli.main import main
from batuta.gateway.observe import ObserveSettings
from batuta.gateway.requestlog import RequestLog, iso_time, log_path
from batuta.gateway.server import observe_settings
from batuta.manifest import load_manifest


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BATUTA_STATE_DIR", str(tmp_path / ".batuta"))
    return tmp_path / ".batuta"


def record(key: str, route: str, target: str | None, out: int, usd: float, age: float = 0.0,
           **extra: object) -> dict[str, object]:  # fmt: skip
    tried = [{"target": "a", "class": "rate_limit"}] + (
        [{"target": target, "class": "ok"}] if target else []
    )
    return {"time": iso_time(time.time() - age), "key": key, "route": route, "target": target,
            "status": 200 if target else 502, "tried": tried,
            "tokens": {"input": 10, "output": out}, "cost_usd": usd, "ttft_ms": None,
            "total_ms": 12.5, **extra}  # fmt: skip


def write(state: Path, *records: dict[str, object]) -> None:
    log = RequestLog(log_path(state))
    for r in records:
        log.write(r)
    log.close()


def test_spend_sums_by_key_route_and_target_since_a_span(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(
        state,
        record("team-a", "chat", "b", 5, 0.5, age=3 * 86400),  # before --since 24h
        record("team-a", "chat", "b", 7, 0.25),
        record("team-b", "code", "b", 11, 1.0),
        record("-", "code", None, 0, 0.0, error="route 'code': every target failed"),
    )
    assert main(["spend"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split() for line in lines] == [
        ["KEY", "REQUESTS", "IN", "OUT", "USD"],
        ["-", "1", "10", "0", "0.000000"],
        ["team-a", "1", "10", "7", "0.250000"],
        ["team-b", "1", "10", "11", "1.000000"],
        ["total", "3", "30", "18", "1.250000"],
    ]
    assert main(["spend", "--by", "route", "--since", "all", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert rows["chat"] == {"requests": 2, "input": 20, "output": 12, "usd": 0.75}
    assert main(["spend", "--since", "2000-01-01"]) == 0
    assert "total" in capsys.readouterr().out
    assert main(["spend", "--since", "soon"]) == 1
    assert "--since 'soon': give a span such as 30m" in capsys.readouterr().err


def test_spend_and_logs_without_a_log(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["spend"]) == 0
    assert "no request logged since 24h" in capsys.readouterr().out
    assert main(["logs", "--requests"]) == 0
    assert "has logged no request" in capsys.readouterr().err
    assert main(["logs"]) == 2  # neither a server nor --requests
    assert "give a server NAME, or --requests" in capsys.readouterr().err


def test_logs_requests_shows_the_tries_and_the_error(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(state, record("k", "chat", "b", 3, 0.0),
          record("k", "chat", None, 0, 0.0, error="route 'chat': every target failed\n  a: x"))  # fmt: skip
    assert main(["logs", "--requests"]) == 0
    first, second = capsys.readouterr().out.splitlines()
    assert "200  key=k  chat → b  tokens 10/3" in first and "tried a (rate_limit) → b" in first
    assert "502" in second and "chat → -" in second
    assert second.endswith("error: route 'chat': every target failed")  # its first line only


def test_logs_requests_follow_prints_new_records(
    state: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import batuta.gateway.requestlog as requestlog

    write(state, record("old", "chat", "b", 1, 0.0))
    seen = threading.Event()
    follow = requestlog.follow_records

    def until_one(state_dir: Path, **kw: object) -> object:
        for rec in follow(state_dir, poll=0.01, stop=seen.is_set):
            yield rec
            seen.set()

    monkeypatch.setattr(requestlog, "follow_records", until_one)
    writer = threading.Timer(0.3, lambda: write(state, record("new", "chat", "b", 2, 0.0)))
    writer.start()
    try:
        assert main(["logs", "--requests", "--follow", "--json", "-n", "1"]) == 0
    finally:
        writer.join()
    keys = [json.loads(line)["key"] for line in capsys.readouterr().out.splitlines()]
    assert keys == ["old", "new"]


def test_the_manifest_says_what_the_gateway_records(tmp_path: Path) -> None:
    manifest = tmp_path / "batuta.yaml"
    manifest.write_text(
        "version: 1\ngateway:\n  metrics: false\n  log_content: true\n"
        "  request_log_max_size: 1MiB\n  request_log_files: 5\n"
    )
    section = load_manifest(str(manifest)).manifest.gateway
    assert observe_settings(section) == ObserveSettings(
        metrics=False, request_log=True, log_content=True, log_max_size=2**20, log_files=5
    )
    assert observe_settings(None) == ObserveSettings()
    assert (
        ObserveSettings(metrics=False, request_log=False).observer(
            tmp_path, router=lambda: None, table=lambda: None
        )
        is None
    )


def test_spend_reads_the_log_beside_the_manifest_given_with_f(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BATUTA_STATE_DIR", raising=False)
    project = tmp_path / "proj"
    project.mkdir()
    (project / "batuta.yaml").write_text("version: 1\n")
    write(project / ".batuta", record("k", "chat", "b", 4, 0.125))
    assert main(["spend", "-f", str(project / "batuta.yaml"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"]["k"]["usd"] == 0.125
