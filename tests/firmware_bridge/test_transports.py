"""Transports on real ports and sockets: pyserial's loop:// and socket://, UDP and TCP on
127.0.0.1. Each moves frames intact, times out quietly, fails loudly (a peer that hangs up
too), closes idempotently; a TCP client backs off before reconnecting to a failing peer, and a
serial port that failed (a pty whose other end closed) is reopened after the same back-off."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from firmware_bridge._connect import open_transport
from firmware_bridge.config import BridgeSettings
from firmware_bridge.errors import TransportError
from firmware_bridge.frame_decoder import FrameDecoder
from firmware_bridge.messages import Heartbeat, Stimulate, encode_message
from firmware_bridge.serial_transport import SerialTransport
from firmware_bridge.tcp_transport import TcpTransport
from firmware_bridge.udp_transport import UdpTransport
from firmware_bridge.wire import Frame
from tests._many_descriptors import past_select_s_limit

from ._pty_device import pty_at

BIG = encode_message(Stimulate(tuple(range(360)), 10, 100, 10, 10, 1e-4, 1, 0), 1)
SMALL = encode_message(Heartbeat(0), 2)


def _receive_frames(transport, count: int, timeout: float = 2.0) -> list[Frame]:
    decoder = FrameDecoder(datagram=transport.datagram)
    frames: list[Frame] = []
    for _ in range(200):
        data = transport.receive(timeout)
        frames += [f for f in decoder.feed(data) if isinstance(f, Frame)] if data else []
        if len(frames) >= count:
            break
    return frames


def test_serial_loopback_moves_frames_intact():
    with SerialTransport.open("loop://", 115_200) as port:
        assert port.receive(0.01) == b""
        port.send(BIG)
        port.send(SMALL)
        frames = _receive_frames(port, 2)
    assert [f.sequence for f in frames] == [1, 2]
    assert port.closed


def test_serial_open_failure_names_the_port():
    with pytest.raises(TransportError, match="cannot open serial port '/dev/corticast-none'"):
        SerialTransport.open("/dev/corticast-none")


def test_udp_round_trip_and_reply_to_the_last_sender():
    with (
        UdpTransport.bind("127.0.0.1", 0) as device,
        UdpTransport.connect("127.0.0.1", device.local_address[1]) as host,
    ):
        device.send(SMALL)  # nobody has spoken yet: dropped, not an error
        host.send(BIG)
        assert device.receive(2.0) == BIG
        device.send(SMALL)
        assert host.receive(2.0) == SMALL
        assert host.receive(0.01) == b""


def test_udp_to_a_port_nobody_listens_on_fails_as_a_transport_error():
    with UdpTransport.bind("127.0.0.1", 0) as probe:
        port = probe.local_address[1]
    with UdpTransport.connect("127.0.0.1", port) as host:
        host.send(SMALL)
        with pytest.raises(TransportError, match="refused"):
            host.receive(1.0)


def test_tcp_client_connects_lazily_and_reconnects_after_the_server_drops_it():
    with TcpTransport.listen("127.0.0.1", 0) as server:
        client = TcpTransport.connect("127.0.0.1", server.local_address[1])
        assert not client.connected and client.connection_id == 0
        with pytest.raises(TransportError, match=r"TCP client is not connected to 127\.0\.0\.1"):
            client.receive(0.01)  # nothing can arrive: an empty read would let a caller spin
        client.send(BIG)
        assert client.connection_id == 1
        frames = _receive_frames(server, 1)
        assert [f.sequence for f in frames] == [1]
        server.send(SMALL)
        assert [f.sequence for f in _receive_frames(client, 1)] == [2]
        client.close()
        client.close()
        client = TcpTransport.connect("127.0.0.1", server.local_address[1])
        client.send(SMALL)  # the server takes the newest connection
        assert [f.sequence for f in _receive_frames(server, 1)] == [2]
        client.close()


def test_tcp_moves_frames_on_sockets_numbered_past_select_s_limit():
    """A daemon's process may hold more than 1024 descriptors (a unit raising LimitNOFILE,
    many subscribers connected): ``select.select`` refuses any numbered 1024 or above with a
    ValueError, which the bridge's reads did not expect, so a stimulator link opened then
    failed at its first read."""
    with (
        past_select_s_limit(),
        TcpTransport.listen("127.0.0.1", 0) as server,
        TcpTransport.connect("127.0.0.1", server.local_address[1]) as client,
    ):
        client.send(SMALL)
        assert [f.sequence for f in _receive_frames(server, 1)] == [2]
        server.send(BIG)
        assert [f.sequence for f in _receive_frames(client, 1)] == [1]


def test_a_serial_port_numbered_past_select_s_limit_moves_frames_and_times_out_quietly(tmp_path):
    """The loop's process may hold more than 1024 descriptors, and pyserial's port (and its
    ``PosixPollSerial``, whose read also fails on every wait that times out) raised ValueError
    on the first read or write of a port numbered past them."""
    with past_select_s_limit():
        master = pty_at(tmp_path / "tty")
        try:
            with SerialTransport.open(str(tmp_path / "tty")) as port:
                assert port.receive(0.01) == b""
                port.send(BIG)
                os.write(master, BIG + SMALL)
                assert [f.sequence for f in _receive_frames(port, 2)] == [1, 2]
                assert port.receive(0.01) == b""
            arrived = b""
            while len(arrived) < len(BIG):
                arrived += os.read(master, 4096)
            assert arrived == BIG
        finally:
            os.close(master)


def test_a_serial_url_past_select_s_limit_fails_as_a_transport_error(tmp_path):
    """pyserial's URL handlers wait with ``select.select``: past its limit a port read is a
    port failing (the bridge disarms and opens it again), never a ValueError out of the
    transport, and a socket:// port that fails while opening is closed, not left open."""
    with past_select_s_limit():
        master = pty_at(tmp_path / "tty")
        try:
            with (
                SerialTransport.open(f"spy://{tmp_path / 'tty'}") as port,
                pytest.raises(TransportError, match=r"serial read failed: .*out of range"),
            ):
                port.receive(0.01)
        finally:
            os.close(master)
        with TcpTransport.listen("127.0.0.1", 0) as server:
            url = f"socket://127.0.0.1:{server.local_address[1]}"
            with pytest.raises(TransportError, match=r"cannot open serial port .*out of range"):
                SerialTransport.open(url)


def test_tcp_connect_failure_is_a_transport_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = TcpTransport.connect("127.0.0.1", port, timeout_s=0.5)
    with pytest.raises(TransportError, match=f"cannot connect to TCP 127.0.0.1:{port}"):
        client.send(SMALL)
    client.close()


def test_serial_over_socket_url_talks_to_a_tcp_server():
    with TcpTransport.listen("127.0.0.1", 0) as server:
        port = SerialTransport.open(f"socket://127.0.0.1:{server.local_address[1]}")
        with port:
            port.send(BIG)
            assert [f.sequence for f in _receive_frames(server, 1)] == [1]
            server.send(BIG)
            assert [f.sequence for f in _receive_frames(port, 1)] == [1]


@pytest.mark.parametrize("kind", ["udp", "tcp", "serial"])
def test_every_transport_refuses_use_after_close_and_closes_idempotently(kind):
    settings = BridgeSettings(transport=kind, serial_port="loop://", port=47_999)
    transport = open_transport(settings, role="host")
    transport.close()
    transport.close()
    assert transport.closed
    with pytest.raises(TransportError, match="is closed"):
        transport.send(SMALL)
    with pytest.raises(TransportError, match="is closed"):
        transport.receive(0.01)


def test_a_tcp_peer_that_hangs_up_is_a_transport_error_on_either_side():
    with TcpTransport.listen("127.0.0.1", 0) as server:
        port = server.local_address[1]
        client = TcpTransport.connect("127.0.0.1", port)
        client.send(SMALL)
        assert [f.sequence for f in _receive_frames(server, 1)] == [2]
        assert server.connection_id == 1
        server.send(SMALL)
        assert [f.sequence for f in _receive_frames(client, 1)] == [2]

        client.close()  # the host goes away: the device's next read says so
        with pytest.raises(TransportError, match=r"TCP peer 127\.0\.0\.1:\d+ closed the conn"):
            _receive_frames(server, 1)
        with TcpTransport.connect("127.0.0.1", port) as again:
            again.send(SMALL)  # ...and it serves the next connection
            assert [f.sequence for f in _receive_frames(server, 1)] == [2]
            assert server.connection_id == 2

            server.close()  # the device goes away: the host's next read says so
            with pytest.raises(TransportError, match=f"TCP peer 127.0.0.1:{port} closed"):
                again.receive(2.0)
            assert not again.connected


def test_a_tcp_server_drops_a_peer_that_stops_reading_instead_of_blocking_on_it():
    """The emulator's one thread sends the replies and runs the heartbeat watchdog: a peer
    that sends commands and never reads their replies (any local user can connect) fills the
    socket's buffers, and a send with no time limit then blocked that thread for good, the
    device armed, its watchdog never checked again and stop() never returning."""
    server = TcpTransport.listen("127.0.0.1", 0, timeout_s=0.2)
    with server, socket.create_connection(server.local_address) as reader_that_never_reads:
        reader_that_never_reads.sendall(SMALL)
        assert [f.sequence for f in _receive_frames(server, 1)] == [2]
        outcome: list[BaseException] = []

        def flood() -> None:
            try:
                for _ in range(1000):  # far more than any socket buffers hold
                    server.send(bytes(64 * 1024))
            except TransportError as err:
                outcome.append(err)

        sending = threading.Thread(target=flood, daemon=True)
        sending.start()
        sending.join(10.0)
        assert not sending.is_alive(), "send still blocked on a peer that does not read"
        assert "TCP send failed" in str(outcome[0])
        assert not server.connected  # dropped: the next connection is served


def test_a_tcp_client_backs_off_from_a_peer_that_hangs_up_before_saying_anything(clock):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        client = TcpTransport(("127.0.0.1", port), clock=clock)

        def connection_dropped_at_once() -> None:
            client.send(SMALL)
            conn, _ = listener.accept()
            conn.close()  # unread bytes: the close may come as a reset
            with pytest.raises(TransportError, match=r"closed the connection|reset by peer"):
                client.receive(5.0)

        connection_dropped_at_once()
        for failures, wait_s in ((1, 0.1), (2, 0.2), (3, 0.4)):
            with pytest.raises(
                TransportError,
                match=f"not reconnecting to TCP 127.0.0.1:{port} for another {wait_s:.2f} s, "
                f"after {failures} failed connection",
            ):
                client.send(SMALL)  # refused without connecting: nothing to accept
            clock.advance(wait_s)
            connection_dropped_at_once()

        clock.advance(0.8)
        client.send(SMALL)  # a peer that answers resets the back-off...
        conn, _ = listener.accept()
        conn.sendall(SMALL)
        assert [f.sequence for f in _receive_frames(client, 1)] == [2]
        conn.close()
        with pytest.raises(TransportError, match=r"closed the connection|reset by peer"):
            client.receive(5.0)
        client.send(SMALL)  # ...so after it hangs up the client reconnects at once
        listener.accept()[0].close()
        client.close()


def test_a_tcp_client_backs_off_up_to_two_seconds_from_a_device_that_is_down(clock):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = TcpTransport(("127.0.0.1", port), clock=clock)
    for wait_s in (0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0):
        with pytest.raises(TransportError, match="cannot connect"):
            client.send(SMALL)
        with pytest.raises(TransportError, match=f"for another {wait_s:.2f} s"):
            client.send(SMALL)
        clock.advance(wait_s)
    client.close()


def test_a_failed_serial_port_is_reopened_after_a_back_off_as_a_new_stream(tmp_path, clock):
    path = tmp_path / "ttyStim"
    master = pty_at(path)
    port = SerialTransport.open(str(path), clock=clock)
    port.send(SMALL)
    assert os.read(master, 100) == SMALL
    os.write(master, SMALL)
    assert [f.sequence for f in _receive_frames(port, 1)] == [2]
    os.close(master)  # unplugged
    with pytest.raises(TransportError, match="serial read failed"):
        port.receive(0.01)
    for failures, wait_s in ((1, 0.1), (2, 0.2)):
        with pytest.raises(TransportError, match=f"cannot open serial port '{path}'"):
            port.send(SMALL)  # the port had carried data: tried again at once, but it is gone
        with pytest.raises(
            TransportError,
            match=f"not reopening serial port '{path}' for another {wait_s:.2f} s, "
            f"after {failures} failure",
        ):
            port.receive(0.01)  # nor is it tried again until the back-off is over
        clock.advance(wait_s)
    master = pty_at(path)  # plugged back in, under the same name
    assert port.connection_id == 1
    port.send(SMALL)
    assert port.connection_id == 2  # a new byte stream: decoders drop the old one's bytes
    assert os.read(master, 100) == SMALL
    os.write(master, BIG)
    assert [f.sequence for f in _receive_frames(port, 1)] == [1]
    port.close()
    os.close(master)
