"""Property test of the whole host side over a real UDP socket: for any sequence of operator
actions, requests, timings (injected clock), device replies (scripted: ACK, NACK, silence,
garbage, corrupt, misaddressed) and bridge restarts on the same audit log, no interlock is ever
exceeded (across restarts too), every failure disarms, nothing reaches the device that the
bridge did not decide to send, and the audit log accounts for every request exactly once."""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge.audit_log import read_audit_log
from firmware_bridge.config import BridgeSettings
from firmware_bridge.errors import AckTimeoutError, NotArmedError
from firmware_bridge.loop_health import LoopHealth
from firmware_bridge.stimulation_bridge import StimulationBridge
from firmware_bridge.stimulation_request import StimulationRequest
from firmware_bridge.udp_transport import UdpTransport
from firmware_bridge.wire import MessageType

from ._scripted_device import BEHAVIOURS, ScriptedDevice
from .conftest import FakeClock, scratch_dir
from .strategies import (
    SETTINGS,
    good_health,
    healths,
    plausible_requests,
    requests,
    time_steps,
)
from .test_interlocks import check_admitted_trains

# Mostly well-behaved devices and plausible requests on fresh data, so that sequences get far
# enough to meet refractory periods and budgets; every kind of fault still shows up.
replies = st.sampled_from(("ack",) * 30 + BEHAVIOURS)
plausible = st.tuples(st.just("request"), time_steps, plausible_requests(), good_health, replies)
actions = st.one_of(
    plausible,
    plausible,
    plausible,
    st.tuples(st.just("request"), time_steps, requests(), healths, replies),
    st.tuples(st.just("arm"), st.sampled_from(["ack", "ack", "ack", "nack", "silent"])),
    st.tuples(st.just("heartbeat"), st.sampled_from(["ack", "ack", "ack_disarmed", "silent"])),
    st.tuples(st.just("wait"), time_steps),
    st.tuples(st.just("disarm")),
    st.tuples(st.just("burst"), st.integers(2, 8), st.sampled_from([1.5, 2.0, 10.0, 20.0, 3600.0])),
    st.tuples(st.just("restart")),
)

VALID = StimulationRequest((1,), 10, 100, 50, 100, 1e-4)
"""Inside every limit of both settings used: a burst of these meets the budgets."""
FRESH = LoopHealth(0.0, 0, True)


ARM_ERRORS = {
    "ack": (AckTimeoutError,),
    "nack": (NotArmedError, AckTimeoutError),
    "silent": (AckTimeoutError,),
}
"""What arm() may raise for each planned reply, and nothing else. A reply after the deadline
(a loaded machine) is no reply, so any of them may end in a timeout."""


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(limits=SETTINGS, script=st.lists(actions, min_size=10, max_size=30))
def test_no_sequence_of_requests_timings_or_replies_exceeds_an_interlock(limits, script):
    clock = FakeClock()
    with scratch_dir() as scratch, ScriptedDevice() as device:
        link = UdpTransport.connect("127.0.0.1", device.port)
        settings_ = BridgeSettings(
            port=device.port, dry_run=False, ack_timeout_s=0.03, audit_log=scratch / "a.jsonl"
        )
        lifetimes: list[list] = []

        def open_bridge():
            lifetimes.append([])
            bridge = StimulationBridge(
                settings_, limits, transport=link, clock=clock, heartbeat_thread=False
            )
            return bridge.start()

        bridge = open_bridge()
        try:
            for action in [("arm", "ack"), *script]:
                if action[0] == "restart":
                    bridge.close()
                    bridge = open_bridge()
                else:
                    _perform(bridge, device, clock, action, lifetimes[-1])
                device.clear_plans()
        finally:
            bridge.close()
            link.close()
        records = read_audit_log(scratch / "a.jsonl")
        received = set(device.stimulate_sequences())

    # The audit log accounts for every request of every lifetime, once, in order, with the
    # returned outcome: in full, or (blocked requests) counted in a summary.
    logged = _split_at_starts(records)
    assert len(logged) == len(lifetimes)
    for lifetime, decisions in zip(logged, lifetimes, strict=True):
        _check_accounting(lifetime, [d for d, _ in decisions])
    decisions = [entry for lifetime in lifetimes for entry in lifetime]

    # Nothing reached the device that the bridge did not decide to transmit, and every
    # transmission was preceded by its transmit record while the audit trail says "armed".
    # A request can also be stopped after its transmit record, by the last checks before the
    # frame leaves (its data aged past the limit during the record's fsync, or a disarm came
    # in): its decision is "blocked" under that sequence, and the device never saw it.
    transmitted = {d.sequence for d, _ in decisions if d.transmitted}
    stopped = {
        d.sequence for d, _ in decisions if d.outcome == "blocked" and d.sequence is not None
    }
    assert received <= transmitted and not received & stopped
    assert {d.sequence for d, _ in decisions if d.sent} <= received
    armed = False
    for record in records:
        if record["event"] in ("arm", "disarm", "start"):
            armed = record["event"] == "arm"
        if record["event"] == "transmit":
            assert armed and record["sequence"] in transmitted | stopped

    # No admitted train breaks a limit, across restarts; each was admitted armed, on fresh data.
    admitted = [(d, was_armed) for d, was_armed in decisions if d.admitted]
    assert all(was_armed for _, was_armed in admitted)
    for d, _ in admitted:
        h = d.health
        assert h.model_healthy and 0 <= h.newest_sample_age_s <= limits.max_sample_age_s
        assert h.missing_frames <= limits.max_missing_frames
    check_admitted_trains(limits, [(d.clock, d.request) for d, _ in admitted])


def _split_at_starts(records):
    lifetimes = []
    for record in records:
        if record["event"] == "start":
            lifetimes.append([])
        elif lifetimes:
            lifetimes[-1].append(record)
    return lifetimes


def _check_accounting(records, decisions):
    accounted, in_full, counted = [], {}, Counter()
    for record in records:
        if record["event"] == "decision":
            accounted.append(record["request_id"])
            in_full[record["request_id"]] = record["outcome"]
        elif record["event"] == "blocked_summary":
            ids = range(record["first_request_id"], record["last_request_id"] + 1)
            assert record["requests"] == len(ids) == sum(record["by_interlocks"].values())
            accounted.extend(ids)
            counted.update(record["by_interlocks"])
    assert accounted == list(range(1, len(decisions) + 1))
    for request_id, decision in enumerate(decisions, start=1):
        if request_id in in_full:
            assert in_full[request_id] == decision.outcome
        else:
            assert decision.outcome == "blocked" and not decision.admitted
    assert counted == Counter(
        "+".join(d.interlocks) for i, d in enumerate(decisions, start=1) if i not in in_full
    )


def _perform(bridge, device, clock, action, decisions):
    kind = action[0]
    if kind == "arm":
        device.plan(MessageType.ARM, action[1])
        was_armed = bridge.armed
        try:
            bridge.arm()
        except ARM_ERRORS[action[1]]:
            assert not bridge.armed
        else:
            assert bridge.armed
            assert was_armed or action[1] == "ack", f"arm() accepted a {action[1]!r} reply"
    elif kind == "disarm":
        bridge.disarm()
        assert not bridge.armed
    elif kind == "heartbeat":
        device.plan(MessageType.HEARTBEAT, action[1])
        ok = bridge.heartbeat()
        if not ok or action[1] == "ack_disarmed":
            assert not bridge.armed
    elif kind == "wait":
        clock.advance(action[1])
    elif kind == "burst":
        for _ in range(action[1]):
            clock.advance(action[2])
            was_armed = bridge.armed
            decisions.append((bridge.request_stimulation(VALID, FRESH), was_armed))
    else:
        _, dt, request, health, reply = action
        clock.advance(dt)
        device.plan(MessageType.STIMULATE, reply)
        was_armed = bridge.armed
        decision = bridge.request_stimulation(request, health)
        decisions.append((decision, was_armed))
        if decision.outcome in ("rejected", "failed"):
            assert not bridge.armed, "a failed exchange must disarm"
