"""``corticast serve`` with a wake-up probe beside it, for ``bench.benchmarks.http_flood`` only.

The probe is a thread of the server process that asks to sleep 1 ms, over and over, and
writes the worst lateness of each 100 ms to a file: how long the daemon's own threads (the
ingest, scheduler and wave stage would be such threads) wait for the interpreter while the
HTTP server works. It lives here, not in the daemon.

Usage: ``python -m bench.benchmarks._flood_server CONFIG.toml PROBE.txt``
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

_SLEEP_S = 0.001
_BUCKET_S = 0.1


def _probe(path: Path) -> None:
    """Append ``<monotonic end of bucket> <worst lateness in it, ms>`` every 100 ms."""
    with path.open("a", buffering=1) as out:
        worst, bucket_end = 0.0, time.monotonic() + _BUCKET_S
        while True:
            asked = time.monotonic()
            time.sleep(_SLEEP_S)
            now = time.monotonic()
            worst = max(worst, now - asked - _SLEEP_S)
            if now >= bucket_end:
                out.write(f"{now:.4f} {worst * 1000:.3f}\n")
                worst, bucket_end = 0.0, now + _BUCKET_S


def main() -> None:
    config, probe = Path(sys.argv[1]), Path(sys.argv[2])
    threading.Thread(target=_probe, args=(probe,), name="flood-probe", daemon=True).start()
    from service.cli.app import app

    app(["--log-level", "WARNING", "serve", "--config", str(config)])


if __name__ == "__main__":
    main()
