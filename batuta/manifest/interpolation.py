"""``${env:VAR}`` in manifest strings: the one place a manifest reads the environment.

``${env:VAR}`` is the variable's value and ``${env:VAR:-default}`` the default when the
variable is unset or empty; ``$${`` is a literal ``${``. An unset variable without a
default, an unknown ``${...}`` or an unterminated ``${`` is a failure, reported at the
value's line. Separate from the YAML reading in :mod:`batuta.manifest.document` because
it works on one string and knows nothing of YAML.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_INTERPOLATION = re.compile(r"\$(\$?)\{([^{}]*)\}")
_ENV_REF = re.compile(r"env:([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)


@dataclass(frozen=True)
class Interpolated:
    """A string with its ``${...}`` replaced, and what went wrong on the way."""

    text: str
    failures: tuple[str, ...]  # one message each
    from_env: bool  # some variable's value is in ``text``: it may hold a secret


def interpolate(text: str, env: Mapping[str, str]) -> Interpolated:
    """Replace every ``${env:...}`` of ``text`` from ``env``."""
    failures: list[str] = []
    from_env = False

    def substitute(match: re.Match[str]) -> str:
        nonlocal from_env
        if match.group(1):
            return "${" + match.group(2) + "}"
        ref = _ENV_REF.fullmatch(match.group(2))
        if ref is None:
            failures.append(
                f"unknown interpolation '${{{match.group(2)}}}':"
                " write ${env:NAME} or ${env:NAME:-default}"
            )
            return ""
        name, default = ref.group(1), ref.group(2)
        value = env.get(name)
        if default is not None and not value:
            return default
        if value is None:
            failures.append(
                f"environment variable {name} is not set"
                f" (give a default with ${{env:{name}:-value}})"
            )
            return ""
        from_env = True
        return value

    result = _INTERPOLATION.sub(substitute, text)
    if "${" in _INTERPOLATION.sub("", text):
        failures.append("unterminated '${' (write $${ for a literal ${)")
    return Interpolated(result, tuple(failures), from_env)
