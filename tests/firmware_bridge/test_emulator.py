"""The emulated firmware, driven byte-for-byte through :meth:`FirmwareEmulator.process` with an
injected clock: its own interlocks, its watchdog, its pulse log, and a property test that no
sequence of frames and timings makes it exceed its limits."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge._messages import (
    Ack,
    Arm,
    DeviceStatus,
    Disarm,
    DisarmCause,
    Heartbeat,
    Nack,
    StatusRequest,
    Stimulate,
    encode_message,
    parse_message,
)
from firmware_bridge._wire import MessageType, encode_frame
from firmware_bridge.config import BridgeSettings, EmulatorSettings
from firmware_bridge.emulator import FirmwareEmulator
from firmware_bridge.errors import ErrorCode
from firmware_bridge.frame_decoder import FrameDecoder
from firmware_bridge.udp_transport import UdpTransport

from .conftest import FakeClock

UDP = BridgeSettings(transport="udp")
GOOD = Stimulate((1, 2), 50, 100, 100, 100, 2.0**-12)


class Device:
    """An emulator fed whole datagrams, with the replies parsed back."""

    def __init__(self, settings: EmulatorSettings | None = None, transport=None):
        self.clock = FakeClock()
        self.emulator = FirmwareEmulator(UDP, settings, clock=self.clock, transport=transport)
        self.sequence = 0

    def send(self, message, sequence: int | None = None):
        self.sequence += 1
        return self.raw(encode_message(message, self.sequence if sequence is None else sequence))

    def raw(self, data: bytes):
        replies = self.emulator.process(data)
        decoder = FrameDecoder(datagram=True)
        return [parse_message(decoder.feed(r)[0]) for r in replies]


def _one(replies):
    (reply,) = replies
    return reply


def test_boots_disarmed_and_refuses_to_stimulate():
    device = Device()
    assert _one(device.send(GOOD)) == Nack(MessageType.STIMULATE, ErrorCode.NOT_ARMED, False)
    assert device.emulator.pulses == ()
    assert device.emulator.status().disarm_cause == DisarmCause.BOOT


def test_arm_stimulate_then_refractory_and_duplicate_are_refused(scratch):
    # Started on a real socket so that the pulse log is open; the test feeds process() itself.
    with UdpTransport.bind("127.0.0.1", 0) as socket_:
        device = Device(EmulatorSettings(pulse_log=scratch / "pulses.jsonl"), socket_)
        with device.emulator:
            assert _one(device.send(Arm())) == Ack(MessageType.ARM, True)
            assert _one(device.send(GOOD, sequence=100)) == Ack(MessageType.STIMULATE, True)
            device.clock.advance(0.4)
            device.send(Heartbeat())
            assert _one(device.send(GOOD)).code == ErrorCode.REFRACTORY
            for _ in range(3):
                device.clock.advance(0.4)
                device.send(Heartbeat())
            assert _one(device.send(GOOD, sequence=100)).code == ErrorCode.DUPLICATE_SEQUENCE
            assert _one(device.send(GOOD, sequence=101)) == Ack(MessageType.STIMULATE, True)
    assert len(device.emulator.pulses) == 2
    logged, _ = [json.loads(line) for line in (scratch / "pulses.jsonl").read_text().splitlines()]
    assert logged == device.emulator.pulses[0]
    assert logged["sequence"] == 100 and logged["channels"] == [1, 2]
    assert logged["charge_density_uc_cm2"] == pytest.approx(50 * 100e-6 * 4096)
    assert logged["pulses"] == 10


@pytest.mark.parametrize(
    ("stimulate", "code"),
    [
        (Stimulate((), 50, 100, 100, 100, 2.0**-12), ErrorCode.BAD_CHANNELS),
        (Stimulate((1, 1), 50, 100, 100, 100, 2.0**-12), ErrorCode.BAD_CHANNELS),
        (Stimulate((360,), 50, 100, 100, 100, 2.0**-12), ErrorCode.BAD_CHANNELS),
        (Stimulate(tuple(range(17)), 50, 100, 100, 100, 2.0**-12), ErrorCode.BAD_CHANNELS),
        (Stimulate((1,), 201, 100, 100, 100, 2.0**-12), ErrorCode.OUT_OF_BOUNDS),
        (Stimulate((1,), 50, 19, 100, 100, 2.0**-12), ErrorCode.OUT_OF_BOUNDS),
        (Stimulate((1,), 50, 100, 334, 100, 2.0**-12), ErrorCode.OUT_OF_BOUNDS),
        (Stimulate((1,), 50, 100, 100, 1001, 2.0**-12), ErrorCode.OUT_OF_BOUNDS),
        (Stimulate((1,), 50, 100, 100, 100, float("nan")), ErrorCode.ELECTRODE_AREA),
        (Stimulate((1,), 50, 100, 100, 100, -1.0), ErrorCode.ELECTRODE_AREA),
        (Stimulate((1,), 50, 100, 100, 100, 1e-3), ErrorCode.ELECTRODE_AREA),
        (Stimulate((1,), 62, 100, 100, 100, 2.0**-12), ErrorCode.CHARGE_DENSITY),
    ],
)
def test_the_device_refuses_each_bad_train_with_its_own_code(stimulate, code):
    device = Device()
    device.send(Arm())
    assert _one(device.send(stimulate)) == Nack(MessageType.STIMULATE, code, True)
    assert device.emulator.pulses == ()


def test_two_phases_must_fit_in_one_period():
    device = Device(EmulatorSettings(max_frequency_hz=1000))
    device.send(Arm())
    assert _one(device.send(Stimulate((1,), 1, 1000, 500, 10, 2.0**-12))).code == (
        ErrorCode.OUT_OF_BOUNDS
    )


def test_a_lower_configured_density_limit_is_enforced_by_the_device_too():
    device = Device(EmulatorSettings(charge_density_limit_uc_cm2=5))
    device.send(Arm())
    assert _one(device.send(GOOD)).code == ErrorCode.CHARGE_DENSITY  # 20.5 µC/cm²


def test_the_device_keeps_its_own_minute_and_day_budgets():
    device = Device(
        EmulatorSettings(
            refractory_s=1.5, max_trains_per_minute=2, max_trains_per_day=3, heartbeat_timeout_s=10
        )
    )
    device.send(Arm())
    codes = []
    for step in (0, 2, 2, 60, 2, 86_400):
        device.clock.advance(step)
        device.send(Arm())  # re-arms after the watchdog, so only the budgets are in play
        reply = _one(device.send(GOOD))
        codes.append(reply.code if isinstance(reply, Nack) else "ok")
    assert codes == ["ok", "ok", ErrorCode.BUDGET_MINUTE, "ok", ErrorCode.BUDGET_DAY, "ok"]


def test_the_watchdog_disarms_when_heartbeats_stop():
    device = Device(EmulatorSettings(heartbeat_timeout_s=0.5))
    device.send(Arm())
    for _ in range(5):
        device.clock.advance(0.4)
        assert _one(device.send(Heartbeat())) == Ack(MessageType.HEARTBEAT, True)
    device.clock.advance(0.51)
    assert device.emulator.check_watchdog() is True
    assert not device.emulator.armed
    status = _one(device.send(StatusRequest()))
    assert isinstance(status, DeviceStatus)
    assert (status.armed, status.disarm_cause) == (False, DisarmCause.HEARTBEAT_TIMEOUT)
    assert _one(device.send(Heartbeat())) == Ack(MessageType.HEARTBEAT, False)
    assert _one(device.send(GOOD)).code == ErrorCode.NOT_ARMED


def test_a_late_stimulate_is_refused_even_if_the_loop_has_not_checked_the_watchdog():
    device = Device(EmulatorSettings(heartbeat_timeout_s=0.5))
    device.send(Arm())
    device.clock.advance(0.6)
    assert _one(device.send(GOOD)).code == ErrorCode.NOT_ARMED


def test_disarm_is_obeyed_even_with_a_malformed_payload():
    device = Device()
    device.send(Arm())
    reply = _one(device.raw(encode_frame(MessageType.DISARM, 9, b"junk")))
    assert reply == Nack(MessageType.DISARM, ErrorCode.BAD_PAYLOAD, False)
    assert not device.emulator.armed
    assert device.emulator.status().disarm_cause == DisarmCause.HOST


def test_replies_sent_to_the_device_are_unexpected():
    device = Device()
    assert _one(device.send(Ack(1, True))).code == ErrorCode.UNEXPECTED_TYPE


def test_garbage_is_counted_and_logged_but_not_answered():
    device = Device()
    assert device.raw(b"\x00\x01\x02") == []
    assert device.emulator.counters["logged_errors"] == 1
    assert device.emulator.counters["frames_rejected"] == 1


def test_status_counts_frames_and_budgets():
    device = Device()
    device.send(Arm())
    device.send(GOOD)
    device.raw(b"junk")
    status = _one(device.send(StatusRequest()))
    assert status.trains_delivered == 1
    assert (status.minute_budget_left, status.day_budget_left) == (9, 999)
    assert (status.frames_ok, status.frames_rejected) == (3, 1)  # this request included


# ------------------------------------------------------------------ property
DEVICE_LIMITS = EmulatorSettings(
    refractory_s=1.2, max_trains_per_minute=3, max_trains_per_day=5, heartbeat_timeout_s=10
)

plausible_trains = st.builds(
    Stimulate,
    channels=st.sets(st.integers(0, 359), min_size=1, max_size=4).map(tuple),
    amplitude_ua=st.integers(1, 70),
    phase_width_us=st.integers(20, 200),
    frequency_hz=st.integers(1, 300),
    train_duration_ms=st.integers(1, 900),
    electrode_area_cm2=st.sampled_from([2.0**-12, 2.9e-4]),
)
wild_trains = st.builds(
    Stimulate,
    channels=st.lists(st.integers(0, 400), max_size=20).map(tuple),
    amplitude_ua=st.integers(0, 300),
    phase_width_us=st.integers(0, 1200),
    frequency_hz=st.integers(0, 400),
    train_duration_ms=st.integers(0, 1200),
    electrode_area_cm2=st.one_of(
        st.sampled_from([2.0**-12, 2.9e-4, 3e-4, float("nan"), float("inf"), 0.0, -1e-4]),
        st.floats(1e-6, 1e-3),
    ),
)
commands = st.one_of(
    st.sampled_from([Arm(), Arm(), Heartbeat(), Heartbeat(), Disarm(), StatusRequest()]),
    plausible_trains,
    plausible_trains,
    wild_trains,
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([0.0, 0.1, 1.19, 1.2, 5.0, 10.01, 30.0, 3600.0]), commands),
        max_size=80,
    )
)
def test_no_frame_sequence_makes_the_device_exceed_its_limits(sequence):
    device = Device(DEVICE_LIMITS)
    armed_since_heartbeat: float | None = None
    for dt, command in [(0.0, Arm()), *sequence]:
        device.clock.advance(dt)
        before = len(device.emulator.pulses)
        watchdog_expired = (
            armed_since_heartbeat is not None
            and device.clock.now - armed_since_heartbeat > DEVICE_LIMITS.heartbeat_timeout_s
        )
        _one(device.send(command))
        if isinstance(command, Arm | Heartbeat) and (
            isinstance(command, Arm) or armed_since_heartbeat is not None
        ):
            armed_since_heartbeat = device.clock.now
        if isinstance(command, Disarm):
            armed_since_heartbeat = None
        if len(device.emulator.pulses) > before:
            assert armed_since_heartbeat is not None and not watchdog_expired
    times = [p["clock"] for p in device.emulator.pulses]
    assert all(b - a >= 1.2 for a, b in itertools.pairwise(times))
    for t in times:
        assert sum(1 for u in times if t - 60 < u <= t) <= 3
        assert sum(1 for u in times if t - 86_400 < u <= t) <= 5
    for pulse in device.emulator.pulses:
        assert pulse["charge_density_uc_cm2"] <= 25.0
        assert 0 < pulse["electrode_area_cm2"] <= DEVICE_LIMITS.electrode_area_cm2
        assert len(set(pulse["channels"])) == len(pulse["channels"]) <= 16
        assert all(0 <= c < 360 for c in pulse["channels"])
        assert 1 <= pulse["amplitude_ua"] <= 200 and 20 <= pulse["phase_width_us"] <= 1000
