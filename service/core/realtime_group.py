"""The real-time budget of this process's cgroup, where the kernel schedules real-time tasks by
group (``CONFIG_RT_GROUP_SCHED``).

Such a kernel gives each group of the cpu controller a budget of its own, ``cpu.rt_runtime_us``
of every ``cpu.rt_period_us``: the root group holds the whole of ``kernel.sched_rt_runtime_us``
and a new group 0, and it refuses SCHED_FIFO and SCHED_RR (EPERM) to a task of a group with 0,
root's included (Documentation/scheduler/sched-rt-group.rst; ``__sched_setscheduler`` in
kernel/sched/syscalls.c skips the check only while ``kernel.sched_rt_runtime_us`` is -1, and,
from Linux 6.16, when booted with ``rt_group_sched=0``). systemd gives no group a budget, so a
service in a cpu cgroup of its own is refused, and a unit that sets ``CPUSchedulingPolicy=``
does not start (status 214/SETSCHEDULER). cgroup v1 has the file to give a group one; cgroup v2
has none: there every group below the root that has the cpu controller is refused. The doctor
and each refusal the daemon logs say which of these holds (``service.core.realtime_refusal``).
"""

from __future__ import annotations

import gzip
import platform
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")
_BOOT = Path("/boot")
_BUDGET = "cpu.rt_runtime_us"


@dataclass(frozen=True)
class RealtimeGroup:
    """This process's group of the cpu controller and its real-time budget.

    Attributes
    ----------
    path
        The group whose budget applies: under cgroup v1 the process's, as
        ``/proc/self/cgroup`` names it (``/``: the root); under v2 the nearest one up from it
        with the cpu controller. None where that is v2's root, or no cpu controller is
        mounted.
    version
        1 or 2: the hierarchy the cpu controller is on; None where it is on none.
    budget_file
        cgroup v1's ``cpu.rt_runtime_us`` of the group, where the kernel schedules real-time
        tasks by group (it has no such file otherwise); None under cgroup v2.
    budget_us
        What ``budget_file`` holds; None where not read.
    by_group
        Whether the kernel schedules real-time tasks by group: under cgroup v1, whether the
        group has ``budget_file``; under v2, what the kernel's configuration and command line
        say, None where neither is readable.
    global_runtime_us
        ``kernel.sched_rt_runtime_us``; -1 turns the kernel's per-group check off.
    """

    path: str | None
    version: int | None
    budget_file: Path | None
    budget_us: int | None
    by_group: bool | None
    global_runtime_us: int | None

    @property
    def checked(self) -> bool:
        """Whether the kernel refuses real-time to a group without a budget here: it schedules
        real-time tasks by group, and ``kernel.sched_rt_runtime_us`` is not -1."""
        return bool(self.by_group) and self.global_runtime_us != -1

    def refusal(self) -> str | None:
        """Why the kernel refuses SCHED_FIFO and SCHED_RR to this process for its group, and
        what fixes it; None where the group does not stop it."""
        if self.path is None or self.by_group is False or self.global_runtime_us == -1:
            return None  # by_group None (v2, configuration unreadable): said as possible
        fixes = (
            "rt_group_sched=0 on the kernel command line (Linux 6.16 and later), a kernel "
            "without CONFIG_RT_GROUP_SCHED, or kernel.sched_rt_runtime_us = -1 (which turns "
            'real-time throttling off too); deploy/README.md, "Real-time groups"'
        )
        if self.version == 1 and self.budget_us == 0:
            return (
                f"this process's cgroup {self.path} has no real-time budget ({self.budget_file} "
                "is 0), and this kernel (CONFIG_RT_GROUP_SCHED) refuses real-time there even to "
                "root. Fixes: a budget that covers what its real-time threads use, since they "
                "run no more of each period (write e.g. 900000 there, and first in each group "
                "above it; a group's children together get no more than it), the cpu "
                f"hierarchy's root group, {fixes}"
            )
        if self.version == 2:
            kernel = (
                "this kernel"
                if self.by_group
                else "a kernel with CONFIG_RT_GROUP_SCHED (this one's configuration is not "
                "readable here)"
            )
            return (
                f"this process's cgroup {self.path} has the cpu controller (cgroup v2), and "
                f"{kernel} refuses real-time there even to root; v2 has no file to give a group "
                "a budget. Fixes: a group with no cpu controller up from its own (under "
                f"systemd: no CPUWeight=, CPUQuota= on its unit or its slice's others), {fixes}"
            )
        return None


def read_realtime_group(proc: Path = _PROC, boot: Path = _BOOT) -> RealtimeGroup:
    """This process's :class:`RealtimeGroup`, read from ``proc`` (``/proc``): its groups,
    the mounts of their hierarchies, and the files there; under cgroup v2, the kernel's
    configuration from ``proc`` or ``boot``."""
    global_runtime = _read_int(proc / "sys/kernel/sched_rt_runtime_us")
    groups = _groups(proc / "self/cgroup")
    mounts = _mounts(proc / "self/mountinfo")
    path = next((p for (kind, cs), p in groups.items() if kind == 1 and "cpu" in cs), None)
    if path is not None:
        mount = next((m for m in mounts if m[0] == "cgroup" and "cpu" in m[3]), None)
        directory = None if mount is None else _inside(mount, path)
        budget = None if directory is None else directory / _BUDGET
        found = budget is not None and budget.exists()
        return RealtimeGroup(
            path, 1, budget if found else None,
            _read_int(budget) if found else None, found if directory is not None else None,
            global_runtime,
        )  # fmt: skip
    path = groups.get((2, frozenset()))
    mount = next((m for m in mounts if m[0] == "cgroup2"), None)
    if path is None or mount is None:
        return RealtimeGroup(None, None, None, None, None, global_runtime)
    # The group whose cpu controller the process's tasks are under: the nearest one up from
    # its own that has the controller (cpu.max; the root group has none). The mount's own
    # directory counts: in a cgroup namespace it is a group below the real root.
    directory, top = _inside(mount, path), Path(mount[1])
    while directory != top and not (directory / "cpu.max").exists():
        directory = directory.parent
    if not (directory / "cpu.max").exists():
        return RealtimeGroup(None, 2, None, None, None, global_runtime)
    name = f"/{directory.relative_to(top)}" if directory != top else f"{path} (a namespace's root)"
    return RealtimeGroup(name, 2, None, None, _rt_group_sched(proc, boot), global_runtime)


def _groups(listing: Path) -> dict[tuple[int, frozenset[str]], str]:
    """``/proc/self/cgroup`` as {(hierarchy version, its controllers): the group's path}."""
    try:
        lines = listing.read_text().splitlines()
    except OSError:
        return {}
    groups = {}
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            groups[(2, frozenset())] = path
        else:
            groups[(1, frozenset(controllers.split(",")))] = path
    return groups


def _mounts(listing: Path) -> list[tuple[str, str, str, frozenset[str]]]:
    """The cgroup mounts of ``/proc/self/mountinfo``: (type, mount point, the root of the
    hierarchy mounted there, the super options: its controllers)."""
    try:
        lines = listing.read_text().splitlines()
    except OSError:
        return []
    mounts = []
    for line in lines:
        fields, _, tail = line.partition(" - ")
        fs_type, _, options = [*tail.split(), "", "", ""][:3]
        if fs_type in ("cgroup", "cgroup2"):
            parts = fields.split()
            mounts.append((fs_type, parts[4], parts[3], frozenset(options.split(","))))
    return mounts


def _inside(mount: tuple[str, str, str, frozenset[str]], path: str) -> Path:
    """Where group ``path`` is under ``mount`` (a mount of a subtree, as a container's, holds
    the groups below its root)."""
    _, point, root, _ = mount
    relative = path[len(root) :] if root != "/" and path.startswith(root) else path
    return Path(point) / relative.lstrip("/")


def _rt_group_sched(proc: Path, boot: Path) -> bool | None:
    """Whether the kernel schedules real-time tasks by group, from its configuration
    (``/proc/config.gz``, else ``/boot/config-<release>``) and its command line's
    ``rt_group_sched=``; None where the configuration is not readable."""
    config = _kernel_config(proc, boot)
    if config is None:
        return None
    if "CONFIG_RT_GROUP_SCHED=y" not in config:
        return False
    try:
        command_line = (proc / "cmdline").read_text().split()
    except OSError:
        command_line = []
    for word in command_line:
        if word in ("rt_group_sched=0", "rt_group_sched=1"):
            return word.endswith("1")
    return "CONFIG_RT_GROUP_SCHED_DEFAULT_DISABLED=y" not in config


def _kernel_config(proc: Path, boot: Path) -> set[str] | None:
    try:
        text = gzip.decompress((proc / "config.gz").read_bytes()).decode()
    except OSError:
        try:
            text = (boot / f"config-{platform.release()}").read_text()
        except OSError:
            return None
    return set(text.splitlines())


def _read_int(path: Path | None) -> int | None:
    try:
        return int(path.read_text().strip()) if path is not None else None
    except (OSError, ValueError):
        return None
