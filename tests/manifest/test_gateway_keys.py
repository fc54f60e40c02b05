"""``gateway.keys``: each key's variable, routes, budget and rate, each mistake at its line."""

from __future__ import annotations

import pytest

from tests.manifest.helpers import VALID, issues_of, load

KEYS = """\
gateway:
  listen: 0.0.0.0:8080
  keys:
    team-a:
      key_env: TEAM_A_KEY
      routes: [default]
      budget: {daily_usd: 5, per_request_usd: 0.05}
      rate: 60/min
"""


def _line(text: str, fragment: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if fragment in line)


def test_keys_let_the_gateway_listen_beyond_loopback() -> None:
    gateway = load(VALID + KEYS).manifest.gateway
    key = gateway.keys["team-a"]
    assert gateway.listen == "0.0.0.0:8080" and key.key_env == "TEAM_A_KEY"
    assert key.routes == ["default"] and key.rate == "60/min"
    assert key.budget is not None and key.budget.daily_usd == 5
    minimal = load(VALID + "gateway:\n  keys:\n    k: {key_env: K}\n").manifest.gateway
    assert minimal.keys["k"].routes is None and minimal.keys["k"].rate is None


@pytest.mark.parametrize("rate", ["10/s", "1000/h", "60/min", "2.5/s"])
def test_rate_forms(rate: str) -> None:
    assert issues_of(VALID + KEYS.replace("60/min", rate)) == []


@pytest.mark.parametrize(
    ("old", "new", "path", "message"),
    [
        ("60/min", "60 a minute", "gateway.keys.team-a.rate",
         "'60 a minute' is not a rate; use e.g. 60/min, 10/s or 1000/h"),
        ("60/min", "0/min", "gateway.keys.team-a.rate", "'0/min' allows no request at all"),
        ("TEAM_A_KEY", "team-a key", "gateway.keys.team-a.key_env",
         "must be the name of an environment variable"),
        ("TEAM_A_KEY", "sk-proj-abcdefghijklmnopqrstuvwxyz123456", "gateway.keys.team-a.key_env",
         "this looks like an API key itself (not shown)"),
        ("TEAM_A_KEY", "abcdefghijklmnop1234567890qrstuv", "gateway.keys.team-a.key_env",
         "this looks like an API key itself (not shown)"),
        ("[default]", "[defualt]", "gateway.keys.team-a.routes[0]",
         "no route 'defualt' (did you mean 'default'?) (routes: default)"),
        ("[default]", "[]", "gateway.keys.team-a.routes",
         "allows no route: leave routes out to allow them all"),
        ("{daily_usd: 5, per_request_usd: 0.05}", "{}", "gateway.keys.team-a.budget",
         "sets no limit"),
        ("{daily_usd: 5, per_request_usd: 0.05}", "{daily_usd: 1, per_request_usd: 2}",
         "gateway.keys.team-a.budget.per_request_usd", "is larger than daily_usd"),
        ("rate: 60/min", "rates: 60/min", "gateway.keys.team-a.rates", "unknown key 'rates'"),
    ],
)  # fmt: skip
def test_each_mistake_is_named_at_its_line(old: str, new: str, path: str, message: str) -> None:
    text = VALID + KEYS.replace(old, new)
    (issue,) = issues_of(text)
    assert (issue.path, issue.line) == (path, _line(text, new))
    assert issue.message.startswith(message)
    assert "abcdefghijklmnop" not in issue.message


def test_a_route_alias_is_not_a_route_name() -> None:
    text = VALID.replace("    timeout: 30s\n", "    timeout: 30s\n    aliases: [gpt-4o-mini]\n")
    (issue,) = issues_of(text + KEYS.replace("[default]", "[default, gpt-4o-mini]"))
    assert issue.path == "gateway.keys.team-a.routes[1]"
    assert issue.message == "'gpt-4o-mini' is an alias of route 'default': name the route"


def test_two_keys_may_not_share_a_variable() -> None:
    text = VALID + KEYS + "    team-b:\n      key_env: TEAM_A_KEY\n"
    (issue,) = issues_of(text)
    assert (issue.path, issue.line) == ("gateway.keys.team-b.key_env", text.count("\n"))
    assert issue.message.startswith("TEAM_A_KEY is the variable of key 'team-a' too")


def test_a_key_that_fails_is_not_also_reported_as_no_keys() -> None:
    text = VALID + "gateway:\n  listen: 0.0.0.0:8080\n  keys:\n    k: {routes: [default]}\n"
    (issue,) = issues_of(text)
    assert issue.path == "gateway.keys.k.key_env" and "missing required key" in issue.message
