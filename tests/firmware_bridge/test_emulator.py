"""The emulated firmware, driven byte-for-byte through :meth:`FirmwareEmulator.process` with an
injected clock: its own interlocks, its watchdog, its arm sessions and command deadlines, its
pulse log, and a property test that no sequence of frames and timings makes it exceed its
limits."""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge._host_clock import HostClockOffset
from firmware_bridge.config import BridgeSettings, EmulatorSettings
from firmware_bridge.emulator import FirmwareEmulator
from firmware_bridge.errors import ErrorCode
from firmware_bridge.frame_decoder import FrameDecoder
from firmware_bridge.messages import (
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
from firmware_bridge.udp_transport import UdpTransport
from firmware_bridge.wire import CLOCK_MODULUS, MessageType, clock_ms, encode_frame

from .conftest import FakeClock

UDP = BridgeSettings(transport="udp")
GOOD = Stimulate((1, 2), 50, 100, 100, 100, 2.0**-12, session=0, host_time_ms=0)
ARM, BEAT = Arm(host_time_ms=0), Heartbeat(host_time_ms=0)
"""Placeholders: :meth:`Device.send` stamps them as an on-time host would."""

HOST_CLOCK_OFFSET_MS = 123_456_789
"""The host's clock is not the device's: it reads this much less, and wraps elsewhere."""


class Device:
    """An emulator fed whole datagrams, with the replies parsed back.

    :meth:`send` plays an on-time host with its own clock: it stamps ARM, HEARTBEAT and
    STIMULATE with the host's time now (the link has no delay), STIMULATE with the session the
    device last acknowledged an ARM with, and keeps that session from each ARM's ACK.
    """

    def __init__(self, settings: EmulatorSettings | None = None, transport=None, link=UDP):
        self.clock = FakeClock()
        self.emulator = FirmwareEmulator(link, settings, clock=self.clock, transport=transport)
        self.sequence = 0
        self.session = 0

    def host_time_ms(self, sent_ms_ago: int = 0) -> int:
        return (clock_ms(self.clock.now) - HOST_CLOCK_OFFSET_MS - sent_ms_ago) % CLOCK_MODULUS

    def send(self, message, sequence: int | None = None, *, stamp: bool = True):
        if stamp and isinstance(message, Arm | Heartbeat):
            message = dataclasses.replace(message, host_time_ms=self.host_time_ms())
        elif stamp and isinstance(message, Stimulate):
            message = dataclasses.replace(
                message, session=self.session, host_time_ms=self.host_time_ms()
            )
        self.sequence += 1
        replies = self.raw(encode_message(message, self.sequence if sequence is None else sequence))
        if isinstance(message, Arm) and len(replies) == 1 and isinstance(replies[0], Ack):
            self.session = replies[0].session
        return replies

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
            assert _one(device.send(ARM)) == Ack(MessageType.ARM, True, device.session)
            assert device.session != 0
            assert _one(device.send(GOOD, sequence=100)) == Ack(
                MessageType.STIMULATE, True, device.session
            )
            device.clock.advance(0.4)
            device.send(BEAT)
            assert _one(device.send(GOOD, sequence=101)).code == ErrorCode.REFRACTORY
            for _ in range(3):
                device.clock.advance(0.4)
                device.send(BEAT)
            assert _one(device.send(GOOD, sequence=100)).code == ErrorCode.DUPLICATE_SEQUENCE
            assert _one(device.send(GOOD, sequence=101)).acked_type == MessageType.STIMULATE
    assert len(device.emulator.pulses) == 2
    logged, _ = [json.loads(line) for line in (scratch / "pulses.jsonl").read_text().splitlines()]
    assert logged == device.emulator.pulses[0]
    assert logged["sequence"] == 100 and logged["channels"] == [1, 2]
    assert logged["session"] == device.session and logged["lateness_ms"] == 0
    assert logged["charge_density_uc_cm2"] == pytest.approx(50 * 100e-6 * 4096)
    assert logged["pulses"] == 10


def test_a_pulse_log_torn_by_a_crash_has_its_fragment_set_aside_before_the_next_train(
    scratch, caplog
):
    """Appended to as it was, the next train joined the torn line into one unreadable line:
    both lost to every reader of the log."""
    log = scratch / "pulses.jsonl"
    log.write_text('{"event": "train", "sequence": 7}\n{"event": "train", "seq')
    with UdpTransport.bind("127.0.0.1", 0) as socket_:
        device = Device(EmulatorSettings(pulse_log=log), socket_)
        with caplog.at_level(logging.WARNING, "corticast"), device.emulator:
            device.send(ARM)
            assert _one(device.send(GOOD, sequence=100)).acked_type == MessageType.STIMULATE
    earlier, train = [json.loads(line) for line in log.read_text().splitlines()]
    assert earlier == {"event": "train", "sequence": 7}
    assert train == device.emulator.pulses[0]
    assert log.with_name("pulses.jsonl.torn").read_text() == '{"event": "train", "seq\n'
    assert f"{log} ended with a torn last line" in caplog.text


def test_a_train_replayed_after_a_later_one_is_refused_however_timely():
    # Refractory shorter than the deadline (both allowed): a copy of an earlier train of the
    # session, held on the link or replayed, arrives on time and past refractory.
    quick = EmulatorSettings(
        refractory_s=0.02, min_train_duration_ms=1, max_train_duration_ms=10,
        max_trains_per_minute=600,
    )  # fmt: skip
    device = Device(quick)
    train = dataclasses.replace(GOOD, train_duration_ms=10)
    device.send(BEAT)
    device.send(ARM)
    stamped = dataclasses.replace(train, session=device.session, host_time_ms=device.host_time_ms())
    first = encode_message(stamped, 2**32 - 1)  # the host's sequence wraps within the session
    assert _one(device.raw(first)).acked_type == MessageType.STIMULATE
    device.clock.advance(0.03)
    assert _one(device.send(train, sequence=0)).acked_type == MessageType.STIMULATE
    device.clock.advance(0.03)  # 60 ms after it was sent: within the 100 ms deadline
    assert _one(device.raw(first)).code == ErrorCode.DUPLICATE_SEQUENCE
    assert [p["sequence"] for p in device.emulator.pulses] == [2**32 - 1, 0]


@pytest.mark.parametrize(
    ("train", "code"),
    [
        (((), 50, 100, 100, 100, 2.0**-12), ErrorCode.BAD_CHANNELS),
        (((1, 1), 50, 100, 100, 100, 2.0**-12), ErrorCode.BAD_CHANNELS),
        (((360,), 50, 100, 100, 100, 2.0**-12), ErrorCode.BAD_CHANNELS),
        ((tuple(range(17)), 50, 100, 100, 100, 2.0**-12), ErrorCode.BAD_CHANNELS),
        (((1,), 201, 100, 100, 100, 2.0**-12), ErrorCode.OUT_OF_BOUNDS),
        (((1,), 50, 19, 100, 100, 2.0**-12), ErrorCode.OUT_OF_BOUNDS),
        (((1,), 50, 100, 334, 100, 2.0**-12), ErrorCode.OUT_OF_BOUNDS),
        (((1,), 50, 100, 100, 1001, 2.0**-12), ErrorCode.OUT_OF_BOUNDS),
        (((1,), 50, 100, 100, 100, float("nan")), ErrorCode.ELECTRODE_AREA),
        (((1,), 50, 100, 100, 100, -1.0), ErrorCode.ELECTRODE_AREA),
        (((1,), 50, 100, 100, 100, 1e-3), ErrorCode.ELECTRODE_AREA),
        (((1,), 62, 100, 100, 100, 2.0**-12), ErrorCode.CHARGE_DENSITY),
    ],
)
def test_the_device_refuses_each_bad_train_with_its_own_code(train, code):
    device = Device()
    device.send(ARM)
    reply = _one(device.send(Stimulate(*train, session=0, host_time_ms=0)))
    assert reply == Nack(MessageType.STIMULATE, code, True)
    assert device.emulator.pulses == ()


def test_two_phases_must_fit_in_one_period():
    device = Device(EmulatorSettings(max_frequency_hz=1000))
    device.send(ARM)
    train = Stimulate((1,), 1, 1000, 500, 10, 2.0**-12, session=0, host_time_ms=0)
    assert _one(device.send(train)).code == ErrorCode.OUT_OF_BOUNDS


def test_a_lower_configured_density_limit_is_enforced_by_the_device_too():
    device = Device(EmulatorSettings(charge_density_limit_uc_cm2=5))
    device.send(ARM)
    assert _one(device.send(GOOD)).code == ErrorCode.CHARGE_DENSITY  # 20.5 µC/cm²


def test_the_device_keeps_its_own_minute_and_day_budgets():
    device = Device(
        EmulatorSettings(
            refractory_s=1.5, max_trains_per_minute=2, max_trains_per_day=3, heartbeat_timeout_s=10
        )
    )
    device.send(ARM)
    codes = []
    for step in (0, 2, 2, 60, 2, 86_400):
        device.clock.advance(step)
        device.send(ARM)  # re-arms after the watchdog, so only the budgets are in play
        reply = _one(device.send(GOOD))
        codes.append(reply.code if isinstance(reply, Nack) else "ok")
    assert codes == ["ok", "ok", ErrorCode.BUDGET_MINUTE, "ok", ErrorCode.BUDGET_DAY, "ok"]


def test_the_watchdog_disarms_when_heartbeats_stop():
    device = Device(EmulatorSettings(heartbeat_timeout_s=0.5))
    device.send(ARM)
    for _ in range(5):
        device.clock.advance(0.4)
        assert _one(device.send(BEAT)) == Ack(MessageType.HEARTBEAT, True, device.session)
    device.clock.advance(0.51)
    assert device.emulator.check_watchdog() is True
    assert not device.emulator.armed
    status = _one(device.send(StatusRequest()))
    assert isinstance(status, DeviceStatus)
    assert (status.armed, status.disarm_cause) == (False, DisarmCause.HEARTBEAT_TIMEOUT)
    assert _one(device.send(BEAT)) == Ack(MessageType.HEARTBEAT, False, 0)
    assert _one(device.send(GOOD)).code == ErrorCode.NOT_ARMED


def test_a_late_stimulate_is_refused_even_if_the_loop_has_not_checked_the_watchdog():
    device = Device(EmulatorSettings(heartbeat_timeout_s=0.5))
    device.send(ARM)
    device.clock.advance(0.6)
    assert _one(device.send(GOOD)).code == ErrorCode.NOT_ARMED


def test_disarm_is_obeyed_even_with_a_malformed_payload():
    device = Device()
    device.send(ARM)
    reply = _one(device.raw(encode_frame(MessageType.DISARM, 9, b"junk")))
    assert reply == Nack(MessageType.DISARM, ErrorCode.BAD_PAYLOAD, False)
    assert device.emulator.session == 0
    assert not device.emulator.armed
    assert device.emulator.status().disarm_cause == DisarmCause.HOST


FULL_DISK = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")


def _stimulate_onto_a_full_disk():
    """The reply to a STIMULATE whose train cannot be written to the pulse log (a full disk:
    a fault of the device's own), from an emulator started on a real socket and then stopped."""
    with UdpTransport.bind("127.0.0.1", 0) as socket_:
        device = Device(EmulatorSettings(pulse_log=Path("/dev/full")), socket_)
        with device.emulator:
            device.send(ARM)
            reply = _one(device.send(GOOD))
    return device, reply


@FULL_DISK
def test_a_pulse_log_that_cannot_be_written_is_a_device_fault_and_stop_still_releases():
    device, reply = _stimulate_onto_a_full_disk()
    assert reply.code == ErrorCode.DEVICE_FAULT and not reply.armed
    assert device.emulator.status().disarm_cause == DisarmCause.FAULT
    assert device.emulator.counters["device_faults"] == 1
    assert not device.emulator.running


@FULL_DISK
def test_a_device_faults_nack_names_the_command_it_refused():
    _device, reply = _stimulate_onto_a_full_disk()
    assert reply == Nack(MessageType.STIMULATE, ErrorCode.DEVICE_FAULT, False)


def test_replies_sent_to_the_device_are_unexpected():
    device = Device()
    assert _one(device.send(Ack(1, True, 7))).code == ErrorCode.UNEXPECTED_TYPE


def test_garbage_is_counted_and_logged_but_not_answered():
    device = Device()
    assert device.raw(b"\x00\x01\x02") == []
    assert device.emulator.counters["logged_errors"] == 1
    assert device.emulator.counters["frames_rejected"] == 1


def test_status_counts_frames_and_budgets():
    device = Device()
    device.send(ARM)
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
    session=st.just(0),
    host_time_ms=st.just(0),
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
    session=st.just(0),
    host_time_ms=st.just(0),
)
commands = st.one_of(
    st.sampled_from([ARM, ARM, BEAT, BEAT, Disarm(), StatusRequest()]),
    plausible_trains,
    plausible_trains,
    wild_trains,
)


link_faults = st.sampled_from(["none", "none", "none", "late", "other_session", "at_deadline"])
"""What happened to a STIMULATE on the way: nothing; held past the deadline (by 1 ms to a
minute); sent in a session that is not the open one; held exactly as long as the deadline."""


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([0.0, 0.1, 1.19, 1.2, 5.0, 10.01, 30.0, 3600.0]),
            commands,
            link_faults,
            st.sampled_from([1, 2, 1000, 60_000]),
        ),
        max_size=80,
    )
)
def test_no_frame_sequence_makes_the_device_exceed_its_limits(sequence):
    device = Device(DEVICE_LIMITS)
    deadline_ms = DEVICE_LIMITS.stimulate_deadline_ms
    armed_since_heartbeat: float | None = None
    sessions = [0]
    for dt, command, fault, extra_ms in [(0.0, ARM, "none", 0), *sequence]:
        device.clock.advance(dt)
        before = len(device.emulator.pulses)
        watchdog_expired = (
            armed_since_heartbeat is not None
            and device.clock.now - armed_since_heartbeat > DEVICE_LIMITS.heartbeat_timeout_s
        )
        if isinstance(command, Stimulate) and fault != "none":
            late_ms = {"late": deadline_ms + extra_ms, "at_deadline": deadline_ms}.get(fault, 0)
            session = sessions[-2] if fault == "other_session" and len(sessions) > 1 else 0
            stamped = dataclasses.replace(
                command,
                session=device.session if fault != "other_session" else session,
                host_time_ms=device.host_time_ms(sent_ms_ago=late_ms),
            )
            _one(device.send(stamped, stamp=False))
            if fault in ("late", "other_session"):
                assert len(device.emulator.pulses) == before, f"{fault} train delivered"
            continue
        _one(device.send(command))
        if device.session != sessions[-1]:
            sessions.append(device.session)
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


# ------------------------------------------------------------------ sessions and deadlines
def test_each_arm_opens_a_new_session_and_disarm_closes_it():
    device = Device()
    first = _one(device.send(ARM)).session
    assert first != 0 and device.emulator.session == first
    assert _one(device.send(BEAT)) == Ack(MessageType.HEARTBEAT, True, first)
    assert _one(device.send(Disarm())) == Ack(MessageType.DISARM, False, 0)
    second = _one(device.send(ARM)).session
    assert second not in (0, first)


def test_a_stimulate_of_another_session_is_refused_however_timely():
    device = Device()
    device.send(ARM)
    old = device.session
    device.send(Disarm())
    assert _one(device.send(GOOD)).code == ErrorCode.NOT_ARMED  # no session open
    device.send(ARM)
    for session in (old, 0, device.session ^ 1):
        on_time = dataclasses.replace(GOOD, session=session, host_time_ms=device.host_time_ms())
        reply = _one(device.send(on_time, stamp=False))
        assert reply == Nack(MessageType.STIMULATE, ErrorCode.SESSION_MISMATCH, True)
    assert device.emulator.pulses == ()
    assert _one(device.send(GOOD)).acked_type == MessageType.STIMULATE  # its own session


def test_the_watchdog_closes_the_session():
    device = Device(EmulatorSettings(heartbeat_timeout_s=0.5))
    device.send(ARM)
    old = device.session
    device.clock.advance(0.6)
    device.emulator.check_watchdog()
    assert device.emulator.session == 0
    device.send(ARM)
    stale = dataclasses.replace(GOOD, session=old, host_time_ms=device.host_time_ms())
    assert _one(device.send(stale, stamp=False)).code == ErrorCode.SESSION_MISMATCH


@pytest.mark.parametrize(("late_ms", "delivered"), [(0, True), (100, True), (101, False)])
def test_a_stimulate_later_than_the_deadline_is_refused(late_ms, delivered):
    device = Device(EmulatorSettings(stimulate_deadline_ms=100))
    device.send(ARM)
    device.clock.advance(0.05)
    device.send(BEAT)
    sent = dataclasses.replace(
        GOOD, session=device.session, host_time_ms=device.host_time_ms(sent_ms_ago=late_ms)
    )
    reply = _one(device.send(sent, stamp=False))
    if delivered:
        assert reply.acked_type == MessageType.STIMULATE
        assert device.emulator.pulses[0]["lateness_ms"] == late_ms
    else:
        assert reply == Nack(MessageType.STIMULATE, ErrorCode.EXPIRED, True)
        assert device.emulator.pulses == ()


def test_lateness_is_measured_from_the_least_delayed_recent_arrival():
    device = Device(EmulatorSettings(stimulate_deadline_ms=100, heartbeat_timeout_s=5.0))
    device.send(Arm(device.host_time_ms(sent_ms_ago=40)), stamp=False)
    for delay_ms in (30, 5, 50):  # the 5 ms heartbeat sets the reference
        device.clock.advance(0.1)
        device.send(Heartbeat(device.host_time_ms(sent_ms_ago=delay_ms)), stamp=False)
    for delay_ms, code in ((105, None), (106, ErrorCode.EXPIRED)):
        device.clock.advance(0.5)
        train = dataclasses.replace(
            GOOD, session=device.session, host_time_ms=device.host_time_ms(sent_ms_ago=delay_ms)
        )
        reply = _one(device.send(train, stamp=False))
        assert getattr(reply, "code", None) == code, (delay_ms, reply)


def test_an_arm_later_than_the_deadline_is_refused_and_changes_nothing():
    device = Device(EmulatorSettings(stimulate_deadline_ms=100))
    device.send(BEAT)
    device.clock.advance(0.2)
    late = Arm(device.host_time_ms(sent_ms_ago=150))
    assert _one(device.send(late, stamp=False)) == Nack(MessageType.ARM, ErrorCode.EXPIRED, False)
    assert not device.emulator.armed and device.emulator.session == 0
    device.clock.advance(4.5)  # every arrival has left the window: nothing to judge it by
    assert _one(device.send(late, stamp=False)).acked_type == MessageType.ARM


def test_a_stimulate_is_refused_when_nothing_recent_tells_how_late_it_is():
    device = Device(EmulatorSettings(heartbeat_timeout_s=10.0))
    device.send(ARM)
    device.clock.advance(4.5)  # armed still, but the last arrival left the 4 s window
    assert _one(device.send(GOOD)).code == ErrorCode.EXPIRED


def test_the_deadline_may_not_exceed_the_hosts_ack_timeout():
    with pytest.raises(ValueError, match=r"'stimulate_deadline_ms' must not exceed .* got 101 ms"):
        FirmwareEmulator(UDP, EmulatorSettings(stimulate_deadline_ms=101))
    FirmwareEmulator(
        BridgeSettings(ack_timeout_s=0.101), EmulatorSettings(stimulate_deadline_ms=101)
    )


def test_a_serial_link_too_slow_for_the_stimulate_deadline_is_refused():
    """The device reads a frame when its last byte is in, so a STIMULATE arrives later than
    an ARM or HEARTBEAT sent as promptly by its extra bytes' wire time, and lateness is
    measured from the least-delayed of those: at 2400 baud (with the 0.3 s ACK timeout the
    ACK check asks for) a STIMULATE on 16 electrodes is 208 ms late on the wire alone, so
    with the 100 ms deadline every one would be refused EXPIRED."""
    slow = BridgeSettings(transport="serial", baud_rate=2400, ack_timeout_s=0.3)
    with pytest.raises(
        ValueError,
        match=r"at 2400 baud a STIMULATE on 16 electrodes \(68 bytes\) arrives 208 ms after a "
        r"HEARTBEAT \(18 bytes\).*emulator\.stimulate_deadline_ms \(100 ms\).*EXPIRED.*"
        r"at least 209 ms.*bridge\.baud_rate to at least 5000",
    ):
        FirmwareEmulator(slow, EmulatorSettings())
    fits = BridgeSettings(transport="serial", baud_rate=5000, ack_timeout_s=0.3)
    device = Device(link=fits)
    device.send(Arm(device.host_time_ms(sent_ms_ago=18 * 10 // 5)), stamp=False)
    widest = dataclasses.replace(
        GOOD,
        channels=tuple(range(16)),
        session=device.session,
        host_time_ms=device.host_time_ms(sent_ms_ago=68 * 10 // 5),
    )
    assert _one(device.send(widest, stamp=False)).acked_type == MessageType.STIMULATE


def test_lateness_survives_the_host_clock_wrapping():
    estimate = HostClockOffset()
    device_ms = 50_000
    for step in range(10):  # host times 2**32 - 45 .. 2**32 + 0 (wrapped to 0)
        estimate.observe((CLOCK_MODULUS - 45 + 5 * step) % CLOCK_MODULUS, device_ms + 5 * step)
    assert estimate.lateness_ms(10, device_ms + 55) == 0
    assert estimate.lateness_ms(CLOCK_MODULUS - 100, device_ms + 55) == 110


@pytest.mark.parametrize("drift_ppm", [100, -100])
def test_hours_of_crystal_drift_do_not_make_an_on_time_command_look_late(drift_ppm):
    estimate = HostClockOffset()
    host_ms = 0.0
    for _ in range(2 * 36_000):  # two hours of heartbeats, 0.1 s apart on the host's clock
        host_ms += 100
        device_ms = host_ms * (1 + drift_ppm * 1e-6)
        estimate.observe(int(host_ms) % CLOCK_MODULUS, int(device_ms) % CLOCK_MODULUS)
    # 720 ms of drift in all; the window holds the last 3.2 s of it (0.3 ms).
    late = estimate.lateness_ms(int(host_ms) % CLOCK_MODULUS, int(device_ms) % CLOCK_MODULUS)
    assert abs(late) <= 1
