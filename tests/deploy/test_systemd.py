"""deploy/systemd: the unit verifies, the user file parses, and the hardening keeps what a rig
needs (LSL multicast, the serial stimulator, the watchdog protocol the daemon speaks).

No systemd runs as PID 1 here, so the daemon cannot be started as a unit; the last test
rebuilds the unit's sandbox from its own lines (tests/deploy/_unit_sandbox.py) and starts the
daemon inside it, against a simulated rig, until it tells systemd's socket READY=1.
"""

from __future__ import annotations

import grp
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import pylsl
import pytest

from firmware_bridge.config import BridgeSettings
from firmware_bridge.stimulation_bridge import close_bound_s
from service.api.control_process import KILLED_END_S, STOP_TIMEOUT_S
from service.core.realtime_settings import RealtimeSettings
from service.daemon.control_link import STOP_BOUND_S as LINK_STOP_BOUND_S
from service.inference import host
from tests.deploy._unit_sandbox import allowed_syscalls, sandboxed, syscall_groups

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD = ROOT / "deploy" / "systemd"
UNIT = SYSTEMD / "corticast.service"
INSTALLED_BINARY = "/opt/corticast/bin/corticast"

RECORDED_EXPOSURE = 1.6
"""``systemd-analyze security --offline=yes`` of the unit (with its GPU drop-in) when it was
last tightened; it was 1.9 before @privileged, @resources, /proc and mounts were closed."""
REALTIME_DROP_IN = SYSTEMD / "corticast.service.d" / "realtime.conf"

MEMORY_HEADROOM = 2
"""``MemoryHigh=`` is at least this many times the most the daemon's two processes held
resident by READY=1 (their ``VmHWM`` summed) in the sandbox test: after READY the history of
predictions fills and each slow subscriber's queue (360 MiB at READY, 421 MiB at most over five
minutes with one subscriber: deploy/README.md, "Memory cap")."""


def _settings(path: Path) -> dict[str, list[str]]:
    """key -> every value it is given (systemd allows a key more than once)."""
    found: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def _unit_filter(tmp_path: Path, drop_in: str | None = None) -> tuple[str, Path]:
    """The unit's ``UMask=``, and its system-call filter (with a drop-in's lines added)
    written where :func:`sandboxed` reads it."""
    unit = _settings(UNIT)
    (umask,) = unit["UMask"]
    (error,) = unit["SystemCallErrorNumber"]
    filters = unit["SystemCallFilter"]
    if drop_in is not None:
        filters = filters + _settings(SYSTEMD / "corticast.service.d" / drop_in)["SystemCallFilter"]
    return umask, _write_filter(tmp_path, filters, error)


def _write_filter(tmp_path: Path, filters: list[str], error: str) -> Path:
    """``filters`` (``SystemCallFilter=`` lines, later ones adding to the allow list) as the
    sandbox's allow list and error number."""
    allowed = allowed_syscalls(filters, syscall_groups())
    filter_file = tmp_path / "filter.json"
    filter_file.write_text(json.dumps({"allowed": sorted(allowed), "error": error}))
    return filter_file


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_the_unit_and_its_drop_ins_pass_systemd_analyze_verify(tmp_path):
    # verify insists that ExecStart's binary exists: point it at this checkout's corticast.
    corticast = Path(sys.executable).with_name("corticast")
    assert corticast.exists(), corticast
    text = UNIT.read_text(encoding="utf-8")
    assert f"ExecStart={INSTALLED_BINARY} " in text
    (tmp_path / UNIT.name).write_text(text.replace(INSTALLED_BINARY, str(corticast)))
    # verify reads drop-ins from <unit>.d next to the unit it is given.
    shutil.copytree(SYSTEMD / "corticast.service.d", tmp_path / "corticast.service.d")
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / UNIT.name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # It exits 0 on unknown keys and bad values too, warning on stderr: no output at all.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="no systemd-sysusers here")
def test_the_sysusers_file_creates_the_user_in_dialout(tmp_path):
    (tmp_path / "etc").mkdir()
    result = subprocess.run(
        ["systemd-sysusers", f"--root={tmp_path}", str(SYSTEMD / "corticast.sysusers")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    passwd = (tmp_path / "etc" / "passwd").read_text().splitlines()
    (user,) = [line.split(":") for line in passwd if line.startswith("corticast:")]
    assert user[5:] == ["/var/lib/corticast", "/usr/sbin/nologin"]
    group = (tmp_path / "etc" / "group").read_text().splitlines()
    members = {line.split(":")[0]: line.split(":")[3].split(",") for line in group}
    assert "corticast" in members["dialout"]


def test_the_unit_runs_the_daemon_as_notify_with_a_watchdog_as_its_own_user():
    unit = _settings(UNIT)
    assert unit["Type"] == ["notify"]
    assert unit["WatchdogSec"] and unit["Restart"] == ["on-failure"]
    assert unit["RestartPreventExitStatus"] == ["2"]  # corticast's exit status for bad config
    assert unit["User"] == ["corticast"] and unit["SupplementaryGroups"] == ["dialout"]
    assert unit["StateDirectory"] == ["corticast"]
    assert unit["WorkingDirectory"] == ["/var/lib/corticast"]  # the audit log's relative path
    (command,) = unit["ExecStart"]
    assert command.split()[1:] == ["serve", "--config", "/etc/corticast/corticast.toml"]


STAGES_STOP_S = 2.0
"""What of ``TimeoutStopSec`` the stop's budget leaves, at least, for the loop's stages'
threads to end (each at its next wake; one stuck in a call holds the stop up to 2 s)."""


def test_the_daemons_stop_fits_in_the_units_stop_timeout_with_room_for_the_stages():
    """`corticast serve`'s stop, its parts each bounded (deploy/README.md, "Stopping"): the
    bridge's close at the default settings, the control process's SIGTERM and SIGKILL waits
    and the link's. Summed, they ran past ``TimeoutStopSec`` (a 10 s SIGTERM wait): systemd's
    SIGKILL could come before the audit log's close record."""
    (timeout,) = _settings(UNIT)["TimeoutStopSec"]
    assert timeout.endswith("s")
    close = close_bound_s(BridgeSettings())
    budget = close + STOP_TIMEOUT_S + KILLED_END_S + LINK_STOP_BOUND_S
    assert budget + STAGES_STOP_S <= float(timeout[:-1]), (close, budget)


def _size(value: str) -> int:
    """A systemd size (``768M``, ``2G``: base 1024) in bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    if value[-1:] in units:
        return int(value[:-1]) * units[value[-1]]
    return int(value)


def _memory_caps(path: Path) -> tuple[int, int]:
    settings = _settings(path)
    (high,), (limit,) = settings["MemoryHigh"], settings["MemoryMax"]
    return _size(high), _size(limit)


def test_the_unit_caps_its_memory_and_stops_whole_when_a_process_is_killed_for_it():
    """A ZeroMQ peer can make the daemon hold memory without bound (deploy/README.md, "Who
    may connect to ZeroMQ"): capped, the kernel kills within the unit, not the acquisition
    software beside it; the rest of the unit is then stopped (SIGTERM: the loop disarms) and
    restarted, as after any failure."""
    unit = _settings(UNIT)
    high, limit = _memory_caps(UNIT)
    assert high < limit  # the sandbox test holds MemoryHigh= to the measured footprint
    assert unit["OOMPolicy"] == ["stop"] and unit["Restart"] == ["on-failure"]
    (adjust,) = unit["OOMScoreAdjust"]
    assert 0 < int(adjust) < 1000  # preferred by the host's OOM killer, never the only choice
    # CUDA and TensorRT take more host memory: the GPU drop-in raises both caps.
    gpu_high, gpu_limit = _memory_caps(SYSTEMD / "corticast.service.d" / "gpu.conf")
    assert high < gpu_high < gpu_limit and limit < gpu_limit


def test_the_unit_starts_after_the_clock_is_set_where_the_host_waits_for_it():
    """A boot's trains are placed after a reboot by wall time (the monotonic clock starts
    again): a daemon started before NTP set a wrong clock read them as older than they are."""
    assert "time-sync.target" in " ".join(_settings(UNIT)["After"]).split()


def test_the_hardening_leaves_lsl_multicast_and_the_serial_device_working():
    unit = _settings(UNIT)
    for breaks_the_rig in (
        "PrivateDevices",  # hides /dev/ttyACM0 and the GPU
        "PrivateNetwork",  # no LAN, no LSL
        "IPAddressDeny",  # multicast discovery
        "MemoryDenyWriteExecute",  # CUDA/TensorRT, ctypes callbacks
        "PrivateUsers",  # the dialout group
    ):
        assert breaks_the_rig not in unit, breaks_the_rig
    (families,) = unit["RestrictAddressFamilies"]
    assert set(families.split()) >= {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}
    assert unit["DevicePolicy"] == ["closed"]
    assert {"char-ttyACM rw", "char-ttyUSB rw"} <= set(unit["DeviceAllow"])
    assert unit["NoNewPrivileges"] == ["yes"] and unit["ProtectSystem"] == ["strict"]
    gpu = _settings(SYSTEMD / "corticast.service.d" / "gpu.conf")
    assert all(device.startswith("char-nvidia") for device in gpu["DeviceAllow"])


def test_the_unit_refuses_privileged_and_resource_syscalls_but_the_two_the_daemon_needs():
    unit = _settings(UNIT)
    assert unit["SystemCallFilter"] == [
        "@system-service",
        "~@privileged @resources",
        "sched_setscheduler setpriority",  # libzmq's I/O threads; the wave stage's niceness
    ]
    assert unit["SystemCallErrorNumber"] == ["EPERM"]
    # What makes sched_setscheduler harmless; corticast.service.d/realtime.conf relaxes it.
    assert unit["RestrictRealtime"] == ["yes"]
    assert unit["CapabilityBoundingSet"] == [""]  # ... and setpriority (no CAP_SYS_NICE)


def test_the_unit_hides_proc_and_mounts_and_keeps_what_it_writes_private():
    unit = _settings(UNIT)
    assert unit["ProcSubset"] == ["pid"] and unit["ProtectProc"] == ["invisible"]
    assert unit["PrivateMounts"] == ["yes"]
    assert unit["UMask"] == ["0077"]
    # The NVIDIA driver reads /proc/driver/nvidia: a GPU host gives the daemon all of /proc.
    assert _settings(SYSTEMD / "corticast.service.d" / "gpu.conf")["ProcSubset"] == ["all"]


def _security(unit: Path) -> tuple[float, set[str]]:
    """``systemd-analyze security --offline=yes`` of ``unit`` with the drop-ins beside it: the
    overall exposure, and the lines of the checks it fails."""
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for corticast\.service: ([0-9.]+)", result.stdout)
    assert found, result.stdout + result.stderr
    failed = {line.split()[1] for line in result.stdout.splitlines() if line.startswith("✗")}
    return float(found.group(1)), failed


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_the_units_security_exposure_is_at_most_the_recorded_score_and_realtime_adds_one(
    tmp_path,
):
    # The unit with its GPU drop-in alone, as a rig without [realtime] installs it ...
    shutil.copy(UNIT, tmp_path / UNIT.name)
    (tmp_path / "corticast.service.d").mkdir()
    shutil.copy(SYSTEMD / "corticast.service.d" / "gpu.conf", tmp_path / "corticast.service.d")
    exposure, failed = _security(tmp_path / UNIT.name)
    assert exposure <= RECORDED_EXPOSURE, failed
    # ... and with the real-time drop-in: the one check it gives up is RestrictRealtime=.
    shutil.copy(REALTIME_DROP_IN, tmp_path / "corticast.service.d")
    exposure_rt, failed_rt = _security(tmp_path / UNIT.name)
    assert failed_rt - failed == {"RestrictRealtime="}
    assert exposure < exposure_rt <= RECORDED_EXPOSURE + 0.1


def test_the_realtime_drop_in_allows_the_configured_priorities_and_pinning_and_no_more():
    drop_in = _settings(REALTIME_DROP_IN)
    defaults = RealtimeSettings()
    assert drop_in["RestrictRealtime"] == ["no"]
    (limit,) = drop_in["LimitRTPRIO"]
    # Every priority [realtime] asks for by default, the ZeroMQ I/O thread's (one above
    # inference) included: a refusal there leaves predictions waiting behind the daemon.
    fifo = RealtimeSettings(policy="fifo")
    asked = [fifo.placement(t).priority for t in ("ingest", "inference", "publisher_io")]
    assert int(limit) >= max(asked)
    # The whole daemon just above normal processes (the interpreter lock is shared), the two
    # loop threads above the rest of it.
    assert drop_in["CPUSchedulingPolicy"] == ["rr"]
    (base,) = drop_in["CPUSchedulingPriority"]
    assert 1 <= int(base) < min(defaults.ingest_priority, defaults.inference_priority)
    assert drop_in["SystemCallFilter"] == ["sched_setaffinity"]  # an addition to the allow list
    assert drop_in["CPUAffinity"]
    # No capability comes back: the priority is bounded by LimitRTPRIO, not by CAP_SYS_NICE.
    for widening in ("CapabilityBoundingSet", "AmbientCapabilities", "NoNewPrivileges"):
        assert widening not in drop_in, widening


def _can_rebuild_the_sandbox() -> bool:
    tools = ("systemd-analyze", "unshare", "setpriv", "mount")
    return os.geteuid() == 0 and all(shutil.which(tool) for tool in tools)


@pytest.mark.skipif(not _can_rebuild_the_sandbox(), reason="needs root, unshare and setpriv")
@pytest.mark.parametrize("drop_in", [None, "realtime.conf"])
def test_the_daemon_starts_under_the_units_sandbox_and_tells_systemd_it_is_ready(
    tmp_path, source_id, drop_in
):
    unit = _settings(UNIT)
    (umask,) = unit["UMask"]
    (error,) = unit["SystemCallErrorNumber"]
    filters, before_sandbox, realtime_config = unit["SystemCallFilter"], [], ""
    keep: tuple[str, ...] = ()
    if drop_in is not None:
        if not (shutil.which("prlimit") and shutil.which("chrt")):
            pytest.skip("needs prlimit and chrt")
        extra = _settings(SYSTEMD / "corticast.service.d" / drop_in)
        filters = filters + extra["SystemCallFilter"]  # a later line adds to the allow list
        (limit,) = extra["LimitRTPRIO"]
        (policy,) = extra["CPUSchedulingPolicy"]
        (priority,) = extra["CPUSchedulingPriority"]
        # What systemd does as root before it drops the capabilities: the limit, the policy.
        before_sandbox = ["prlimit", f"--rtprio={limit}", "chrt", f"--{policy}", priority]
        probe = subprocess.run(["prlimit", f"--rtprio={limit}", "true"], capture_output=True)
        if probe.returncode != 0:
            # A container without CAP_SYS_RESOURCE cannot raise the hard limit: CAP_SYS_NICE
            # stands in for LimitRTPRIO= (everything else is as under the unit).
            before_sandbox, keep = before_sandbox[2:], ("sys_nice",)
        cpu = str(max(os.sched_getaffinity(0)))  # pinning goes through the filter too
        realtime_config = (
            f'[realtime]\npolicy = "fifo"\ningest_cpus = [{cpu}]\ninference_cpus = [{cpu}]\n'
        )
    filter_file = _write_filter(tmp_path, filters, error)
    config = tmp_path / "corticast.toml"
    config.write_text(_daemon_config(tmp_path, source_id) + realtime_config, encoding="utf-8")
    serve = [sys.executable, "-m", "service.cli.app", "serve", "--config", str(config)]
    rig = [*serve[:3], "rig", "--config", str(config), "--seconds", "120"]
    log_file = tmp_path / "daemon.log"
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify,
        log_file.open("wb") as log,
    ):
        notify.bind(str(tmp_path / "notify"))
        notify.settimeout(0.5)
        rig_process = subprocess.Popen(
            rig, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        # The stream exists before the daemon starts: found at start, as on a running rig.
        assert pylsl.resolve_byprop("source_id", source_id, 1, 60), "no stream from the rig"
        daemon = subprocess.Popen(
            [
                *before_sandbox,
                *sandboxed(
                    serve,
                    filter_file=filter_file,
                    umask=umask,
                    hide_proc=True,
                    keep_capabilities=keep,
                ),
            ],
            cwd=ROOT,
            # As under the unit, without the suite's OMP_NUM_THREADS=1: a daemon's imports then
            # start OpenBLAS's worker threads, which run under the unit's policy too.
            env={**_without_omp(os.environ), "NOTIFY_SOCKET": str(tmp_path / "notify")},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            ready = _wait_for_ready(notify, daemon, deadline_s=120)
            assert ready, f"no READY=1 from the daemon\n{_tail(log_file)}"
            threads = _thread_policies(daemon.pid)  # every program above exec'd the next
            [control] = _children(daemon.pid)  # the HTTP API and query socket ([api] own_process)
            control_threads = _thread_policies(control)
            resident = sum(_peak_resident_bytes(pid) for pid in (daemon.pid, control))
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(60) == 0, _tail(log_file)
        finally:
            for process in (daemon, rig_process):
                process.kill()
                process.wait(10)
    # The memory cap leaves room above what the daemon took to start (model, serving probe).
    high, _ = _memory_caps(UNIT)
    assert resident * MEMORY_HEADROOM <= high, f"{resident >> 20} MiB resident at READY=1"
    # UMask=0077 reached the daemon: its audit log is for its own user only.
    assert stat.S_IMODE((tmp_path / "audit.jsonl").stat().st_mode) == 0o600
    if drop_in is not None:
        # The limit (without a capability, where the host lets the test set it) let the two
        # loop threads (and the inlet's liblsl threads, started by the ingest thread) rise
        # above the rest of the daemon, which runs at the drop-in's policy.
        # The publisher's ZeroMQ threads (its I/O thread, which sends every prediction, and
        # its reaper, which only closes sockets) run one above the inference thread. The control
        # process (HTTP API, query socket) leaves the drop-in's real-time policy to the loop.
        defaults = RealtimeSettings()
        ingest = (os.SCHED_FIFO, defaults.ingest_priority)
        inference = (os.SCHED_FIFO, defaults.inference_priority)
        publisher = (os.SCHED_FIFO, defaults.inference_priority + 1)
        policies = Counter(policy for _, policy in threads)
        raised = set(policies) - {(os.SCHED_RR, int(priority))}
        assert raised == {ingest, inference, publisher}, threads
        assert policies[ingest] >= 2  # the ingest thread and liblsl's receiver
        assert policies[inference] == 1
        names = sorted(name for name, policy in threads if policy == publisher)
        assert names == ["ZMQbg/IO/0", "ZMQbg/Reaper"], threads
        assert {policy for _, policy in control_threads} == {(os.SCHED_OTHER, 0)}, control_threads
        assert any(name.startswith("ZMQbg/IO/") for name, _ in control_threads)
        assert "refused" not in log_file.read_text(errors="replace")


def _without_omp(environ: Mapping[str, str]) -> dict[str, str]:
    return {name: value for name, value in environ.items() if name != "OMP_NUM_THREADS"}


def _children(pid: int) -> list[int]:
    """The processes ``pid`` started (Linux: listed by its main thread)."""
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _peak_resident_bytes(pid: int) -> int:
    """The most ``pid`` has held resident since it was exec'd (``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024  # in kB
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def _thread_policies(pid: int) -> list[tuple[str, tuple[int, int]]]:
    """Each thread of ``pid``: its name and (policy, real-time priority)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        tid = int(task.name)
        try:
            name = (task / "comm").read_text().strip()
            found.append(
                (name, (os.sched_getscheduler(tid), os.sched_getparam(tid).sched_priority))
            )
        except (ProcessLookupError, FileNotFoundError):  # a thread that ended meanwhile
            continue
    return found


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:]


def _wait_for_ready(notify: socket.socket, daemon: subprocess.Popen, deadline_s: float) -> bool:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and daemon.poll() is None:
        try:
            if b"READY=1" in notify.recv(4096).split(b"\n"):
                return True
        except TimeoutError:
            pass
    return False


def _daemon_config(tmp_path: Path, source_id: str) -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        api_port = probe.getsockname()[1]
    return f"""
[stream]
source_id = "{source_id}"
[ingest]
stale_after_frames = 50
[rig]
duration_s = 20.0
[bridge]
dry_run = true
audit_log = "{tmp_path / "audit.jsonl"}"
[zmq]
pub_endpoint = "tcp://127.0.0.1:*"
query_endpoint = "tcp://127.0.0.1:*"
[api]
port = {api_port}
token = "systemd-sandbox-test-token-0123456789"
"""


_PLACED_UNDER_THE_UNIT = """
import json, sys, threading
from service.core.thread_placement import ThreadPlacement
report = []
placement = ThreadPlacement("fifo", 20, frozenset({int(sys.argv[1])}))
thread = threading.Thread(target=lambda: report.append(placement.apply("corticast-ingest")))
thread.start()
thread.join()
print(json.dumps(report[0]))
"""


@pytest.mark.skipif(not _can_rebuild_the_sandbox(), reason="needs root, unshare and setpriv")
def test_under_the_unit_without_the_drop_in_each_refusal_names_the_drop_in(tmp_path):
    """[realtime] on a rig that installed the unit alone: both parts are refused (the policy
    without LimitRTPRIO=, the pinning by the system-call filter), and the warning says what
    allows them, not only what the kernel said."""
    umask, filter_file = _unit_filter(tmp_path)
    cpu = str(max(os.sched_getaffinity(0)))
    command = [sys.executable, "-c", _PLACED_UNDER_THE_UNIT, cpu]
    result = subprocess.run(
        sandboxed(command, filter_file=filter_file, umask=umask, hide_proc=False),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0)),
    )
    assert result.returncode == 0, result.stderr  # refused, never a crash
    report = json.loads(result.stdout)
    assert report["policy"] == "SCHED_OTHER"
    pinning, policy = report["refused"]
    assert pinning.startswith(f"CPUs [{cpu}]: ") and policy.startswith("SCHED_FIFO priority 20: ")
    for refusal in (pinning, policy):
        assert "corticast.service.d/realtime.conf" in refusal, refusal


_IPC_SHARED_UNDER_THE_UNIT = """
import grp, os, stat, sys
from service.zmq_api.publisher import ZmqPublisher
from service.zmq_api.settings import ZmqSettings
path = sys.argv[1]
settings = ZmqSettings(
    pub_endpoint="tcp://127.0.0.1:*", query_endpoint="tcp://127.0.0.1:*",
    pub_ipc_endpoint="ipc://" + path, pub_ipc_mode=0o660, pub_ipc_group=sys.argv[2],
)
try:
    publisher = ZmqPublisher(settings).start()
except OSError as err:
    print(err)
else:
    info = os.stat(path)
    print(oct(stat.S_IMODE(info.st_mode)), grp.getgrgid(info.st_gid).gr_name)
    publisher.stop()
"""


@pytest.mark.skipif(not _can_rebuild_the_sandbox(), reason="needs root, unshare and setpriv")
@pytest.mark.parametrize("drop_in", [None, "ipc-group.conf"])
def test_the_ipc_group_drop_in_lets_the_daemon_give_its_socket_to_the_group(tmp_path, drop_in):
    """[zmq] pub_ipc_group under the unit: the filter's ``~@privileged`` holds @chown, so the
    group change is refused until the drop-in puts ``chown``/``fchownat`` back; refused, the
    error names the drop-in. The daemon's user (uid 0 without capabilities here) is in the
    group, as SupplementaryGroups= makes it."""
    umask, filter_file = _unit_filter(tmp_path, drop_in)
    group = "users"
    command = [sys.executable, "-c", _IPC_SHARED_UNDER_THE_UNIT, str(tmp_path / "pub.sock"), group]
    result = subprocess.run(
        [
            "setpriv", f"--groups={grp.getgrnam(group).gr_gid}", "--",
            *sandboxed(command, filter_file=filter_file, umask=umask, hide_proc=False),
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    if drop_in is None:
        assert "corticast.service.d/ipc-group.conf" in result.stdout, result.stdout
    else:
        assert result.stdout.split() == ["0o660", group]


@pytest.mark.skipif(not _can_rebuild_the_sandbox(), reason="needs root, unshare and setpriv")
def test_under_the_units_proc_the_cpu_model_still_tells_this_cpu_apart(tmp_path):
    """``ProcSubset=pid`` hides ``/proc/cpuinfo``; the serving probe's cache key must still
    name the CPU, not fall back to ``x86_64`` (alike on every host a disk could move to), and
    name it as a shell does (``corticast doctor``, whose record the daemon then uses)."""
    umask, filter_file = _unit_filter(tmp_path)
    command = [
        sys.executable,
        "-c",
        "from service.inference import host; print(host.facts()['cpu'])",
    ]
    result = subprocess.run(
        sandboxed(command, filter_file=filter_file, umask=umask, hide_proc=True),
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    inside = result.stdout.strip()
    assert inside and inside not in (platform.machine(), platform.processor()), inside
    assert inside == host.facts()["cpu"]  # here, /proc/cpuinfo shown
