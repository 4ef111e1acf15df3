"""Does this host's kernel stop a real-time thread that leaves its CPU no idle time?

On the 2-core development VM (Linux 6.18) the loop's pinned real-time layout faulted on stale
data because the CPU its inference thread kept busy stopped for ~50 ms about once a second, a
SCHED_FIFO 99 thread there included. Two kernel mechanisms do that, both by design, to keep
normal tasks from starving behind real-time ones:

- real-time throttling (``kernel.sched_rt_runtime_us`` of ``sched_rt_period_us``, 95 % of each
  second by default; per control group where the kernel has ``CONFIG_RT_GROUP_SCHED``): once the
  real-time threads of a CPU have had their share, none of them runs for the rest of the period;
- the fair deadline server (Linux 6.12 and later, "sched/fair: Fair server interface"): a normal
  task that waits behind real-time threads gets 50 ms of each second at a deadline priority,
  above every real-time one. ``sched_rt_runtime_us = -1`` does not turn it off; only its own
  debugfs files (``/sys/kernel/debug/sched/fair_server/cpuN/runtime``) do.

Neither acts on a CPU whose real-time threads leave it idle part of the time (normal tasks then
get their time without a boost). This measures which of that holds here, in one run, on one CPU:
a real-time load (SCHED_FIFO 10) that leaves no idle time, alone and then with a normal process
waiting on the same CPU, and then one that leaves ``--idle`` of its time idle with the normal
process waiting; a SCHED_FIFO 99 watcher (``bench.benchmarks._cpu_freezes``) counts the freezes.
It changes no system setting: to see what one does, change it and run this again.

Needs permission for SCHED_FIFO (root, ``CAP_SYS_NICE``, or ``ulimit -r 99``).

Usage: ``python -m bench.benchmarks.cpu_starvation --seconds 10``
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import pylsl

from bench.benchmarks._cpu_freezes import WATCH_PRIORITY, CpuFreezeWatch
from service.core.thread_placement import ThreadPlacement

LOAD_PRIORITY = 10
"""The real-time load's SCHED_FIFO priority: the daemon's inference thread's default."""
DUTY_PERIOD_S = 0.004
"""A duty-cycled load is busy, then idle, within each period this long (about a frame)."""
FREEZE_S = 0.02
"""A watcher's wake-up later than this is a freeze."""


@dataclass(frozen=True)
class Load:
    """What runs on the CPU in one phase."""

    label: str
    idle: float
    """Share of each ``DUTY_PERIOD_S`` the real-time load sleeps (0: never)."""
    normal_waiting: bool
    """Whether a normal (SCHED_OTHER) process spins on the same CPU."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument(
        "--cpu", type=int, default=max(os.sched_getaffinity(0)), help="the CPU loaded"
    )
    parser.add_argument(
        "--idle", type=float, default=0.1, help="idle share of the last phase's real-time load"
    )
    args = parser.parse_args(argv)
    if not 0.0 < args.idle < 1.0:
        parser.error(f"--idle must be between 0 and 1, got {args.idle}")
    if args.cpu not in os.sched_getaffinity(0):
        parser.error(f"--cpu {args.cpu} is not one this process may use")
    if not ThreadPlacement("fifo", WATCH_PRIORITY, frozenset()).realtime_permitted():
        parser.exit(
            2,
            f"cpu_starvation: SCHED_FIFO {WATCH_PRIORITY} (the freeze watcher's) is not "
            "permitted here (needs root, CAP_SYS_NICE or `ulimit -r 99`)\n",
        )
    loads = [
        Load("real-time, no idle time, nothing else of ours there", 0.0, False),
        Load("real-time, no idle time, a normal process waiting there", 0.0, True),
        Load(f"real-time, {args.idle:.0%} idle, a normal process waiting there", args.idle, True),
    ]
    for line in _host_lines(args.cpu):
        print(line)
    print()
    print(f"| load on CPU {args.cpu} ({args.seconds:g} s each) | freezes > 20 ms | longest (ms) |")
    print("|---|---:|---:|")
    for load in loads:
        freezes = measure(load, args.cpu, args.seconds)
        longest = 1e3 * max(freezes, default=0.0)
        print(f"| {load.label} | {len(freezes)} | {longest:.1f} |")


def measure(load: Load, cpu: int, seconds: float) -> list[float]:
    """Lengths (s) of the freezes a SCHED_FIFO 99 watcher on ``cpu`` saw while ``load`` ran
    there for ``seconds``."""
    with CpuFreezeWatch(longer_than_s=FREEZE_S) as watch:
        if not watch.realtime:
            raise PermissionError("the freeze watcher could not run under SCHED_FIFO 99")
        began = pylsl.local_clock()
        stop_at = time.monotonic() + seconds
        processes = [start_load(cpu, stop_at, realtime=True, idle=load.idle)]
        if load.normal_waiting:
            processes.append(start_load(cpu, stop_at, realtime=False, idle=0.0))
        for process in processes:
            process.join(seconds + 30.0)
        ended = pylsl.local_clock()
    return [float(length) for length in watch.freezes(began, ended)[cpu]]


def start_load(cpu: int, stop_at: float, *, realtime: bool, idle: float) -> multiprocessing.Process:
    """A process pinned to ``cpu`` that spins until ``stop_at`` (``time.monotonic``), under
    SCHED_FIFO ``LOAD_PRIORITY`` if ``realtime``, sleeping ``idle`` of each duty period."""
    process = multiprocessing.get_context("fork").Process(
        target=_spin, args=(cpu, stop_at, realtime, idle), daemon=True
    )
    process.start()
    return process


def _spin(cpu: int, stop_at: float, realtime: bool, idle: float) -> None:
    os.sched_setaffinity(0, {cpu})
    if realtime:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(LOAD_PRIORITY))
    busy_s, idle_s = (1.0 - idle) * DUTY_PERIOD_S, idle * DUTY_PERIOD_S
    while (start := time.monotonic()) < stop_at:
        while time.monotonic() - start < busy_s:
            pass
        if idle_s:
            time.sleep(idle_s)


def _host_lines(cpu: int) -> list[str]:
    """The kernel and the settings that decide the result, as this process can read them."""
    lines = [f"- kernel {platform.release()}"]
    for name in ("sched_rt_runtime_us", "sched_rt_period_us"):
        lines.append(f"- kernel.{name} = {_read(Path('/proc/sys/kernel') / name)}")
    server = Path(f"/sys/kernel/debug/sched/fair_server/cpu{cpu}/runtime")
    lines.append(f"- fair server runtime on CPU {cpu} (ns): {_read(server)}")
    return lines


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as error:
        return f"not readable ({error.strerror or type(error).__name__})"


if __name__ == "__main__":
    main()
