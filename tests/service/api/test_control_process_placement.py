"""The control process steps aside for the loop with every thread it has, not only its main one.

Linux keeps the scheduling policy, nice value and CPU affinity per thread, and a library may
start threads at import (OpenBLAS's workers, where ``OMP_NUM_THREADS`` is unset, as under the
unit). A real child process stands in for the control process: it starts two threads, then
steps aside as the control process does at start, and reports what each thread runs under.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

import pytest

CHILD = """
import json, os, sys, threading
from service.api.control_process import _yield_to_the_loop
from service.config import Settings

started, done = threading.Barrier(3), threading.Event()

def worker():
    started.wait()
    done.wait(60)

threads = [threading.Thread(target=worker) for _ in range(2)]
for thread in threads:
    thread.start()
started.wait()  # both exist before the process steps aside, as a library's would
settings = Settings.model_validate(json.loads(sys.argv[1]))
_yield_to_the_loop(settings)
report = {
    tid: {
        "nice": os.getpriority(os.PRIO_PROCESS, int(tid)),
        "policy": os.sched_getscheduler(int(tid)),
        "cpus": sorted(os.sched_getaffinity(int(tid))),
    }
    for tid in os.listdir("/proc/self/task")
}
done.set()
print(json.dumps(report))
"""


def _as_lowest_realtime() -> None:
    """The unit's ``CPUSchedulingPolicy=rr`` with priority 1, where this host permits it."""
    with contextlib.suppress(PermissionError):
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux thread placement")
def test_every_thread_started_before_it_steps_aside_leaves_the_loops_cpu_policy_and_priority():
    loop_cpu = max(os.sched_getaffinity(0))
    settings = {
        "api": {"dev_no_token": True, "process_niceness": 7},
        "realtime": {"ingest_cpus": [loop_cpu], "inference_cpus": [loop_cpu]},
    }
    child = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(settings)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_as_lowest_realtime,
    )
    assert child.returncode == 0, child.stderr
    threads = json.loads(child.stdout.splitlines()[-1])
    assert len(threads) >= 3, threads  # the main thread and the two started before
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    for tid, runs in threads.items():
        assert runs["nice"] == min(ours + 7, 19), (tid, threads)
        assert runs["policy"] == os.SCHED_OTHER, (tid, threads)
        if len(os.sched_getaffinity(0)) > 1:
            assert loop_cpu not in runs["cpus"], (tid, threads)
