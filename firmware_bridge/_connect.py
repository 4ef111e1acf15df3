"""Open the transport the configuration names, for the host or for the device side."""

from __future__ import annotations

from typing import Literal

from firmware_bridge.config import BridgeSettings
from firmware_bridge.serial_transport import SerialTransport
from firmware_bridge.tcp_transport import TcpTransport
from firmware_bridge.transport import Transport
from firmware_bridge.udp_transport import UdpTransport


def open_transport(settings: BridgeSettings, *, role: Literal["host", "device"]) -> Transport:
    """The host connects to ``host:port``; the device (emulator) listens there. A serial port
    is the same on both sides.

    Raises
    ------
    TransportError
        If the port or socket cannot be opened.
    """
    if settings.transport == "serial":
        return SerialTransport.open(settings.serial_port, settings.baud_rate)
    if settings.transport == "tcp":
        if role == "host":
            return TcpTransport.connect(
                settings.host, settings.port, timeout_s=settings.connect_timeout_s
            )
        return TcpTransport.listen(settings.host, settings.port)
    if role == "host":
        return UdpTransport.connect(settings.host, settings.port)
    return UdpTransport.bind(settings.host, settings.port)
