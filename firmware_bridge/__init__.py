"""Wire protocol, transports and interlocks between corticast and the stimulator firmware.

The daemon talks to the stimulator through :class:`StimulationBridge` only: every request
passes the host interlocks, is framed (PROTOCOL.md), sent over serial, UDP or TCP, and must be
acknowledged in time; every decision is appended to an fsync'd audit log. The
:class:`FirmwareEmulator` plays the device, with its own interlocks, for the demo and tests.
"""

from firmware_bridge._connect import open_transport
from firmware_bridge.audit_log import AuditLog, audit_files, read_audit_history, read_audit_log
from firmware_bridge.bridge_metrics import BridgeMetrics
from firmware_bridge.bridge_status import BridgeStatus
from firmware_bridge.config import (
    CHARGE_DENSITY_CEILING_UC_CM2,
    MAX_ELECTRODE_AREA_CM2,
    N_ELECTRODES,
    BridgeSettings,
    EmulatorSettings,
    InterlockSettings,
)
from firmware_bridge.decision import Decision, Outcome
from firmware_bridge.emulator import FirmwareEmulator, run_emulator
from firmware_bridge.errors import BridgeClosedError
from firmware_bridge.frame_decoder import FrameDecoder
from firmware_bridge.interlocks import INTERLOCKS, Admission, Interlocks, Violation
from firmware_bridge.loop_health import LoopHealth
from firmware_bridge.messages import DeviceStatus, DisarmCause
from firmware_bridge.serial_transport import SerialTransport
from firmware_bridge.stimulation_bridge import Disarmed, StimulationBridge
from firmware_bridge.stimulation_request import StimulationRequest
from firmware_bridge.tcp_transport import TcpTransport
from firmware_bridge.transport import Transport
from firmware_bridge.udp_transport import UdpTransport

__all__ = [
    "CHARGE_DENSITY_CEILING_UC_CM2",
    "INTERLOCKS",
    "MAX_ELECTRODE_AREA_CM2",
    "N_ELECTRODES",
    "Admission",
    "AuditLog",
    "BridgeClosedError",
    "BridgeMetrics",
    "BridgeSettings",
    "BridgeStatus",
    "Decision",
    "DeviceStatus",
    "DisarmCause",
    "Disarmed",
    "EmulatorSettings",
    "FirmwareEmulator",
    "FrameDecoder",
    "InterlockSettings",
    "Interlocks",
    "LoopHealth",
    "Outcome",
    "SerialTransport",
    "StimulationBridge",
    "StimulationRequest",
    "TcpTransport",
    "Transport",
    "UdpTransport",
    "Violation",
    "audit_files",
    "open_transport",
    "read_audit_history",
    "read_audit_log",
    "run_emulator",
]
