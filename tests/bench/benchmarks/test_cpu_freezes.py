import os
import signal
import time

import pylsl
import pytest

from bench.benchmarks._cpu_freezes import CpuFreezeWatch


def test_a_watcher_held_still_reports_the_freeze_on_its_cpu_only():
    """A watcher stopped for 0.2 s (as a CPU taken away would stop it) reports one freeze at
    least that long, on its own CPU, inside the span asked about and not outside it."""
    with CpuFreezeWatch(longer_than_s=0.05) as watch:
        cpu, pid = next(iter(watch.pids.items()))
        began = pylsl.local_clock()
        os.kill(pid, signal.SIGSTOP)
        time.sleep(0.2)
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.1)
        ended = pylsl.local_clock()
    assert watch.cpus == sorted(os.sched_getaffinity(0))
    seen = watch.freezes(began, ended)
    assert set(seen) == set(watch.cpus)
    assert seen[cpu].size >= 1 and seen[cpu].max() >= 0.2
    assert watch.freezes(ended, ended + 60)[cpu].size == 0


def test_a_freeze_shorter_than_a_tick_is_refused():
    with pytest.raises(ValueError, match=r"'longer_than_s' must be > 0\.001, got 0\.0005"):
        CpuFreezeWatch(longer_than_s=0.0005)
