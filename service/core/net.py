"""Which bind addresses stay on this machine: the one rule behind both APIs' bind checks."""

from __future__ import annotations

import ipaddress

DEFAULT_API_HOST = "127.0.0.1"
"""Where the HTTP API listens without ``[api] host``: one place, so a command that shows a
request to the daemon (``corticast adapt``'s model swap) names the address it answers at."""
DEFAULT_API_PORT = 8080
"""The HTTP API's port without ``[api] port``."""


def is_loopback_host(host: str) -> bool:
    """True for loopback IP addresses (``127.x``, ``::1``, bracketed or not).

    Wildcards (``*``, ``0.0.0.0``, ``::``), interface names and host names are not: a name is
    resolved where it is bound or reached, by /etc/hosts and DNS, which may put it on a
    network interface. ``localhost`` too: a hosts file naming this machine's LAN address
    ``localhost`` made a bind there pass as loopback (with ``dev_no_token``, control without
    a token on the network). :func:`loopback_hint` says what to write instead.
    """
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def names_loopback(host: str) -> bool:
    """True for a loopback address or ``localhost`` as a client names the server it asks
    (``Host``, a browser's ``Origin``): not where a bind goes (:func:`is_loopback_host`), but
    whether the name is a page's of its own (DNS rebinding); browsers resolve ``localhost`` to
    loopback themselves, and no page can name itself so."""
    return host.lower() == "localhost" or is_loopback_host(host)


def loopback_hint(host: str) -> str:
    """For a refusal of ``host``: where it is ``localhost``, why that is not taken for
    loopback and what to write instead; otherwise nothing."""
    if host.lower() != "localhost":
        return ""
    return (
        " ('localhost' is a name, which /etc/hosts or DNS may give another address: "
        "write 127.0.0.1 or ::1)"
    )
