"""Freezes of each CPU, as a thread above everything else on it sees them.

A stale-stream fault in a benchmark may be the daemon's, the instrument's, or the machine's.
On the 2-core VM these benchmarks were developed on, a CPU that real-time threads kept busy
without a break stopped for about 50 ms roughly once a second, a SCHED_FIFO 99 thread there
included: the kernel gives waiting normal tasks that time (``bench.benchmarks.cpu_starvation``
says how and measures it), and whatever ran on that CPU then (the rig, the ingest thread)
paused past the stale limit. One watcher process per CPU, pinned there under SCHED_FIFO 99
where permitted, wakes every millisecond and reports each wake-up that came more than
``longer_than_s`` late.

Run as a module, it is one watcher: ``python -m bench.benchmarks._cpu_freezes CPU LONGER_THAN_S``
prints ``realtime`` (or ``normal``, not permitted), then ``<local clock at its end> <length>``
for each freeze, in seconds, until terminated.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Self

import numpy as np
import pylsl

from service.core.python_module import python_module_command

WATCH_PRIORITY = 99
"""Above every thread the benchmarks or the daemon start (the instrument runs at 50)."""
TICK_S = 0.001
"""How often each watcher wakes."""


class CpuFreezeWatch:
    """One watcher per CPU this process may use, for as long as the context lasts.

    Parameters
    ----------
    longer_than_s
        A wake-up later than this after the previous one is a freeze.
    """

    def __init__(self, longer_than_s: float = 0.02) -> None:
        if not longer_than_s > TICK_S:
            raise ValueError(f"'longer_than_s' must be > {TICK_S}, got {longer_than_s!r}")
        self.longer_than_s = longer_than_s
        self.cpus = sorted(os.sched_getaffinity(0))
        self.realtime = True
        """Whether every watcher runs under SCHED_FIFO (known once started)."""
        self._processes: dict[int, subprocess.Popen[str]] = {}
        self._freezes: dict[int, np.ndarray] = {}

    def __enter__(self) -> Self:
        """Start the watchers; returns once each is watching (has said under which policy)."""
        for cpu in self.cpus:
            self._processes[cpu] = subprocess.Popen(
                python_module_command(
                    __name__, str(cpu), str(self.longer_than_s), str(os.getpid())
                ),
                stdout=subprocess.PIPE,
                text=True,
            )
        for process in self._processes.values():
            self.realtime &= process.stdout.readline().strip() == "realtime"
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def pids(self) -> dict[int, int]:
        """The watchers running now, by CPU."""
        return {cpu: process.pid for cpu, process in self._processes.items()}

    def stop(self) -> None:
        """End the watchers and keep what they saw (idempotent)."""
        for cpu, process in self._processes.items():
            process.terminate()
            out, _ = process.communicate(timeout=10)
            self._freezes[cpu] = np.array(out.split(), dtype=np.float64).reshape(-1, 2)
        self._processes.clear()

    def freezes(self, start: float, end: float) -> dict[int, np.ndarray]:
        """Per CPU, the lengths (s) of the freezes that ended between local-clock times
        ``start`` and ``end``; call after :meth:`stop`."""
        return {
            cpu: rows[(rows[:, 0] >= start) & (rows[:, 0] < end), 1]
            for cpu, rows in self._freezes.items()
        }


def _watch(cpu: int, longer_than_s: float, parent: int) -> None:
    """Wake every ``TICK_S`` on ``cpu`` until terminated or ``parent`` (the process that
    started it) has ended, printing each late wake-up. A benchmark killed outright (SIGKILL,
    SIGTERM) runs no ``__exit__``: without the check its watchers would run on for ever."""
    os.sched_setaffinity(0, {cpu})
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(WATCH_PRIORITY))
        print("realtime", flush=True)
    except PermissionError:
        print("normal", flush=True)
    last = pylsl.local_clock()
    while os.getppid() == parent:  # an orphan is handed to init (or a subreaper)
        time.sleep(TICK_S)
        now = pylsl.local_clock()
        if now - last > longer_than_s:
            print(f"{now!r} {now - last!r}", flush=True)
        last = now


if __name__ == "__main__":
    _watch(int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]))
