"""Telling an API key from the name of the variable that holds it.

The manifest references keys by variable name only; a value that looks like a key itself
is refused wherever a variable name belongs (servers, endpoints, gateway keys) and never
shown. Separate because the schema, the rules and the gateway's rules all ask it.
"""

from __future__ import annotations

# Prefixes of real providers' keys; a value starting with one is a key, not a variable name.
_KEY_PREFIXES = ("sk-", "sk_", "gsk_", "hf_", "xai-", "r8_", "fw_", "pk-", "AKIA", "AIza", "ghp_")

KEY_ITSELF = (
    "this looks like an API key itself (not shown): keys never go in the manifest; put the"
    " key in an environment variable and name that variable"
)


def looks_like_secret(value: str) -> bool:
    """Whether ``value`` looks like an API key rather than an environment variable name."""
    if value.startswith(_KEY_PREFIXES):
        return True
    has_lower = any(c.islower() for c in value)
    has_digit = any(c.isdigit() for c in value)
    return len(value) > 64 or (len(value) >= 24 and has_lower and has_digit)
