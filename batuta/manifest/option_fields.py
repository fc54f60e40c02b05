"""The field types and base model every provider's options share.

``param.<field>`` keys (any JSON value, passed through to the request body), booleans,
durations such as Ollama's ``keep_alive``, variable names and paths, with the patterns the
schema explains when a value misses one (:data:`PATTERN_HINTS`). Also the deprecated
string forms they still read (``add_bos_token: "true"``, ``param.top_k: "40"``): what
options were before they were typed. Separate from the per-provider models in
:mod:`batuta.manifest.provider_options`, which are built from these.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from batuta._util.options import OptionValue
from batuta.manifest.units import parse_duration

PARAM = "param."
PARAM_PATTERN = r"^param\..+$"
_ENV = r"^[A-Za-z_][A-Za-z0-9_]*$"
KEEP_ALIVE_PATTERN = r"^\s*-?\d+(\.\d+)?\s*(ms|s|m|h)?\s*$"
REGION_PATTERN = r"^[a-z]{2}(-[a-z]+)+-\d+$"
PATH_PATTERN = r"^/"
OWNER_NAME_PATTERN = r"^[^/\s]+/[^/\s]+$"
RESOURCE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9-]*$"
# What the schema says when an option misses its pattern (see schema._pattern_message).
PATTERN_HINTS = {
    KEEP_ALIVE_PATTERN: "is not a keep_alive; use e.g. 10m, 30s, 0 (unload) or -1 (keep)",
    REGION_PATTERN: "is not an AWS region; use e.g. us-east-1",
    PATH_PATTERN: "must be a path starting with /, e.g. /health",
    OWNER_NAME_PATTERN: "must be owner/name",
    RESOURCE_PATTERN: "must be the resource name only (letters, digits, -), not its URL",
}
DEPRECATED = "(strings are deprecated)"


def legacy_bool(value: object) -> object:
    """``"true"``/``"false"`` as the boolean they stand for; anything else as it is."""
    # Before options were typed every value was a string: "true" / "false" still load.
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return value


Flag = Annotated[
    bool,
    BeforeValidator(legacy_bool),
    WithJsonSchema(
        {"anyOf": [{"type": "boolean"}, {"enum": ["true", "false"], "deprecated": True}]}
    ),
]


def parse_keep_alive(value: object) -> int:
    """Ollama's ``keep_alive``: a duration (``10m``), seconds, ``0`` (unload at once) or any
    negative value (keep loaded) → whole seconds, -1 for "keep"."""
    if isinstance(value, str) and re.match(KEEP_ALIVE_PATTERN, value) and "-" in value:
        return -1
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        return -1
    return math.ceil(parse_duration(value))


KeepAlive = Annotated[
    int,
    BeforeValidator(parse_keep_alive),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer"},
                {"type": "string", "pattern": KEEP_ALIVE_PATTERN},
            ],
            "description": "how long the model stays loaded: 10m, seconds, 0 unloads at"
            " once, -1 keeps it loaded",
        }
    ),
]
EnvName = Annotated[str, Field(pattern=_ENV)]
Path = Annotated[str, Field(pattern=PATH_PATTERN)]


class ProviderOptions(BaseModel):
    """What every adapter reads: ``param.<field>`` extras for the request body."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "patternProperties": {
                PARAM_PATTERN: {
                    "description": "an extra request field, sent as written"
                    ' (param.top_k: 40 sends "top_k": 40)'
                }
            }
        },
    )

    params: SkipJsonSchema[dict[str, JsonValue]] = Field(default_factory=dict, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _split_params(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        params: dict[str, Any] = {}
        rest: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(key, str) and key.startswith(PARAM) and len(key) > len(PARAM):
                params[key[len(PARAM) :]] = legacy_json(value)
            elif key == "params":  # the field param.* keys fill, not an option: unknown
                rest["params "] = value
            else:
                rest[key] = value
        return {**rest, "params": params}

    def flat(self) -> dict[str, OptionValue]:
        """The options as the endpoint and the routing table keep them: only those written,
        typed, with ``param.<field>`` keys as written."""
        out: dict[str, OptionValue] = self.model_dump(exclude_unset=True, exclude={"params"})
        out.update({PARAM + k: v for k, v in self.params.items()})
        return out


def legacy_json(value: object) -> object:
    """A string that reads as JSON as that JSON value; anything else as it is."""
    # param.* values were strings read as JSON when they parse ("40" sent 40): still so.
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
