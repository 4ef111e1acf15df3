"""The end-to-end benchmark's neighbours: hogs that really run, at the normal policy, even when
started by a measuring process that runs real-time, and that are gone after."""

import os
import threading
import time
from pathlib import Path

import pytest

from bench.benchmarks._neighbours import CpuHogs, raise_instrument

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_setscheduler"), reason="scheduling policies are Linux only"
)


def _hogs_from_a_thread_that_called_raise_instrument() -> tuple[str, dict[int, int]]:
    """In a thread of its own, so this test process's main thread keeps its policy."""
    found: dict = {}

    def run() -> None:
        found["instrument"] = raise_instrument()
        with CpuHogs(2) as hogs:
            found["policies"] = {pid: os.sched_getscheduler(pid) for pid in hogs.pids}
            found["pids"] = hogs.pids

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    return found["instrument"], found


def test_hogs_run_at_the_normal_policy_whatever_the_instrument_runs_under_and_end():
    instrument, found = _hogs_from_a_thread_that_called_raise_instrument()
    assert len(found["policies"]) == 2
    assert set(found["policies"].values()) == {os.SCHED_OTHER}, instrument
    for pid in found["pids"]:  # reaped: no such process any more
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_negative_count_is_refused_by_name():
    with pytest.raises(ValueError, match=r"'count' must be >= 0, got -1"):
        CpuHogs(-1)


def test_a_hog_burns_cpu_time_while_it_runs():
    """A hog that only sat there would make the --hog phase a second quiet one: each must
    take CPU time of its own, a tenth of a second of it at least."""
    ticks = os.sysconf("SC_CLK_TCK")
    with CpuHogs(1) as hogs:
        (pid,) = hogs.pids
        deadline = time.monotonic() + 30
        used = 0.0
        while used < 0.1 and time.monotonic() < deadline:
            time.sleep(0.05)
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            used = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    assert used >= 0.1
