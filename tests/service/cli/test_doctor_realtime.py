"""The doctor's real-time lines and the daemon's start-up log for the same threads, without
the serving probe: off Linux (simulated: the os functions taken away), and where this process
may raise some of the threads [realtime] asks for but not the ZeroMQ I/O thread."""

import json
import logging
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from service.cli.doctor import realtime_lines
from service.core.realtime_settings import RealtimeSettings
from service.core.thread_placement import ThreadPlacement
from service.daemon.daemon import _publisher_io_priority

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def not_linux(monkeypatch):
    """This interpreter as on macOS: no os.sched_setscheduler / sched_getscheduler."""
    for name in ("sched_setscheduler", "sched_getscheduler"):
        monkeypatch.delattr(os, name, raising=False)
    monkeypatch.setattr(platform, "system", lambda: "Darwin")


def test_off_linux_the_doctor_says_not_available_not_a_permission_problem(not_linux):
    lines = dict(realtime_lines(RealtimeSettings(policy="fifo")))
    text = "\n".join(lines.values())
    assert "not permitted" not in text.lower()
    assert lines["real-time"].startswith("not available on this OS (Darwin)")
    assert lines["[realtime]"] == "policy fifo, not applied here"
    assert "warning" not in lines


def test_off_linux_the_daemon_logs_not_available_for_each_thread(not_linux, caplog):
    caplog.set_level(logging.INFO, logger="corticast")
    priority, report = _publisher_io_priority(RealtimeSettings(policy="fifo"))
    assert priority is None  # libzmq is given nothing to apply
    (refusal,) = report["refused"]
    assert refusal.startswith("SCHED_FIFO priority 11: not available on this OS (Darwin)")
    placed = []
    thread = threading.Thread(
        target=lambda: placed.append(ThreadPlacement("fifo", 20, frozenset()).apply("ingest"))
    )
    thread.start()
    thread.join()
    assert placed[0]["refused"] == [
        "not available on this OS (Darwin): real-time policies and thread pinning are Linux only"
    ]
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 2 and all("not available on this OS (Darwin)" in m for m in logged)
    assert not any("refused" in m and "not available" not in m for m in logged)


_DOCTOR_AND_DAEMON = """
import json, logging, sys
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
from service.cli.doctor import realtime_lines
from service.core.realtime_settings import RealtimeSettings
from service.core.thread_placement import ThreadPlacement
from service.daemon.daemon import _publisher_io_priority
limit = int(sys.argv[1])
if limit and not ThreadPlacement("fifo", limit, frozenset()).realtime_permitted():
    sys.exit(77)  # refused for another cause here (a cgroup without a budget)
settings = RealtimeSettings(policy="fifo", ingest_priority=10, inference_priority=20)
priority, report = _publisher_io_priority(settings)
print(json.dumps({"lines": realtime_lines(settings), "priority": priority, "report": report}))
"""


def _doctor_and_daemon(rtprio: int) -> tuple[dict, str]:
    """The doctor's lines for ingest 10 / inference 20 (so the ZeroMQ I/O thread asks 21),
    and the daemon's answer and log for that thread, in a process without CAP_SYS_NICE and
    with RLIMIT_RTPRIO ``rtprio``."""
    hard = resource.getrlimit(resource.RLIMIT_RTPRIO)[1]
    if hard != resource.RLIM_INFINITY and hard < rtprio:  # raising it needs CAP_SYS_RESOURCE
        pytest.skip(f"this process may not raise RLIMIT_RTPRIO to {rtprio} (hard limit {hard})")
    result = subprocess.run(
        [*_without_cap_sys_nice(), sys.executable, "-c", _DOCTOR_AND_DAEMON, str(rtprio)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_RTPRIO, (rtprio, rtprio)),
    )
    if result.returncode == 77:
        pytest.skip(f"SCHED_FIFO {rtprio} is refused here for another cause than RLIMIT_RTPRIO")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), result.stderr


def _without_cap_sys_nice() -> list[str]:
    """A command prefix that takes CAP_SYS_NICE away where this process has it, so that
    RLIMIT_RTPRIO alone decides."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("cannot drop CAP_SYS_NICE here (needs setpriv)")
    return ["setpriv", "--inh-caps=-all", "--bounding-set=-all"]


def test_without_the_permission_every_thread_is_refused_with_its_cause_zmq_io_included():
    """RLIMIT_RTPRIO 0, no CAP_SYS_NICE (the unit without its drop-in): the doctor lists each
    priority [realtime] asks for, the ZeroMQ I/O thread's too, refused, and says why; the
    daemon logs the I/O thread's refusal with the same cause and /status shows it."""
    out, log = _doctor_and_daemon(0)
    lines = dict(map(tuple, out["lines"]))
    assert lines["[realtime]"] == (
        "policy fifo, priorities ingest 10 / inference 20 / ZeroMQ I/O 21, idle_share 0.1; "
        "refused here to ingest (10), inference (20), ZeroMQ I/O (21)"
    )
    assert lines["warning"].startswith(
        "SCHED_FIFO 10: not permitted (needs CAP_SYS_NICE or an RLIMIT_RTPRIO of at least 10, "
        "this process has 0 and no CAP_SYS_NICE"
    )
    assert "corticast.service.d/realtime.conf" in lines["warning"]
    assert out["priority"] is None  # libzmq would have aborted the daemon
    assert out["report"]["policy"] is None  # the process's
    (refusal,) = out["report"]["refused"]
    assert refusal.startswith("SCHED_FIFO priority 21: not permitted (needs CAP_SYS_NICE")
    (logged,) = [line for line in log.splitlines() if "ZeroMQ" in line]
    assert logged.startswith("WARNING ZeroMQ publisher's I/O thread runs at the process's")
    assert "RLIMIT_RTPRIO of at least 21, this process has 0" in logged


def test_the_zmq_io_thread_one_above_inference_is_tried_and_its_refusal_said():
    """LimitRTPRIO=20 (the drop-in's) with inference at 20: the ingest and inference threads
    may rise, the ZeroMQ I/O thread, one above inference (21), may not. The doctor tries 21
    and says so with the cause; the daemon logs and shows the same."""
    out, log = _doctor_and_daemon(20)
    lines = dict(map(tuple, out["lines"]))
    assert lines["[realtime]"].startswith(
        "policy fifo, priorities ingest 10 / inference 20 / ZeroMQ I/O 21, idle_share 0.1; "
    )
    assert lines["[realtime]"].endswith("refused here to ZeroMQ I/O (21)")
    assert lines["warning"].startswith(
        "SCHED_FIFO 21: not permitted (needs CAP_SYS_NICE or an RLIMIT_RTPRIO of at least 21, "
        "this process has 20 and no CAP_SYS_NICE"
    )
    assert out["priority"] is None
    (refusal,) = out["report"]["refused"]
    assert refusal.startswith("SCHED_FIFO priority 21: not permitted (needs CAP_SYS_NICE")
    (logged,) = [line for line in log.splitlines() if "ZeroMQ" in line]
    assert "RLIMIT_RTPRIO of at least 21, this process has 20" in logged
