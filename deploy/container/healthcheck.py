"""Container health check: does the daemon's API answer ``/healthz``?

Docker runs this inside the image, which has no curl. It asks where the daemon listens the same
way the daemon is told: ``CORTICAST_API__HOST`` / ``CORTICAST_API__PORT`` (the environment
overrides of ``[api] host`` and ``port``), defaulting to the config's 127.0.0.1:8080. A daemon
bound to every address (0.0.0.0) is asked on loopback. Exit 0 healthy, 1 not.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

_ANY_ADDRESS = {"", "0.0.0.0", "::"}


def main() -> int:
    """Ask ``/healthz`` once, within 2 s; print why when it fails (Docker keeps the output)."""
    host = os.environ.get("CORTICAST_API__HOST", "127.0.0.1")
    host = "127.0.0.1" if host in _ANY_ADDRESS else host
    port = os.environ.get("CORTICAST_API__PORT", "8080")
    if ":" in host:  # an IPv6 address goes in brackets
        host = f"[{host}]"
    url = f"http://{host}:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as err:
        print(f"{url}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
