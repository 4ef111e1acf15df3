import multiprocessing
import os
import time

import pytest

from bench.benchmarks import cpu_starvation
from bench.benchmarks._cpu_freezes import WATCH_PRIORITY
from service.core.thread_placement import ThreadPlacement

needs_fifo = pytest.mark.skipif(
    not ThreadPlacement("fifo", WATCH_PRIORITY, frozenset()).realtime_permitted(),
    reason="SCHED_FIFO at the freeze watcher's priority is not permitted here",
)


@needs_fifo
@pytest.mark.parametrize("realtime", [True, False])
def test_a_load_runs_on_its_cpu_under_the_policy_asked_and_ends_by_itself(realtime):
    cpu = max(os.sched_getaffinity(0))
    expected = os.SCHED_FIFO if realtime else os.SCHED_OTHER
    process = cpu_starvation.start_load(cpu, time.monotonic() + 2.0, realtime=realtime, idle=0.5)
    try:

        def placed() -> tuple[set[int], int]:
            return os.sched_getaffinity(process.pid), os.sched_getscheduler(process.pid)

        deadline = time.monotonic() + 1.8
        while placed() != ({cpu}, expected) and time.monotonic() < deadline:
            time.sleep(0.01)  # the child places itself as it starts
        assert placed() == ({cpu}, expected)
        process.join(30.0)
        assert process.exitcode == 0
    finally:
        process.kill()


@needs_fifo
def test_the_table_has_a_row_per_load_and_no_load_outlives_the_run(capsys):
    # Short phases: a load with no idle time holds its CPU from everything else meanwhile.
    cpu_starvation.main(["--seconds", "0.1", "--idle", "0.25"])
    out = capsys.readouterr().out
    assert "- kernel.sched_rt_runtime_us = " in out
    rows = [line for line in out.splitlines() if line.startswith("| real-time")]
    assert [row.split(" | ")[0] for row in rows] == [
        "| real-time, no idle time, nothing else of ours there",
        "| real-time, no idle time, a normal process waiting there",
        "| real-time, 25% idle, a normal process waiting there",
    ]
    assert multiprocessing.active_children() == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--idle", "1.5"], "--idle must be between 0 and 1, got 1.5"),
        (["--cpu", "4096"], "--cpu 4096 is not one this process may use"),
    ],
)
def test_a_bad_option_is_refused_naming_it(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cpu_starvation.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
