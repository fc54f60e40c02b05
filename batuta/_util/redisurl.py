"""The form of ``gateway.state``: a Redis URL, which never holds the password."""

from __future__ import annotations


def parse_state_url(value: str) -> tuple[str, str, int, int]:
    """``redis://HOST:PORT/DB`` or ``rediss://`` → (scheme, host, port, db). The URL never
    holds a password (``gateway.state_password_env`` names its variable), and an error
    never repeats the URL: it might."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value.strip())
        port = parts.port or 6379
    except ValueError:
        raise ValueError("is not a URL such as redis://HOST:6379/0") from None
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError("must be a redis:// or rediss:// URL, such as redis://HOST:6379/0")
    if "@" in parts.netloc:
        raise ValueError(
            "holds credentials: a password never goes in the manifest; put it in a variable"
            " and name that in gateway.state_password_env"
        )
    if not parts.hostname:
        raise ValueError("names no host: use redis://HOST:6379/0")
    db = parts.path.strip("/") or "0"
    if not db.isdigit() or parts.query or parts.fragment:
        raise ValueError("the path must be a database number: redis://HOST:6379/0")
    return parts.scheme, parts.hostname, port, int(db)
