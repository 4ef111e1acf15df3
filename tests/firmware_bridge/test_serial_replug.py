"""A USB-serial adapter unplugged and plugged back under the same name, on a real pty: the
bridge disarms when the port fails, reopens it by itself, and stays disarmed (arming again
is the operator's)."""

from __future__ import annotations

from firmware_bridge.config import BridgeSettings, EmulatorSettings
from firmware_bridge.emulator import FirmwareEmulator
from firmware_bridge.stimulation_bridge import StimulationBridge

from ._pty_device import PtyDevice
from .conftest import wait_until


def test_an_unplugged_serial_port_disarms_and_is_reopened_disarmed(scratch):
    emulator = FirmwareEmulator(
        BridgeSettings(transport="serial"), EmulatorSettings(heartbeat_timeout_s=0.5)
    )
    device = PtyDevice(emulator, scratch / "ttyStim")
    link = BridgeSettings(
        transport="serial",
        serial_port=str(device.path),
        dry_run=False,
        ack_timeout_s=1.0,  # generous: only a hang would reach it
        heartbeat_period_s=0.02,
        audit_log=scratch / "audit.jsonl",
    )
    try:
        with StimulationBridge(link) as bridge:
            bridge.arm()
            assert emulator.armed
            device.unplug()
            wait_until(lambda: not bridge.armed)
            assert "serial" in bridge.status().last_disarm_reason
            wait_until(lambda: not bridge.status().connected)
            device.plug()
            wait_until(lambda: bridge.status().connected)
            wait_until(lambda: not emulator.armed)  # its watchdog, or the host's DISARM
            assert not bridge.armed
            assert bridge.status().last_disarm_cause == "fault"
            bridge.arm()  # the operator's to do, and it works on the reopened port
            assert emulator.armed and bridge.armed
    finally:
        device.close()
