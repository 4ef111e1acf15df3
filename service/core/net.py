"""Which bind addresses stay on this machine: the one rule behind both APIs' bind checks."""

from __future__ import annotations

import ipaddress

DEFAULT_API_HOST = "127.0.0.1"
"""Where the HTTP API listens without ``[api] host``: one place, so a command that shows a
request to the daemon (``corticast adapt``'s model swap) names the address it answers at."""
DEFAULT_API_PORT = 8080
"""The HTTP API's port without ``[api] port``."""


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (``127.x``, ``::1``, bracketed or not).

    Wildcards (``*``, ``0.0.0.0``, ``::``), interface names and other host names are not: they
    may resolve to a network interface.
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
