"""What this host's kernel does to a real-time thread that leaves its CPU no idle time.

Two mechanisms stop such a thread for about 50 ms of each second, so that normal tasks
waiting on that CPU run (deploy/README.md, ``bench.benchmarks.cpu_starvation``): real-time
throttling, while ``kernel.sched_rt_runtime_us`` is not -1, and, from Linux 6.12, the fair
deadline server, which that setting does not turn off. 50 ms is past the loop's staleness limit;
``[realtime] idle_share`` keeps the loop's threads from filling a CPU. ``corticast doctor``
says which mechanisms this host has.
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass
from pathlib import Path

FAIR_SERVER_SINCE = (6, 12)
"""The first Linux release with the fair deadline server ("sched/fair: Fair server interface")."""
_PROC = Path("/proc/sys/kernel")


@dataclass(frozen=True)
class RealtimeHost:
    """The kernel (``platform.system()``, its release) and its real-time throttling settings
    (None: not readable)."""

    system: str
    kernel: str
    rt_runtime_us: int | None
    rt_period_us: int | None

    @property
    def version(self) -> tuple[int, int] | None:
        """(major, minor) of a Linux release such as ``6.18.44-fc``; None for anything else
        (macOS's release, 23.1.0, is Darwin's numbering, not Linux's)."""
        match = re.match(r"(\d+)\.(\d+)", self.kernel) if self.system == "Linux" else None
        return None if match is None else (int(match[1]), int(match[2]))

    def stoppers(self) -> list[str]:
        """The mechanisms here that stop a real-time thread leaving its CPU no idle time."""
        if self.system != "Linux":
            return []
        found = []
        runtime, period = self.rt_runtime_us, self.rt_period_us
        if runtime is None:  # not -1 unless set so: the kernel's default throttles
            found.append(
                "real-time throttling, ~50 ms of every second unless kernel.sched_rt_runtime_us "
                "(not readable here; 950000 by default) is -1"
            )
        elif runtime >= 0 and period is None:
            found.append(
                f"real-time throttling (kernel.sched_rt_runtime_us: {runtime} us of a period "
                "not readable here)"
            )
        elif 0 <= runtime < period:  # runtime = period leaves real-time threads all of it
            found.append(
                f"real-time throttling, {(period - runtime) / 1000:g} ms of every "
                f"{period / 1000:g} ms (kernel.sched_rt_runtime_us: {runtime} of every "
                f"{period} us)"
            )
        version = self.version
        if version is not None and version >= FAIR_SERVER_SINCE:
            found.append(
                "the fair deadline server, ~50 ms of every second by default (Linux >= 6.12; "
                "sched_rt_runtime_us = -1 does not turn it off)"
            )
        return found


def read_realtime_host(proc: Path = _PROC) -> RealtimeHost:
    """This host's :class:`RealtimeHost`."""
    return RealtimeHost(
        platform.system(),
        platform.release(),
        _read_int(proc / "sched_rt_runtime_us"),
        _read_int(proc / "sched_rt_period_us"),
    )


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None
