"""Provider options: typed per provider, checked with did-you-mean, offered by the schema."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from batuta.catalogue import ALIASES, CATALOGUE
from batuta.manifest.options import BY_PROVIDER, PARAM, options_model, parse_keep_alive
from batuta.manifest.schema import manifest_schema
from batuta.plan import plan_from
from batuta.plan.observe import Observation
from batuta.routing.build import endpoint_target
from batuta.routing.table import RouteEntry, RoutingTable, read_table, write_table
from tests.manifest.helpers import issues_of, load, only_issue

ROOT = Path(__file__).resolve().parents[2]


def endpoint(provider: str, options: str, extra: str = "") -> str:
    """A manifest with one endpoint ``e`` of ``provider`` and the given options block."""
    body = textwrap.indent(textwrap.dedent(options).strip(), " " * 6)
    return (
        "endpoints:\n"
        "  e:\n"
        f"    provider: {provider}\n"
        "    model: m\n"
        "    api_key_env: KEY\n"
        f"{extra}"
        "    options:\n"
        f"{body}\n"
        "routes:\n"
        "  r: {targets: [e]}\n"
    )


URL = "    base_url: https://example.test\n"

VALID: list[tuple[str, str, str, dict[str, Any]]] = [
    (
        "azure-openai",
        """
        resource: my-resource
        deployment: gpt4o-prod
        api_version: 2024-10-21
        auth: entra
        token_env: AZURE_TOKEN
        param.top_k: 40
        """,
        "",
        {
            "resource": "my-resource",
            "deployment": "gpt4o-prod",
            "api_version": "2024-10-21",
            "auth": "entra",
            "token_env": "AZURE_TOKEN",
            "param.top_k": 40,
        },
    ),
    (
        "bedrock",
        """
        region: eu-west-1
        auth: sigv4
        secret_key_env: AWS_SECRET
        session_token_env: AWS_SESSION
        param.top_k: 40
        """,
        "",
        {
            "region": "eu-west-1",
            "auth": "sigv4",
            "secret_key_env": "AWS_SECRET",
            "session_token_env": "AWS_SESSION",
            "param.top_k": 40,
        },
    ),
    (
        "vertex",
        "{project: acme, location: europe-west4, token_env: VTOKEN}",
        "",
        {"project": "acme", "location": "europe-west4", "token_env": "VTOKEN"},
    ),
    ("gemini", "{api: vertex, param.topK: 40}", "", {"api": "vertex", "param.topK": 40}),
    (
        "replicate",
        """
        deployment: acme/llama
        max_tokens_field: max_new_tokens
        wait: 30s
        poll_interval: 250ms
        timeout: 10m
        param.stop: ["a", "b"]
        """,
        "",
        {
            "deployment": "acme/llama",
            "max_tokens_field": "max_new_tokens",
            "wait": 30.0,
            "poll_interval": 0.25,
            "timeout": 600.0,
            "param.stop": ["a", "b"],
        },
    ),
    (
        "hf-endpoints",
        "{engine: tgi, health_path: /ready, param.decoder_input_details: true}",
        URL,
        {"engine": "tgi", "health_path": "/ready", "param.decoder_input_details": True},
    ),
    (
        "anthropic",
        "{anthropic_version: 2023-06-01, anthropic_beta: prompt-caching-2024-07-31}",
        "",
        {"anthropic_version": "2023-06-01", "anthropic_beta": "prompt-caching-2024-07-31"},
    ),
    (
        "openai",
        "{organization: org-1, project: proj-1, api: completions, param.logprobs: 2}",
        "",
        {"organization": "org-1", "project": "proj-1", "api": "completions", "param.logprobs": 2},
    ),
    (
        "modal",
        "{proxy_key_env: MODAL_ID, proxy_secret_env: MODAL_SECRET, param.temperature: 0.5}",
        URL,
        {"proxy_key_env": "MODAL_ID", "proxy_secret_env": "MODAL_SECRET", "param.temperature": 0.5},
    ),
    (
        "llamacpp",
        "{chat_template: '{{ messages }}', bos_token: <s>, add_bos_token: true, health_path: /health}",
        URL,
        {
            "chat_template": "{{ messages }}",
            "bos_token": "<s>",
            "add_bos_token": True,
            "health_path": "/health",
        },
    ),
    (
        "ollama",
        "{keep_alive: 10m, param.num_ctx: 8192}",
        URL,
        {"keep_alive": 600, "param.num_ctx": 8192},
    ),
    (
        "tgi",
        "{api: messages, auth_header: x-api-key}",
        URL,
        {"api": "messages", "auth_header": "x-api-key"},
    ),
    (
        "realizar",
        "{openai_api: false, strategy: top_k, model_id: phi-2}",
        URL,
        {"openai_api": False, "strategy": "top_k", "model_id": "phi-2"},
    ),
]


@pytest.mark.parametrize(
    ("provider", "options", "extra", "expected"), VALID, ids=[v[0] for v in VALID]
)
def test_valid_options_load_typed(
    provider: str, options: str, extra: str, expected: dict[str, Any]
) -> None:
    loaded = load(endpoint(provider, options, extra))
    got = loaded.manifest.endpoints["e"].options
    assert got == expected
    # Types, not only equal values: 1 == True and 600 == 600.0 would hide a wrong one.
    assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in expected.items()}
    assert loaded.warnings == ()


def test_every_provider_has_an_options_model() -> None:
    assert set(BY_PROVIDER) == set(CATALOGUE)
    for alias, key in ALIASES.items():
        assert options_model(alias.upper()) is BY_PROVIDER[key]
    assert options_model("no-such-provider") is None


@pytest.mark.parametrize(
    ("provider", "options", "line", "words"),
    [
        ("azure-openai", "{resorce: r}", 7, "unknown key 'resorce' (did you mean 'resource'?)"),
        ("bedrock", "regin: us-east-1", 7, "unknown key 'regin' (did you mean 'region'?)"),
        ("replicate", "poll_intervall: 1s", 7, "(did you mean 'poll_interval'?)"),
        ("vertex", "locaton: global", 7, "(did you mean 'location'?)"),
        ("openai", "organisation: org-1", 7, "(did you mean 'organization'?)"),
        # Written in capitals the editor's schema does not know the provider: the loader does.
        ("Azure", "{resorce: r}", 7, "unknown key 'resorce' (did you mean 'resource'?)"),
    ],
)
def test_unknown_option_names_its_line_and_a_suggestion(
    provider: str, options: str, line: int, words: str
) -> None:
    issue = only_issue(endpoint(provider, options))
    assert (issue.file, issue.line) == ("batuta.yaml", line)
    assert issue.path.startswith("endpoints.e.options.")
    assert words in issue.message
    assert "param.<field>" in issue.message  # listed among the valid keys


def test_an_option_of_another_provider_is_unknown_here() -> None:
    issue = only_issue(endpoint("bedrock", "{resource: r, region: us-east-1}"))
    assert issue.path == "endpoints.e.options.resource" and "unknown key" in issue.message


def test_params_is_not_an_option() -> None:
    issue = only_issue(endpoint("openai", "params: {top_k: 4}"))
    assert issue.path == "endpoints.e.options.params" and "unknown key" in issue.message


@pytest.mark.parametrize(
    ("provider", "options", "field", "words"),
    [
        ("azure-openai", "{resource: r, api_version: 2024}", "api_version", "expected a string"),
        ("replicate", "wait: [1]", "wait", "expected a number or a string, got a list"),
        ("replicate", "wait: 90s", "wait", "between 1s and 60s"),
        ("replicate", "timeout: soon", "timeout", "is not a duration"),
        ("llamacpp", "add_bos_token: 3", "add_bos_token", "true | false"),
        ("hf-endpoints", "engine: vlm", "engine", "use openai | tgi"),
        ("azure-openai", "{resource: r, auth: entr}", "auth", "(did you mean 'entra'?)"),
        ("bedrock", "region: US East", "region", "'US East' is not an AWS region"),
        ("ollama", "keep_alive: forever", "keep_alive", "is not a keep_alive; use e.g. 10m"),
        ("tgi", "health_path: health", "health_path", "must be a path starting with /"),
        ("replicate", "deployment: llama", "deployment", "must be owner/name"),
        ("azure-openai", "resource: https://r.openai.azure.com", "resource", "not its URL"),
        # A mixed-case provider is checked by the models alone: still at the option's line.
        ("Replicate", "wait: 90s", "wait", "between 1s and 60s"),
    ],
)
def test_a_wrong_type_names_the_field(provider: str, options: str, field: str, words: str) -> None:
    extra = URL if provider in ("llamacpp", "hf-endpoints", "ollama", "tgi") else ""
    issue = only_issue(endpoint(provider, options, extra))
    assert issue.path == f"endpoints.e.options.{field}"
    assert issue.line == 7 + extra.count("\n")
    assert words in issue.message


def test_an_env_name_option_holding_a_key_is_refused_without_showing_it() -> None:
    key = "sk-" + "a1" * 20
    issue = only_issue(endpoint("azure-openai", f"{{resource: r, token_env: {key}}}"))
    assert issue.path == "endpoints.e.options.token_env"
    assert "looks like an API key" in issue.message and key not in issue.message


def test_string_forms_still_load_with_a_deprecation_note() -> None:
    text = endpoint(
        "llamacpp",
        """
        add_bos_token: "true"
        param.top_k: "40"
        param.stop: '["a"]'
        param.name: some text
        api: completions
        """,
        URL,
    )
    loaded = load(text)
    assert loaded.manifest.endpoints["e"].options == {
        "add_bos_token": True,
        "param.top_k": 40,
        "param.stop": ["a"],
        "param.name": "some text",
        "api": "completions",
    }
    assert [str(w) for w in loaded.warnings] == [
        'batuta.yaml:8:22: endpoints.e.options.add_bos_token: "true" is a string;'
        " write true (strings are deprecated)",
        'batuta.yaml:9:20: endpoints.e.options.param.top_k: "40" is a string;'
        " write 40 (strings are deprecated)",
        'batuta.yaml:10:19: endpoints.e.options.param.stop: "[\\"a\\"]" is a string;'
        ' write ["a"] (strings are deprecated)',
    ]


def test_a_deprecated_string_from_the_environment_is_not_shown() -> None:
    text = endpoint("openai", 'param.seed: "${env:SEED}"')
    loaded = load(text, env={"SEED": "12345"})
    assert loaded.manifest.endpoints["e"].options == {"param.seed": 12345}
    (warning,) = loaded.warnings
    assert "12345" not in str(warning)
    assert warning.message == "is a string; write ${env:SEED} unquoted (strings are deprecated)"


def test_validate_and_plan_show_the_deprecation(tmp_path: Path, capsys) -> None:
    from batuta.cli.main import main

    path = tmp_path / "batuta.yaml"
    path.write_text(endpoint("openai", 'param.top_k: "4"'))
    assert main(["validate", "-f", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "valid" in out
    assert f'warning: {path}:7:20: endpoints.e.options.param.top_k: "4" is a string' in err
    loaded = load(path.read_text())
    observation = Observation(statuses={}, health={}, table=None, fingerprint="f")
    (note,) = plan_from(loaded, observation).notes
    assert note.startswith("deprecated: batuta.yaml:7:20: endpoints.e.options.param.top_k:")


@pytest.mark.parametrize(
    ("value", "seconds"), [("10m", 600), (30, 30), ("0", 0), (-1, -1), ("-1", -1), ("-5m", -1)]
)
def test_keep_alive(value: object, seconds: int) -> None:
    assert parse_keep_alive(value) == seconds


def test_typed_options_reach_the_routing_table_and_back(tmp_path: Path) -> None:
    loaded = load(endpoint("replicate", "{wait: 5s, param.stop: [x], param.raw: true}"))
    entry = endpoint_target("e", loaded.manifest.endpoints["e"])
    table = RoutingTable("m", {"r": RouteEntry("r", "batch", "standard", "balanced", (entry,))})
    write_table(tmp_path / "routes.json", table)
    text = (tmp_path / "routes.json").read_text()
    assert '"wait": 5.0' in text and '"param.raw": true' in text  # JSON values, not strings
    (back,) = read_table(tmp_path / "routes.json").routes["r"].targets
    assert back.target().options == {"wait": 5.0, "param.stop": ["x"], "param.raw": True}


# -- the schema editors load --------------------------------------------------------


def _provider_rule(schema: dict[str, Any], provider: str) -> dict[str, Any]:
    for rule in schema["$defs"]["Endpoint"]["allOf"]:
        if provider in rule["if"]["properties"]["provider"]["enum"]:
            ref = rule["then"]["properties"]["options"]["$ref"]
            return dict(schema["$defs"][ref.rsplit("/", 1)[1]])
    raise AssertionError(f"no options rule for {provider}")


def test_the_schema_offers_azure_options() -> None:
    schema = manifest_schema()
    for name in ("azure-openai", "azure", "azure_openai"):
        options = _provider_rule(schema, name)
        assert {"api_version", "resource", "deployment", "auth", "token_env"} <= set(
            options["properties"]
        )
        assert options["additionalProperties"] is False
        assert list(options["patternProperties"]) == [r"^param\..+$"]
    assert "region" in _provider_rule(schema, "bedrock")["properties"]
    assert "region" not in _provider_rule(schema, "azure-openai")["properties"]


def test_the_schema_has_one_rule_per_provider_name() -> None:
    schema = manifest_schema()
    named = [
        name
        for rule in schema["$defs"]["Endpoint"]["allOf"]
        for name in rule["if"]["properties"]["provider"]["enum"]
    ]
    assert sorted(named) == sorted([*CATALOGUE, *ALIASES])


# -- the options are exactly what the adapters read ------------------------------------

_READS = (
    r'text\([^,]*options, "(\w+)"',
    r'flag\([^,]*options, "(\w+)"',
    r'number\([^,]*options, "(\w+)"',
    r'options\.get\("(\w+)"',
    r'"(\w+)" in self\.(?:target\.)?options',
)


def _read_by_adapters() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "batuta" / "backends").glob("*.py"):
        source = path.read_text(encoding="utf-8")
        for pattern in _READS:
            found |= set(re.findall(pattern, source))
        # headers() reads these through loops over (option, header) pairs
        found |= set(re.findall(r'\("(\w+)", "(?:OpenAI|Modal)-[\w-]+"\)', source))
        # replicate reads its durations through _float_option("name", ...)
        found |= set(re.findall(r'_float_option\("(\w+)"', source))
    return found


def test_the_options_models_cover_exactly_what_the_adapters_read() -> None:
    modelled = {
        key for model in set(BY_PROVIDER.values()) for key in model.model_fields if key != "params"
    }
    assert _read_by_adapters() == modelled


def test_docs_list_every_providers_options() -> None:
    docs = (ROOT / "docs" / "providers.md").read_text(encoding="utf-8")
    for model in set(BY_PROVIDER.values()):
        for key in model.model_fields:
            if key != "params":
                assert f"`{key}`" in docs, f"docs/providers.md does not mention {key}"
    assert f"`{PARAM}<field>`" in docs


def test_mixed_case_provider_options_are_still_typed() -> None:
    loaded = load(endpoint("Bedrock", "{region: us-east-1, param.top_k: 4}"))
    assert loaded.manifest.endpoints["e"].options == {"region": "us-east-1", "param.top_k": 4}


def test_unknown_provider_is_reported_once_whatever_its_options() -> None:
    found = issues_of(endpoint("nosuch", "{anything: 1}"))
    assert [i.path for i in found] == ["endpoints.e.provider"]


def test_the_models_on_their_own() -> None:
    from pydantic import ValidationError

    from batuta.manifest.options import OpenAIOptions, option_problems

    assert option_problems("openai", {"api": "chat"}) == []
    assert option_problems("nosuch", {"x": 1}) == option_problems("openai", "x") == []
    assert option_problems("replicate", {"poll_interval": "0s"}) == [
        ("poll_interval", "must be longer than 0s")
    ]
    with pytest.raises(ValidationError):
        OpenAIOptions.model_validate("not a mapping")
    flat = OpenAIOptions.model_validate({"api": "chat", "param.n": 2}).flat()
    assert flat == {"api": "chat", "param.n": 2}


def test_a_bad_option_from_the_environment_is_not_shown() -> None:
    # Mixed case: the provider's options model (not the editor's schema) reports it.
    issue = only_issue(endpoint("Replicate", "wait: ${env:WAIT}"), env={"WAIT": "s3cr3t-ish"})
    assert issue.path == "endpoints.e.options.wait" and "s3cr3t" not in issue.message
    assert issue.message == "invalid value (taken from the environment, not shown)"
