"""The loopback rule: which URLs and hosts are this machine.

One rule for every layer: validation lets a ``sovereign`` route use exactly what the
router's privacy check accepts, and every HTTP client batuta builds sends exactly those
URLs straight to the socket, never through a proxy from the environment (a proxy would
carry a sovereign prompt off the machine). Loopback is ``localhost`` and its subdomains
(RFC 6761), ``127.0.0.0/8``, ``::1`` and IPv4-mapped ``::ffff:127.x.y.z``. In a cluster,
the domains of ``$BATUTA_SOVEREIGN_DOMAINS`` (a namespace's own Services) count as well.

:func:`proxy_for` is the other half: the proxy (if any) a client must use for a URL,
from ``*_PROXY`` / ``NO_PROXY`` as curl and httpx read them, and never one for loopback.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import socket
import urllib.request
from collections.abc import Mapping
from urllib.parse import urlsplit


def host_of(url_or_host: str) -> str:
    """The host of a URL, ``HOST:PORT`` or bare host, lower-cased, without brackets."""
    text = url_or_host.strip()
    if "://" not in text:
        try:  # a bare address; IPv6 has colons that would read as a port
            return str(ipaddress.ip_address(text.strip("[]")))
        except ValueError:
            text = "//" + text
    try:
        host = urlsplit(text).hostname
    except ValueError:
        return ""
    return (host or "").rstrip(".").lower()


def is_localhost_name(host: str) -> bool:
    """``localhost`` or a name under it (``foo.localhost``)."""
    host = host.rstrip(".").lower()
    return host == "localhost" or host.endswith(".localhost")


@functools.lru_cache(maxsize=1024)  # asked per request by the privacy check
def is_loopback(url_or_host: str) -> bool:
    """Whether a URL (or ``HOST:PORT``, or a host) points at this machine."""
    host = host_of(url_or_host)
    if not host:
        return False
    if is_localhost_name(host):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


# Domains a deployment declares its own, comma-separated: the gateway that
# `batuta render kubernetes` renders names its namespace's Services (``NS.svc.DOMAIN``), and
# a NetworkPolicy keeps those inside the cluster.
SOVEREIGN_DOMAINS_ENV = "BATUTA_SOVEREIGN_DOMAINS"


def sovereign_domains(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The domains of :data:`SOVEREIGN_DOMAINS_ENV`, lower-cased, without leading dots."""
    raw = (os.environ if env is None else env).get(SOVEREIGN_DOMAINS_ENV, "")
    parts = (part.strip().strip(".").lower() for part in raw.split(","))
    return tuple(part for part in parts if part)


def is_sovereign(url_or_host: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether a URL stays where a sovereign prompt may go: this machine, or a host under
    one of the :func:`sovereign_domains` (a name there, never an address)."""
    if is_loopback(url_or_host):
        return True
    host = host_of(url_or_host)
    return any(host.endswith("." + domain) for domain in sovereign_domains(env))


def resolves_to_loopback(host: str) -> bool:
    """Whether the system resolver turns ``host`` into loopback addresses only.

    ``localhost`` and IP literals need no lookup; for ``foo.localhost`` it depends on the
    resolver (systemd-resolved answers, plain ``/etc/hosts`` usually does not).
    """
    host = host_of(host)
    if host == "localhost" or (is_loopback(host) and not is_localhost_name(host)):
        return True
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    return bool(infos) and all(is_loopback(str(info[4][0])) for info in infos)


def environment_proxies() -> dict[str, str]:
    """Proxy settings from the environment: scheme (``http``, ``https``, ``all``, ``no``)
    to value, as :func:`urllib.request.getproxies_environment` reads them."""
    return dict(urllib.request.getproxies_environment())


def proxy_for(url: str, proxies: Mapping[str, str] | None = None) -> str | None:
    """The proxy URL to send ``url`` through, or None to connect directly.

    Loopback is always direct; otherwise ``NO_PROXY`` is honoured, then the scheme's proxy
    (``HTTPS_PROXY`` for https://, ``HTTP_PROXY`` for http://), then ``ALL_PROXY``.
    """
    settings = environment_proxies() if proxies is None else dict(proxies)
    if is_sovereign(url):  # a proxy would carry a sovereign prompt elsewhere
        return None
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host:
        return None
    if _bypassed(host, parts.port, settings.get("no", "")):
        return None
    proxy = settings.get(parts.scheme.lower()) or settings.get("all")
    if not proxy:
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _bypassed(host: str, port: int | None, no_proxy: str) -> bool:
    """Whether ``NO_PROXY`` (``*``, names and their subdomains, ``.domain``, ``*.domain``,
    addresses, CIDR ranges, each optionally ``:port``) exempts ``host``."""
    host = host.strip("[]").rstrip(".")
    for raw in no_proxy.replace(" ", "").lower().split(","):
        item = raw
        if item == "*":
            return True
        if item.startswith("[") and "]" in item:  # [::1]:8080
            item, _, rest = item[1:].partition("]")
            if rest.startswith(":") and rest[1:] != str(port):
                continue
        elif item.count(":") == 1:  # host:port (a bare IPv6 address has several colons)
            item, _, wanted = item.partition(":")
            if wanted != str(port):
                continue
        item = item.removeprefix("*").removeprefix(".").rstrip(".")
        if not item:
            continue
        if host == item or host.endswith("." + item):
            return True
        try:
            if ipaddress.ip_address(host) in ipaddress.ip_network(item, strict=False):
                return True
        except ValueError:
            continue
    return False
