"""The manifest's ``gateway:`` block and route ``aliases:``: each mistake at its line."""

from __future__ import annotations

import pytest

from batuta.manifest.gateway import parse_listen
from tests.manifest.helpers import VALID, issues_of, load


def test_defaults_and_declared_values() -> None:
    loaded = load(VALID)
    assert loaded.manifest.gateway.listen == "127.0.0.1:8080"
    assert loaded.manifest.routes["default"].aliases == []
    text = VALID.replace("    timeout: 30s\n", "    timeout: 30s\n    aliases: [gpt-4o-mini]\n")
    text += "gateway:\n  listen: '[::1]:9000'\n"
    declared = load(text).manifest
    assert declared.routes["default"].aliases == ["gpt-4o-mini"]
    assert parse_listen(declared.gateway.listen) == ("::1", 9000)


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ("8080", "'8080' is not HOST:PORT (such as 127.0.0.1:8080)"),
        ("localhost:99999", "port 99999 is out of range (1-65535)"),
        ("127.0.0.1:", "'127.0.0.1:' is not HOST:PORT (such as 127.0.0.1:8080)"),
    ],
)
def test_bad_listen_forms_name_the_field(listen: str, message: str) -> None:
    lines = VALID.count("\n")
    issues = issues_of(VALID + f"gateway:\n  listen: '{listen}'\n")
    assert [(i.line, i.path, i.message) for i in issues] == [(lines + 2, "gateway.listen", message)]


def test_listen_must_be_a_string() -> None:
    issues = issues_of(VALID + "gateway:\n  listen: 8080\n")
    assert [i.path for i in issues] == ["gateway.listen"]


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.2", "example.com"])
def test_a_non_loopback_host_needs_keys(host: str) -> None:
    lines = VALID.count("\n")
    (issue,) = issues_of(VALID + f"gateway:\n  listen: {host}:8080\n")
    assert (issue.line, issue.path) == (lines + 2, "gateway.listen")
    assert issue.message.startswith(f"{host!r} is not this machine, and the gateway has no keys")


@pytest.mark.parametrize("host", ["localhost", "127.0.0.2", "[::1]"])
def test_loopback_hosts_are_fine(host: str) -> None:
    assert issues_of(VALID + f"gateway:\n  listen: '{host}:8080'\n") == []


@pytest.mark.parametrize(
    ("aliases", "message"),
    [
        ("[local]", "'local' is already the name of server 'local'"),
        ("[groq]", "'groq' is already the name of endpoint 'groq'"),
        ("[default]", "'default' is already the name of route 'default'"),
        ("[x, x]", "'x' is already the name of an alias of route 'default'"),
    ],
)
def test_an_alias_may_not_collide(aliases: str, message: str) -> None:
    text = VALID.replace("    timeout: 30s\n", f"    timeout: 30s\n    aliases: {aliases}\n")
    line = text.splitlines().index(f"    aliases: {aliases}") + 1
    (issue,) = issues_of(text)
    assert issue.line == line and issue.path.startswith("routes.default.aliases[")
    assert issue.message.startswith(message)


def test_an_alias_of_another_route_collides_too() -> None:
    text = VALID.replace("    timeout: 30s\n", "    timeout: 30s\n    aliases: [fast]\n")
    text += "  other:\n    targets: [local]\n    aliases: [fast]\n"
    (issue,) = issues_of(text)
    assert issue.path == "routes.other.aliases[0]"
    assert issue.message.startswith("'fast' is already the name of an alias of route 'default'")


def test_an_alias_must_be_a_name() -> None:
    text = VALID.replace("    timeout: 30s\n", "    timeout: 30s\n    aliases: ['-bad']\n")
    (issue,) = issues_of(text)
    assert issue.path == "routes.default.aliases[0]"
