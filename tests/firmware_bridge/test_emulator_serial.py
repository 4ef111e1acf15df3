"""The firmware emulator on a serial port (a real pty) whose far end goes away and comes back:
it says so once an interval, not once per poll, and serves the port again when it returns."""

from __future__ import annotations

import logging
import os
import select
import time

from firmware_bridge.config import BridgeSettings
from firmware_bridge.emulator import FirmwareEmulator
from firmware_bridge.frame_decoder import FrameDecoder
from firmware_bridge.messages import Ack, Heartbeat, encode_message, parse_message
from firmware_bridge.wire import MessageType

from ._pty_device import pty_at
from .conftest import FakeClock


def _heartbeat_answered(master: int) -> bool:
    """Send HEARTBEATs from the host's end until one is ACKed (the emulator may still be
    waiting to reopen its port); False if none is within 10 s."""
    decoder, deadline = FrameDecoder(), time.monotonic() + 10.0
    while time.monotonic() < deadline:
        os.write(master, encode_message(Heartbeat(0), 1))
        if not select.select([master], [], [], 0.1)[0]:
            continue
        try:
            data = os.read(master, 100)
        except OSError:  # EIO: the emulator has not opened its end (yet)
            continue
        for item in decoder.feed(data):
            return parse_message(item) == Ack(MessageType.HEARTBEAT, False, 0)
    return False


def test_a_lost_serial_port_is_warned_about_once_an_interval_and_served_again(tmp_path, caplog):
    path = tmp_path / "ttyHost"
    master = pty_at(path)
    emulator = FirmwareEmulator(
        BridgeSettings(transport="serial", serial_port=str(path)), clock=FakeClock()
    )
    with emulator, caplog.at_level(logging.WARNING, logger="corticast.emulator"):
        assert _heartbeat_answered(master)
        os.close(master)  # the host's end goes away
        time.sleep(0.2)  # ~20 polls of the lost port, each a failure
        master = pty_at(path)  # and comes back under the same name
        assert _heartbeat_answered(master)
    os.close(master)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("link error")]
    assert len(lines) == 1, lines  # the emulator's clock did not move: one interval
