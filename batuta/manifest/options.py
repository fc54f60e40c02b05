"""Each provider's ``endpoints.*.options``: exactly the options its adapter reads, typed.

One pydantic model per wire family (:mod:`batuta.manifest.provider_options`, unknown keys
forbidden, durations in human units, booleans as booleans, built from the field types of
:mod:`batuta.manifest.option_fields`), picked by the endpoint's ``provider``
(:func:`options_model`). This module checks an endpoint's options against that model. The
JSON Schema offers the models through ``if provider is ... then options is ...`` (see
:func:`provider_options_schema`), so an editor completes ``resource:`` under
``provider: azure-openai`` and flags ``resorce:``. ``param.<field>`` keys pass any JSON
value through to the request body.

The endpoint keeps its options as a flat mapping of JSON values (``param.top_k: 40``
included), which the routing table stores as they are and the adapters read through
:mod:`batuta._util.options`.

Strings where a boolean or a JSON value belongs (``add_bos_token: "true"``,
``param.top_k: "40"``) are what options were before they were typed: they still load, for
one release, and :func:`deprecations` names each so validate and plan can warn.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import ValidationError

from batuta._util.fuzzy import did_you_mean
from batuta.catalogue import ALIASES
from batuta.manifest.option_fields import (
    DEPRECATED,
    PARAM,
    Flag,
    ProviderOptions,
    legacy_bool,
    legacy_json,
    parse_keep_alive,
)
from batuta.manifest.provider_options import BY_PROVIDER, OpenAIOptions, options_model


def _model_for(provider: str | None, options: Any) -> type[ProviderOptions] | None:
    """The model to check ``options`` against; None when the provider is unknown or the
    options are not a mapping (both reported on their own)."""
    model = options_model(provider) if isinstance(provider, str) else None
    return model if isinstance(options, Mapping) else None


def typed_options(provider: str | None, options: Any) -> Any:
    """``options`` checked against the provider's model and flattened (see
    :meth:`ProviderOptions.flat`); unchanged for an unknown provider. ValueError names each
    problem (``options.resorce: unknown key ...``)."""
    model = _model_for(provider, options)
    if model is None:
        return options
    try:
        return model.model_validate(options).flat()
    except ValidationError as exc:
        problems = _problems(model, exc)
        raise ValueError("; ".join(f"options.{k}: {m}" for k, m in problems)) from None


def option_problems(provider: str | None, options: Any) -> list[tuple[str, str]]:
    """``(key, message)`` for each option ``provider`` does not take as written; empty
    when they are all fine (or the provider is unknown: that is reported on its own)."""
    model = _model_for(provider, options)
    if model is None:
        return []
    try:
        model.model_validate(options)
    except ValidationError as exc:
        return _problems(model, exc)
    return []


def _problems(model: type[ProviderOptions], exc: ValidationError) -> list[tuple[str, str]]:
    keys = [k for k in model.model_fields if k != "params"]
    found: list[tuple[str, str]] = []
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        name = str(loc[0]).strip() if loc else ""
        if error["type"] == "extra_forbidden":
            hint = did_you_mean(name, keys)
            listed = ", ".join([*keys, "param.<field>"])
            found.append((name, f"unknown key {name!r}{hint}; valid keys: {listed}"))
        else:
            found.append((name, str(error["msg"]).removeprefix("Value error, ")))
    return found


def deprecations(provider: str | None, options: Any) -> Iterator[tuple[str, str]]:
    """``(key, message)`` for each option written as a string where its type is not one:
    a boolean (``"true"``) or a ``param.*`` value that reads as JSON (``"40"``)."""
    model = _model_for(provider, options)
    if model is None:
        return
    flags = {k for k, f in model.model_fields.items() if Flag in _args(f.annotation)}
    for key, value in options.items():
        if not isinstance(key, str) or not isinstance(value, str):
            continue
        typed: object = value
        if key in flags:
            typed = legacy_bool(value)
        elif key.startswith(PARAM) and len(key) > len(PARAM):
            typed = legacy_json(value)
        if not isinstance(typed, str):
            written = json.dumps(typed, ensure_ascii=False)
            yield key, f"{json.dumps(value)} is a string; write {written} {DEPRECATED}"


def _args(annotation: Any) -> tuple[Any, ...]:
    return (annotation, *getattr(annotation, "__args__", ()))


def provider_options_schema(ref: str = "#/$defs/{model}") -> tuple[dict[str, Any], list[Any]]:
    """The options models' JSON Schemas (``$defs`` entries) and, for the endpoint schema's
    ``allOf``, one ``if provider is one of ... then options is ...`` per model."""
    names: dict[type[ProviderOptions], list[str]] = {}
    for key, model in BY_PROVIDER.items():
        names.setdefault(model, []).append(key)
    for alias, key in ALIASES.items():
        names[BY_PROVIDER[key]].append(alias)
    defs: dict[str, Any] = {}
    rules: list[Any] = []
    for model, providers in names.items():
        defs[model.__name__] = model.model_json_schema(ref_template=ref)
        rules.append(
            {
                "if": {
                    "properties": {"provider": {"enum": sorted(providers)}},
                    "required": ["provider"],
                },
                "then": {"properties": {"options": {"$ref": ref.format(model=model.__name__)}}},
            }
        )
    return defs, rules


__all__ = [
    "BY_PROVIDER",
    "PARAM",
    "OpenAIOptions",
    "ProviderOptions",
    "deprecations",
    "option_problems",
    "options_model",
    "parse_keep_alive",
    "provider_options_schema",
    "typed_options",
]
