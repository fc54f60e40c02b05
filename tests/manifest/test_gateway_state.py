"""``gateway.state``: a Redis URL without its password, each mistake at its line."""

from __future__ import annotations

import pytest

from batuta.manifest.gateway import parse_state_url
from tests.manifest.helpers import VALID, issues_of, load


def test_a_redis_url_and_its_password_variable_load() -> None:
    text = VALID + "gateway:\n  state: redis://redis.batuta:6380/2\n  state_password_env: RPW\n"
    gateway = load(text).manifest.gateway
    assert gateway.state == "redis://redis.batuta:6380/2"
    assert gateway.state_password_env == "RPW"
    assert parse_state_url(gateway.state) == ("redis", "redis.batuta", 6380, 2)
    assert parse_state_url("rediss://h") == ("rediss", "h", 6379, 0)
    assert load(VALID).manifest.gateway.state is None


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://h:6379/0", "must be a redis:// or rediss:// URL"),
        ("redis://:s3cretpw@h:6379/0", "holds credentials"),
        ("redis://user:s3cretpw@h/0", "gateway.state_password_env"),
        ("redis://h:6379/zero", "the path must be a database number"),
        ("redis://h:99999/0", "is not a URL"),
        ("redis:///0", "names no host"),
    ],
)
def test_bad_urls_name_the_line_and_never_repeat_the_url(url: str, says: str) -> None:
    lines = VALID.count("\n")
    issues = issues_of(VALID + f"gateway:\n  state: '{url}'\n")
    assert [(i.line, i.path) for i in issues] == [(lines + 2, "gateway.state")]
    assert says in issues[0].message
    assert "s3cretpw" not in str(issues[0])


def test_the_password_variable_is_a_name_and_needs_a_state() -> None:
    issues = issues_of(VALID + "gateway:\n  state_password_env: RPW\n")
    assert [i.path for i in issues] == ["gateway.state_password_env"]
    assert "gateway.state does not declare" in issues[0].message
    secret = "sk-" + "a" * 40
    issues = issues_of(VALID + f"gateway:\n  state: redis://h\n  state_password_env: {secret}\n")
    assert [i.path for i in issues] == ["gateway.state_password_env"]
    assert secret not in str(issues[0])
