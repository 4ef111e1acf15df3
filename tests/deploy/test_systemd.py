"""deploy/systemd: the unit verifies, the user file parses, and the hardening keeps what a rig
needs (LSL multicast, the serial stimulator, the watchdog protocol the daemon speaks)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SYSTEMD = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
UNIT = SYSTEMD / "corticast.service"
INSTALLED_BINARY = "/opt/corticast/bin/corticast"


def _settings(path: Path) -> dict[str, list[str]]:
    """key -> every value it is given (systemd allows a key more than once)."""
    found: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_the_unit_and_its_gpu_drop_in_pass_systemd_analyze_verify(tmp_path):
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
