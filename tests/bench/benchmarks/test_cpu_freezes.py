import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pylsl
import pytest

from bench.benchmarks._cpu_freezes import CpuFreezeWatch

ROOT = Path(__file__).resolve().parents[3]


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


_KILLED_HOLDING_A_WATCH = """
import sys, time
from bench.benchmarks._cpu_freezes import CpuFreezeWatch
watch = CpuFreezeWatch().__enter__()
print(*watch.pids.values(), flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for its new parent to reap it."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"


def test_the_watchers_end_when_the_process_that_started_them_is_killed():
    """A benchmark killed outright (SIGKILL, or SIGTERM, which Python does not turn into an
    exit that runs ``__exit__``) leaves no watcher behind: each woke 1000 times a second
    under SCHED_FIFO 99, for ever."""
    with subprocess.Popen(
        [sys.executable, "-c", _KILLED_HOLDING_A_WATCH],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    ) as parent:
        pids = [int(pid) for pid in parent.stdout.readline().split()]
        parent.kill()
    assert pids, "no watcher started"
    deadline = time.monotonic() + 10.0
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [pid for pid in pids if _alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)  # what the defect left running
    assert left == []
