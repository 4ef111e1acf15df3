"""The bridge and the firmware emulator over real sockets on 127.0.0.1 (UDP, TCP, and pyserial
speaking socket://): arm, stimulate (the emulator logs the train), refractory block, heartbeats
keep the device armed, heartbeat loss makes it disarm itself, and the bridge notices. A relay
that holds frames back shows that a STIMULATE delivered late, or in a later arm session, is
refused; TCP reconnects show that a peer hanging up fails the exchange at once (no spinning)
and that bytes a dead connection left behind never delay the next connection's frames."""

from __future__ import annotations

import json
import socket
import threading
import time
from contextlib import contextmanager

import pytest

from firmware_bridge.audit_log import read_audit_log
from firmware_bridge.config import BridgeSettings, EmulatorSettings, InterlockSettings
from firmware_bridge.emulator import FirmwareEmulator, run_emulator
from firmware_bridge.errors import BridgeError, ErrorCode, TransportError
from firmware_bridge.frame_decoder import FrameDecoder
from firmware_bridge.loop_health import LoopHealth
from firmware_bridge.messages import Arm, DeviceStatus, Nack, encode_message, parse_message
from firmware_bridge.stimulation_bridge import StimulationBridge
from firmware_bridge.stimulation_request import StimulationRequest
from firmware_bridge.tcp_transport import TcpTransport
from firmware_bridge.udp_transport import UdpTransport
from firmware_bridge.wire import VERSION, Frame, MessageType, clock_ms, encode_raw

from ._holding_relay import HoldingRelay
from .conftest import FakeClock, wait_until

OK = LoopHealth(0.005, 0, True)
REQUEST = StimulationRequest((10, 11, 12), 40, 100, 130, 200, 2.5e-4)


@contextmanager
def rig(kind: str, scratch, *, device_clock=None, device_settings=None, **bridge_kwargs):
    """An emulator serving on a free port and a bridge connected to it over ``kind``."""
    server = (
        UdpTransport.bind("127.0.0.1", 0) if kind == "udp" else TcpTransport.listen("127.0.0.1", 0)
    )
    port = server.local_address[1]
    device_settings = device_settings or EmulatorSettings(
        heartbeat_timeout_s=0.3, pulse_log=scratch / "pulses.jsonl"
    )
    emulator = FirmwareEmulator(
        BridgeSettings(transport="udp" if kind == "udp" else "tcp"),
        device_settings,
        transport=server,
        clock=device_clock or time.monotonic,
    )
    link = BridgeSettings(
        transport=kind,
        port=port,
        serial_port=f"socket://127.0.0.1:{port}",
        dry_run=False,
        ack_timeout_s=1.0,  # generous: only a hang would reach it
        heartbeat_period_s=0.02,
        audit_log=scratch / "audit.jsonl",
    )
    try:
        with emulator, StimulationBridge(link, **bridge_kwargs) as bridge:
            yield bridge, emulator
    finally:
        server.close()


@pytest.mark.parametrize("kind", ["udp", "tcp", "serial"])
def test_arm_stimulate_refractory_then_heartbeat_loss(kind, scratch):
    host_clock, device_clock = FakeClock(), FakeClock()
    with rig(
        kind,
        scratch,
        device_clock=device_clock,
        interlocks=InterlockSettings(refractory_s=2.0),
        clock=host_clock,
        heartbeat_thread=False,  # the test beats by hand, against the device's fake clock
    ) as (bridge, emulator):
        bridge.arm()
        assert emulator.armed

        sent = bridge.request_stimulation(REQUEST, OK)
        assert sent.sent
        (pulse,) = emulator.pulses
        assert pulse["sequence"] == sent.sequence and pulse["channels"] == [10, 11, 12]

        host_clock.advance(0.1)
        blocked = bridge.request_stimulation(REQUEST, OK)
        assert blocked.outcome == "blocked" and blocked.interlocks == ("refractory",)
        assert len(emulator.pulses) == 1

        for _ in range(5):  # 1 s of device time, > 3 watchdog timeouts, kept alive by beats
            device_clock.advance(0.2)
            assert bridge.heartbeat()
            assert emulator.armed

        device_clock.advance(0.31)  # heartbeats stop: the device disarms itself...
        wait_until(lambda: not emulator.armed)
        assert emulator.status().disarm_cause == 2  # HEARTBEAT_TIMEOUT
        assert bridge.armed  # ...and the host cannot know until it next hears from it

        assert bridge.heartbeat()  # acknowledged, with the device's armed flag at 0
        status = bridge.status()
        assert not status.armed and status.device_armed is False
        assert "device reports itself disarmed" in status.last_disarm_reason
        host_clock.advance(10)
        assert bridge.request_stimulation(REQUEST, OK).interlocks == ("armed",)

    logged = [json.loads(x) for x in (scratch / "pulses.jsonl").read_text().splitlines()]
    assert [p["sequence"] for p in logged] == [sent.sequence]
    events = [
        (r["event"], r.get("outcome") or r.get("cause"))
        for r in read_audit_log(scratch / "audit.jsonl")
    ]
    assert events == [
        ("start", None),
        ("arm", None),
        ("transmit", None),
        ("decision", "sent"),
        ("decision", "blocked"),
        ("disarm", "fault"),
        ("decision", "blocked"),
        ("close", None),
    ]


def test_the_heartbeat_thread_keeps_the_device_armed_past_its_timeout(scratch):
    device_clock = FakeClock()
    settings = EmulatorSettings(heartbeat_timeout_s=0.5)
    with rig("udp", scratch, device_clock=device_clock, device_settings=settings) as (
        bridge,
        emulator,
    ):
        bridge.arm()
        for _ in range(10):  # 2 s of device time: four watchdog timeouts
            device_clock.advance(0.2)
            frames = emulator.counters["frames_ok"]
            wait_until(lambda frames=frames: emulator.counters["frames_ok"] > frames)
            assert emulator.armed and bridge.armed  # the heartbeat thread's beats kept it so
        assert bridge.status().connected


def test_the_device_enforces_its_own_limits_and_its_refusal_disarms_the_host(scratch):
    device = EmulatorSettings(max_amplitude_ua=30, heartbeat_timeout_s=5)
    with rig("udp", scratch, device_settings=device, heartbeat_thread=False) as (
        bridge,
        emulator,
    ):
        bridge.arm()
        decision = bridge.request_stimulation(REQUEST, OK)  # 40 µA: fine for the host
        assert decision.outcome == "rejected"
        assert decision.error_code == ErrorCode.OUT_OF_BOUNDS
        assert not bridge.armed and not emulator.armed
        assert emulator.pulses == ()


def test_a_device_armed_in_a_session_the_host_never_learnt_disarms_both_at_the_next_beat(
    scratch,
):
    device = EmulatorSettings(heartbeat_timeout_s=5)
    with rig("udp", scratch, device_settings=device, heartbeat_thread=False) as (
        bridge,
        emulator,
    ):
        bridge.arm()
        learnt = emulator.session
        # An ARM the host did not send this session (held on the link, replayed, or the device
        # rebooted and took one): the device closes the host's session and opens another.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as replayer:
            replayer.settimeout(10)
            replayer.sendto(encode_message(Arm(clock_ms(time.monotonic())), 7), emulator.address)
            replayer.recv(64)
        assert emulator.armed and emulator.session != learnt and bridge.armed

        bridge.heartbeat()  # the ACK says armed, but in a session no STIMULATE of ours can match
        status = bridge.status()
        assert not status.armed
        assert "session" in status.last_disarm_reason
        assert not emulator.armed  # and the device was told to disarm


def test_query_device_reports_the_devices_own_counters(scratch):
    with rig("tcp", scratch, heartbeat_thread=False) as (bridge, _emulator):
        bridge.arm()
        bridge.request_stimulation(REQUEST, OK)
        status = bridge.query_device()
    assert status.armed and status.trains_delivered == 1
    assert status.minute_budget_left == 9


def test_run_emulator_serves_until_stopped(scratch):
    with UdpTransport.bind("127.0.0.1", 0) as probe:
        port = probe.local_address[1]
    link = BridgeSettings(port=port, dry_run=False, audit_log=scratch / "audit.jsonl")
    stop = threading.Event()
    result: list[FirmwareEmulator] = []
    runner = threading.Thread(
        target=lambda: result.append(run_emulator(link, EmulatorSettings(), stop=stop))
    )
    runner.start()
    try:
        with StimulationBridge(link, heartbeat_thread=False) as bridge:
            wait_until(lambda: _try_arm(bridge))
            assert bridge.request_stimulation(REQUEST, OK).sent
    finally:
        stop.set()
        runner.join(10)
    assert not runner.is_alive()
    assert len(result[0].pulses) == 1 and not result[0].running


def _try_arm(bridge: StimulationBridge) -> bool:
    """The emulator thread may still be binding its socket."""
    try:
        bridge.arm()
    except Exception:
        return False
    return True


# ------------------------------------------------------------------ a link that holds frames
@contextmanager
def relayed_rig(scratch, *, device_settings, ack_timeout_s):
    """An emulator on UDP, a holding relay in front of it, and a bridge that talks through the
    relay (no heartbeat thread: the test decides what crosses the link)."""
    server = UdpTransport.bind("127.0.0.1", 0)
    emulator = FirmwareEmulator(BridgeSettings(transport="udp"), device_settings, transport=server)
    relay = HoldingRelay(server.local_address[1])
    link = BridgeSettings(
        transport="udp",
        port=relay.port,
        dry_run=False,
        ack_timeout_s=ack_timeout_s,
        audit_log=scratch / "audit.jsonl",
    )
    try:
        with (
            emulator,
            StimulationBridge(link, clock=FakeClock(), heartbeat_thread=False) as bridge,
        ):
            yield bridge, emulator, relay
    finally:
        relay.close()
        server.close()


def _parsed(reply: bytes):
    (frame,) = FrameDecoder(datagram=True).feed(reply)
    return parse_message(frame)


def test_a_stimulate_held_across_disarm_and_rearm_is_refused(scratch):
    with relayed_rig(
        scratch, device_settings=EmulatorSettings(heartbeat_timeout_s=5.0), ack_timeout_s=0.5
    ) as (bridge, emulator, relay):
        bridge.arm()
        relay.hold_next(MessageType.STIMULATE)
        decision = bridge.request_stimulation(REQUEST, OK)
        assert decision.outcome == "failed"  # no ACK: the host gave up on it, and disarmed
        assert not bridge.armed and not emulator.armed
        bridge.arm()  # a new arm session
        held = relay.wait_held()
        relay.release()
        reply = _parsed(relay.wait_reply(held))
        assert emulator.pulses == (), "the held train was delivered in the new session"
        assert isinstance(reply, Nack) and reply.code == ErrorCode.SESSION_MISMATCH


def test_a_stimulate_held_past_the_deadline_in_its_own_session_is_refused(scratch):
    device = EmulatorSettings(heartbeat_timeout_s=5.0)
    with relayed_rig(scratch, device_settings=device, ack_timeout_s=5.0) as (
        bridge,
        emulator,
        relay,
    ):
        bridge.arm()
        # Ten times the device's deadline; the host, which waits up to 5 s, is still waiting.
        relay.hold_next(MessageType.STIMULATE, release_after_s=1.0)
        decision = bridge.request_stimulation(REQUEST, OK)
        assert emulator.pulses == (), "the late train was delivered"
        assert decision.outcome == "rejected" and decision.error_code == ErrorCode.EXPIRED
        assert not bridge.armed and not emulator.armed


def test_an_on_time_stimulate_through_the_relay_is_delivered(scratch):
    with relayed_rig(
        scratch, device_settings=EmulatorSettings(heartbeat_timeout_s=5.0), ack_timeout_s=1.0
    ) as (bridge, emulator, _relay):
        bridge.arm()
        decision = bridge.request_stimulation(REQUEST, OK)
        assert decision.sent
        (pulse,) = emulator.pulses
        assert pulse["sequence"] == decision.sequence


# ------------------------------------------------------------------ TCP reconnects
class _CountingTcp(TcpTransport):
    """The host's TCP client, counting its receive() calls."""

    receive_calls = 0

    def receive(self, timeout: float) -> bytes:
        self.receive_calls += 1
        return super().receive(timeout)


def test_a_tcp_peer_hanging_up_fails_the_exchange_at_once_and_a_later_one_reconnects(scratch):
    server = TcpTransport.listen("127.0.0.1", 0)
    port = server.local_address[1]
    device = EmulatorSettings(heartbeat_timeout_s=5.0)
    emulator = FirmwareEmulator(BridgeSettings(transport="tcp"), device, transport=server)
    host_clock = FakeClock()
    client = _CountingTcp(("127.0.0.1", port))
    link = BridgeSettings(
        transport="tcp", port=port, dry_run=False, ack_timeout_s=2.0, audit_log=scratch / "a.jsonl"
    )
    bridge = StimulationBridge(link, transport=client, clock=host_clock, heartbeat_thread=False)
    with bridge:
        with emulator:
            bridge.arm()
            assert bridge.request_stimulation(REQUEST, OK).sent
        server.close()  # the device goes away: its end of the connection closes

        host_clock.advance(10)
        client.receive_calls = 0
        decision = bridge.request_stimulation(REQUEST, OK)
        assert client.receive_calls <= 3, f"{client.receive_calls} receive() calls"
        assert decision.outcome == "failed" and "closed" in decision.reason
        assert not bridge.armed and not bridge.status().connected

        server = TcpTransport.listen("127.0.0.1", port)  # the device comes back
        emulator = FirmwareEmulator(BridgeSettings(transport="tcp"), device, transport=server)
        with emulator:
            wait_until(lambda: _try_arm(bridge))
            host_clock.advance(10)
            assert bridge.request_stimulation(REQUEST, OK).sent
        server.close()


def test_leftover_bytes_of_a_dead_connection_do_not_hold_back_the_next_hosts_arm(scratch):
    device = EmulatorSettings(heartbeat_timeout_s=5.0)
    with rig("tcp", scratch, device_settings=device, heartbeat_thread=False) as (
        bridge,
        emulator,
    ):
        port = emulator.address[1]
        # A host that died mid-frame: a header declaring 700 payload bytes, 20 of them sent.
        partial = encode_raw(MessageType.STIMULATE, 9, bytes(20), version=VERSION, length=700)
        with socket.create_connection(("127.0.0.1", port)) as dead:
            dead.sendall(partial[:30])
            dead.shutdown(socket.SHUT_WR)
            dead.settimeout(10)
            assert dead.recv(1) == b""  # the device read it all and closed its end
        bridge.arm()  # the first frame of the new connection is answered at once
        assert emulator.armed


def test_leftover_bytes_of_a_dead_connection_do_not_hold_back_the_devices_reply(scratch):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        status = DeviceStatus(False, 0, 0, 10, 1000, 1, 0, 5)
        partial = encode_raw(MessageType.STIMULATE, 9, bytes(20), version=VERSION, length=700)

        def device() -> None:
            for reply_whole in (False, True):
                conn, _ = listener.accept()
                with conn:
                    decoder = FrameDecoder()
                    frames = []
                    while not frames:
                        frames = [f for f in decoder.feed(conn.recv(4096)) if isinstance(f, Frame)]
                    if reply_whole:
                        conn.sendall(encode_message(status, frames[0].sequence))
                        conn.recv(4096)  # until the host hangs up
                    else:
                        conn.sendall(partial[:30])  # dies mid-frame

        serving = threading.Thread(target=device, daemon=True)
        serving.start()
        link = BridgeSettings(
            transport="tcp", port=port, dry_run=False, ack_timeout_s=2.0, audit_log=scratch / "a"
        )
        with StimulationBridge(link, heartbeat_thread=False) as bridge:
            with pytest.raises(BridgeError):
                bridge.query_device()
            assert _retry(bridge.query_device) == status
        serving.join(10)


def _retry(call, timeout: float = 10.0):
    """``call()``'s result once it stops raising TransportError (a reconnect backing off)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
