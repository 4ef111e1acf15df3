"""The real-time budget of this process's cgroup: read from a /proc and cgroup tree laid out as
the kernel lays them out (v1 and v2), and, where this host allows it, the kernel's own refusal
in a v1 group made for the test."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.core.realtime_group import read_realtime_group

ROOT = Path(__file__).resolve().parents[3]
SERVICE = "/system.slice/corticast.service"


def _proc(tmp_path, cgroup: str, mounts: list[str], runtime="950000", cmdline="quiet"):
    """A /proc with the files read: self/cgroup, self/mountinfo, the sysctl, the command line."""
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "sys/kernel").mkdir(parents=True)
    (proc / "self/cgroup").write_text(cgroup)
    (proc / "self/mountinfo").write_text("".join(line + "\n" for line in mounts))
    (proc / "sys/kernel/sched_rt_runtime_us").write_text(runtime + "\n")
    (proc / "cmdline").write_text(cmdline + "\n")
    return proc


def _v1(tmp_path, budget: str | None, runtime="950000"):
    """cgroup v1 with cpu and cpuacct mounted together; the service in a group of its own."""
    mount = tmp_path / "cgroup/cpu,cpuacct"
    group = mount / SERVICE.lstrip("/")
    group.mkdir(parents=True)
    if budget is not None:  # the kernel has the file only under RT group scheduling
        (mount / "cpu.rt_runtime_us").write_text("950000\n")
        (group / "cpu.rt_runtime_us").write_text(budget + "\n")
    cgroup = f"5:cpu,cpuacct:{SERVICE}\n4:memory:{SERVICE}\n0::{SERVICE}\n"
    mounts = [
        f"30 25 0:26 / {tmp_path}/cgroup/memory rw - cgroup cgroup rw,memory",
        f"31 25 0:27 / {mount} rw,nosuid - cgroup cgroup rw,cpu,cpuacct",
        f"32 25 0:28 / {tmp_path}/cgroup/unified rw - cgroup2 cgroup2 rw",
    ]
    return _proc(tmp_path, cgroup, mounts, runtime=runtime), group


def test_v1_a_group_without_a_budget_is_named_with_its_file_and_the_fixes(tmp_path):
    proc, group = _v1(tmp_path, budget="0")
    found = read_realtime_group(proc)
    assert (found.path, found.version, found.budget_us, found.checked) == (SERVICE, 1, 0, True)
    refusal = found.refusal()
    assert refusal.startswith(f"this process's cgroup {SERVICE} has no real-time budget")
    assert f"({group / 'cpu.rt_runtime_us'} is 0)" in refusal and "even to root" in refusal
    for fix in ("write e.g. 900000 there", "rt_group_sched=0", "sched_rt_runtime_us = -1"):
        assert fix in refusal


@pytest.mark.parametrize(
    ("budget", "runtime"),
    [("50000", "950000"), ("0", "-1"), (None, "950000")],
    ids=["a budget", "the check off (-1)", "no RT group scheduling"],
)
def test_v1_nothing_is_said_where_the_group_does_not_stop_it(tmp_path, budget, runtime):
    proc, _ = _v1(tmp_path, budget=budget, runtime=runtime)
    found = read_realtime_group(proc)
    assert found.refusal() is None
    assert found.checked is (budget is not None and runtime != "-1")


def _v2(tmp_path, cpu_at: list[str], config: str | None, cmdline="quiet"):
    """cgroup v2 alone; ``cpu_at``: the groups with the cpu controller (they have cpu.max)."""
    mount = tmp_path / "cgroup"
    (mount / SERVICE.lstrip("/")).mkdir(parents=True)
    for group in cpu_at:
        (mount / group.lstrip("/") / "cpu.max").write_text("max 100000\n")
    mounts = [f"30 25 0:26 / {mount} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate"]
    proc = _proc(tmp_path, f"0::{SERVICE}\n", mounts, cmdline=cmdline)
    if config is not None:
        (proc / "config.gz").write_bytes(gzip.compress(config.encode()))
    return proc


def test_v2_the_nearest_group_with_the_cpu_controller_is_the_one_named(tmp_path):
    """A unit's slice with the cpu controller (a sibling's CPUWeight=) puts the unit's tasks
    under the slice's group, which v2 gives no real-time budget."""
    proc = _v2(tmp_path, ["/system.slice"], "CONFIG_RT_GROUP_SCHED=y\n", cmdline="ro quiet")
    found = read_realtime_group(proc, boot=tmp_path / "boot")
    assert (found.path, found.version, found.checked) == ("/system.slice", 2, True)
    refusal = found.refusal()
    assert refusal.startswith("this process's cgroup /system.slice has the cpu controller")
    assert "this kernel refuses" in refusal and "v2 has no file" in refusal
    assert "CPUWeight=" in refusal and "rt_group_sched=0" in refusal


@pytest.mark.parametrize(
    ("cpu_at", "config", "cmdline"),
    [
        ([], "CONFIG_RT_GROUP_SCHED=y\n", "quiet"),
        (["/system.slice"], "# CONFIG_RT_GROUP_SCHED is not set\n", "quiet"),
        (["/system.slice"], "CONFIG_RT_GROUP_SCHED=y\n", "rt_group_sched=0"),
        (
            ["/system.slice"],
            "CONFIG_RT_GROUP_SCHED=y\nCONFIG_RT_GROUP_SCHED_DEFAULT_DISABLED=y\n",
            "quiet",
        ),
    ],
    ids=["no cpu controller", "not configured", "off at boot", "off by default"],
)
def test_v2_nothing_is_said_where_the_kernel_gives_real_time_to_the_group(
    tmp_path, cpu_at, config, cmdline
):
    proc = _v2(tmp_path, cpu_at, config, cmdline=cmdline)
    assert read_realtime_group(proc, boot=tmp_path / "boot").refusal() is None


def test_v2_an_unreadable_kernel_configuration_is_said_as_possible(tmp_path):
    proc = _v2(tmp_path, ["/system.slice"], config=None)
    found = read_realtime_group(proc, boot=tmp_path / "boot")
    assert found.by_group is None and not found.checked
    assert "and a kernel with CONFIG_RT_GROUP_SCHED (this one" in found.refusal()


_IN_THE_GROUP = """
import json, threading
from service.core.thread_placement import ThreadPlacement
report = []
placement = ThreadPlacement("fifo", 1, frozenset())
thread = threading.Thread(target=lambda: report.append(placement.apply("corticast-ingest")))
thread.start()
thread.join()
print(json.dumps({"refusal": placement.realtime_refusal(), **report[0]}))
"""


def _v1_cpu_hierarchy() -> Path | None:
    """This host's v1 cpu hierarchy, where it has RT group scheduling and root may make a
    group in it."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, tail = line.partition(" - ")
        fs_type, _, options = [*tail.split(), "", "", ""][:3]
        point = Path(fields.split()[4])
        if fs_type == "cgroup" and "cpu" in options.split(","):
            return point if (point / "cpu.rt_runtime_us").exists() else None
    return None


@pytest.mark.skipif(
    os.geteuid() != 0 or _v1_cpu_hierarchy() is None,
    reason="needs root and a v1 cpu hierarchy with RT group scheduling (CONFIG_RT_GROUP_SCHED)",
)
def test_the_kernel_refuses_root_in_a_group_without_a_budget_and_the_log_says_why(tmp_path):
    """Root, in a cpu group made for the test (a new group's budget is 0), is refused
    SCHED_FIFO; the thread's refusal and the probe name the group and what fixes it, not a
    permission root has. Given a budget, the same process is permitted. The group is removed
    after; nothing else is changed."""
    group = _v1_cpu_hierarchy() / f"corticast-test-{os.getpid()}"
    group.mkdir()
    try:

        def run() -> dict:
            result = subprocess.run(
                [sys.executable, "-c", _IN_THE_GROUP],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
                preexec_fn=lambda: (group / "cgroup.procs").write_text(str(os.getpid())),
            )
            assert result.returncode == 0, result.stderr
            return json.loads(result.stdout)

        assert (group / "cpu.rt_runtime_us").read_text().strip() == "0"
        refused = run()
        assert refused["policy"] == "SCHED_OTHER"
        (refusal,) = refused["refused"]
        name = f"/{group.name}"
        assert refusal.startswith(
            f"SCHED_FIFO priority 1: this process's cgroup {name} has no real-time budget"
        ), refusal
        assert "not permitted (needs CAP_SYS_NICE" not in refusal  # root has it
        assert refused["refusal"].startswith(f"this process's cgroup {name} has no")

        (group / "cpu.rt_runtime_us").write_text("10000")
        permitted = run()
        assert (permitted["policy"], permitted["refused"], permitted["refusal"]) == (
            "SCHED_FIFO",
            [],
            None,
        )
    finally:
        group.rmdir()  # its process has exited
