"""Thread placement, applied for real: the kernel's own answer (``os.sched_getscheduler`` and
``os.sched_getaffinity`` on the thread's native id) is what each test checks."""

import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from service.core.thread_placement import ThreadPlacement, normal_policy
from service.core.worker import BackgroundWorker

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity"), reason="thread placement is Linux only"
)
ROOT = Path(__file__).resolve().parents[3]


class _Waiter(BackgroundWorker):
    """Applies its placement, then waits to be stopped; ``observed`` is what the kernel says
    about the thread while it runs."""

    def __init__(self, placement: ThreadPlacement) -> None:
        super().__init__("test-placed", placement=placement)
        self.observed: dict | None = None
        self.ready = threading.Event()

    def _work(self) -> None:
        tid = threading.get_native_id()
        self.observed = {
            "policy": os.sched_getscheduler(tid),
            "priority": os.sched_getparam(tid).sched_priority,
            "cpus": os.sched_getaffinity(tid),
        }
        self.ready.set()
        self._stop_requested.wait()


def _run(placement: ThreadPlacement) -> _Waiter:
    worker = _Waiter(placement)
    with worker:
        assert worker.ready.wait(10)
    worker.raise_if_failed()
    return worker


def _realtime_permitted() -> bool:
    """Whether this process may put a thread under SCHED_FIFO (tried on a throwaway thread)."""
    result: list[bool] = []

    def probe() -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        except PermissionError:
            result.append(False)
        else:
            result.append(True)

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    return result[0]


def test_pinning_puts_the_thread_on_the_cpus_and_leaves_the_process_alone():
    before = os.sched_getaffinity(0)
    cpu = max(before)
    worker = _run(ThreadPlacement(None, 1, frozenset({cpu})))
    assert worker.observed["cpus"] == {cpu}
    assert worker.observed["policy"] == os.SCHED_OTHER  # no policy asked, none changed
    assert worker.placement_report["cpus"] == [cpu] and worker.placement_report["refused"] == []
    assert os.sched_getaffinity(0) == before  # only the worker's thread moved


@pytest.mark.skipif(not _realtime_permitted(), reason="this process may not use SCHED_FIFO")
def test_with_the_permission_the_thread_runs_under_the_realtime_policy(caplog):
    with caplog.at_level(logging.INFO, logger="corticast"):
        worker = _run(ThreadPlacement("fifo", 3, frozenset()))
    assert worker.observed["policy"] == os.SCHED_FIFO and worker.observed["priority"] == 3
    assert ThreadPlacement("fifo", 3, frozenset()).realtime_permitted()
    report = worker.placement_report
    assert (report["policy"], report["priority"], report["refused"]) == ("SCHED_FIFO", 3, [])
    assert [r.getMessage() for r in caplog.records if r.name == "corticast"] == [
        f"test-placed runs under SCHED_FIFO priority 3 on CPUs {report['cpus']}"
    ]


_WITHOUT_PERMISSION = """
import json, logging, sys
from service.core.thread_placement import ThreadPlacement, normal_policy
from tests.service.core.test_thread_placement import _run
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
placement = ThreadPlacement("rr", 7, frozenset())
worker = _run(placement)
print(json.dumps({
    "observed_policy": worker.observed["policy"],
    "permitted": placement.realtime_permitted(),
    **worker.placement_report,
}))
"""


def _without_realtime_permission() -> list[str]:
    """A command prefix that takes CAP_SYS_NICE away, where this process has it; the child's
    RLIMIT_RTPRIO is 0 either way."""
    if not _realtime_permitted():
        return []
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("cannot drop the real-time permission here (needs root and setpriv)")
    return ["setpriv", "--inh-caps=-all", "--bounding-set=-all"]


def test_without_the_permission_the_thread_runs_as_before_and_says_why_once():
    result = subprocess.run(
        [*_without_realtime_permission(), sys.executable, "-c", _WITHOUT_PERMISSION],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0)),
    )
    assert result.returncode == 0, result.stderr  # a no-op, not a crash
    report = json.loads(result.stdout)
    assert report["observed_policy"] == os.SCHED_OTHER  # the kernel's answer in the thread
    assert report["permitted"] is False  # what the daemon asks before libzmq would abort
    assert report["policy"] == "SCHED_OTHER" and report["priority"] == 0
    (refusal,) = report["refused"]
    assert refusal.startswith("SCHED_RR priority 7: not permitted (needs CAP_SYS_NICE")
    (line,) = [line for line in result.stderr.splitlines() if "test-placed" in line]
    assert line.startswith("WARNING test-placed runs under SCHED_OTHER priority 0")
    assert refusal in line


_IN_A_CPUSET = """
import json, logging, sys
from service.core.thread_placement import ThreadPlacement, normal_policy
from tests.service.core.test_thread_placement import _run
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
inside, outside = int(sys.argv[1]), int(sys.argv[2])
print(json.dumps([
    _run(ThreadPlacement(None, 1, frozenset(cpus))).placement_report
    for cpus in ({outside}, {inside, outside})
]))
"""


def _cpuset_root() -> Path | None:
    """Where this host's cpuset cgroups can be made: the v1 hierarchy, or v2's root with the
    cpuset controller on for its children; None if neither (or not root)."""
    v1, v2 = Path("/sys/fs/cgroup/cpuset"), Path("/sys/fs/cgroup")
    if os.geteuid() != 0:
        return None
    if (v1 / "cpuset.cpus").is_file() and os.access(v1, os.W_OK):
        return v1
    control = v2 / "cgroup.subtree_control"
    if control.is_file() and "cpuset" in control.read_text().split() and os.access(v2, os.W_OK):
        return v2
    return None


@pytest.fixture
def cpuset(tmp_path):
    """A cpuset cgroup that holds one CPU of this process's (as a container started with
    ``--cpuset-cpus`` does), removed afterwards: (its directory, that CPU, another CPU)."""
    root, cpus = _cpuset_root(), sorted(os.sched_getaffinity(0))
    if root is None or len(cpus) < 2:
        pytest.skip("needs root, a writable cpuset cgroup hierarchy and 2 CPUs")
    group = root / f"corticast-test-{tmp_path.name}"
    group.mkdir()
    try:
        (group / "cpuset.cpus").write_text(str(cpus[0]))
        mems, root_mems = group / "cpuset.mems", root / "cpuset.mems"
        if root_mems.is_file() and not mems.read_text().strip():  # v1: it needs memory nodes
            mems.write_text(root_mems.read_text())
        yield group, cpus[0], cpus[-1]
    finally:
        group.rmdir()


def test_cpus_outside_the_processs_cpuset_are_refused_by_name_not_dropped_silently(cpuset):
    group, inside, outside = cpuset
    result = subprocess.run(
        [sys.executable, "-c", _IN_A_CPUSET, str(inside), str(outside)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: (group / "cgroup.procs").write_text(str(os.getpid())),
    )
    assert result.returncode == 0, result.stderr  # refused, never a crash
    none_inside, one_inside = json.loads(result.stdout)
    # None of the CPUs asked for is open to it: it stays where it was and says why.
    assert none_inside["cpus"] == [inside]
    (refusal,) = none_inside["refused"]
    assert refusal.startswith(f"CPUs [{outside}]: not CPUs this process may run on")
    assert "cpuset" in refusal
    # Some are: pinned to those, and the others named as refused (not an INFO line).
    assert one_inside["cpus"] == [inside]
    (refusal,) = one_inside["refused"]
    assert refusal.startswith(f"CPUs [{outside}]: not CPUs this process may run on")
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 2 and all(f"CPUs [{outside}]" in line for line in warnings)


def _policy_around(block_policy: int | None) -> tuple[int, int, int]:
    """In a thread under ``block_policy`` at priority 3 (None: normal): its policy before,
    inside and after a ``normal_policy`` block."""
    seen: list[int] = []

    def run() -> None:
        if block_policy is not None:
            os.sched_setscheduler(0, block_policy, os.sched_param(3))
        seen.append(os.sched_getscheduler(0))
        with normal_policy("a test block"):
            seen.append(os.sched_getscheduler(0))
        seen.append(os.sched_getscheduler(0))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return tuple(seen)


@pytest.mark.skipif(not _realtime_permitted(), reason="this process may not use SCHED_FIFO")
@pytest.mark.parametrize("policy", [os.SCHED_FIFO, os.SCHED_RR], ids=["fifo", "rr"])
def test_a_real_time_thread_runs_a_normal_policy_block_normal_and_is_put_back(policy):
    assert _policy_around(policy) == (policy, os.SCHED_OTHER, policy)


@pytest.mark.skipif(not _realtime_permitted(), reason="this process may not use SCHED_FIFO")
@pytest.mark.parametrize("policy", [os.SCHED_FIFO, os.SCHED_RR], ids=["fifo", "rr"])
def test_a_reset_on_fork_real_time_thread_runs_normal_and_keeps_the_flag(policy):
    """``chrt -R``, systemd's ``CPUSchedulingResetOnFork=``: the kernel reports the policy
    with SCHED_RESET_ON_FORK or'ed in. Such a thread is real-time all the same; the flag is
    kept inside (dropping it needs CAP_SYS_NICE) and after."""
    flag = os.SCHED_RESET_ON_FORK
    assert _policy_around(policy | flag) == (policy | flag, os.SCHED_OTHER | flag, policy | flag)


@pytest.mark.skipif(not _realtime_permitted(), reason="this process may not use SCHED_FIFO")
def test_a_session_loaded_in_a_normal_policy_block_serves_under_the_callers_policy():
    """ONNX Runtime starts a session's intra-op threads with the session, and they inherit
    the policy of the thread that loads it: loaded in the block (normal), the session would
    serve from normal threads, where one loaded on the real-time thread serves from
    real-time ones. The threads it leaves running are put back with the caller; one started
    meanwhile that runs under a policy of its own (here SCHED_FIFO 2) is left as it is."""
    import onnxruntime as ort

    from service.core.ort_options import session_options

    model = str(ROOT / "tests" / "data" / "tiny_model" / "model.onnx")
    seen: dict[str, list[tuple[int, int]]] = {}
    release = threading.Event()

    def other_thread() -> None:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(2))
        release.wait(30)

    def run() -> None:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(3))
        tasks = set(os.listdir("/proc/self/task"))
        with normal_policy("a test load"):
            session = ort.InferenceSession(
                model, session_options(3), providers=["CPUExecutionProvider"]
            )
            pool = sorted(int(t) for t in set(os.listdir("/proc/self/task")) - tasks)
            seen["inside"] = [_policy_of(tid) for tid in pool]
            other = threading.Thread(target=other_thread)
            other.start()
            while _policy_of(other.native_id)[0] != os.SCHED_FIFO:
                release.wait(0.01)
        seen["after"] = [_policy_of(tid) for tid in pool]
        seen["other"] = [_policy_of(other.native_id)]
        release.set()
        other.join()
        del session

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert len(seen["inside"]) == 2  # 3 intra-op threads: the caller's and two of its own
    assert seen["inside"] == [(os.SCHED_OTHER, 0)] * 2
    assert seen["after"] == [(os.SCHED_RR, 3)] * 2
    assert seen["other"] == [(os.SCHED_FIFO, 2)]


def _policy_of(tid: int) -> tuple[int, int]:
    return os.sched_getscheduler(tid), os.sched_getparam(tid).sched_priority


def test_a_normal_thread_is_left_as_it_is_by_a_normal_policy_block():
    assert _policy_around(None) == (os.SCHED_OTHER,) * 3


_PUT_BACK_REFUSED = """
import logging, os, sys
from service.core.thread_placement import normal_policy
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
before = os.sched_getscheduler(0)
with normal_policy("the swap's measurement"):
    inside = os.sched_getscheduler(0)
print(before, inside, os.sched_getscheduler(0))
"""


def test_a_thread_that_may_not_go_back_to_real_time_stays_normal_and_says_so():
    """Started under SCHED_FIFO by ``chrt`` (root), then without the permission to raise it
    again: the block runs normal, and the refused put-back is one warning naming the work."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None or shutil.which("chrt") is None:
        pytest.skip("needs root, chrt and setpriv")
    if not _realtime_permitted():
        pytest.skip("this process may not use SCHED_FIFO")
    result = subprocess.run(
        ["chrt", "-f", "5", *_without_realtime_permission(), sys.executable, "-c",
         _PUT_BACK_REFUSED],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0)),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(os.SCHED_FIFO), str(os.SCHED_OTHER), str(os.SCHED_OTHER)]
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    assert line.startswith("WARNING the swap's measurement ran under the normal policy; putting")
    assert "SCHED_FIFO 5 was refused" in line
