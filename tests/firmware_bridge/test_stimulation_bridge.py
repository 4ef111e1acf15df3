"""The bridge against a scripted device on a real UDP socket: what it does with every kind of
answer (ACK, NACK, silence, garbage, corrupted or misaddressed replies), dry run, operator
actions, audit-log failure, metrics and lifecycle."""

from __future__ import annotations

import os
import socket
import threading
import time
from contextlib import contextmanager

import pytest

from firmware_bridge import Disarmed, audit_log
from firmware_bridge.audit_log import read_audit_log
from firmware_bridge.config import MAX_SAMPLE_AGE_CEILING_S, BridgeSettings, InterlockSettings
from firmware_bridge.errors import AckTimeoutError, AuditLogError, NotArmedError
from firmware_bridge.loop_health import LoopHealth
from firmware_bridge.stimulation_bridge import StimulationBridge
from firmware_bridge.stimulation_request import StimulationRequest
from firmware_bridge.udp_transport import UdpTransport
from firmware_bridge.wire import MessageType

from ._scripted_device import ScriptedDevice
from .conftest import FakeClock

OK = LoopHealth(0.01, 0, True)
SILENCE_S = 1.0
"""ACK deadline where the device does not answer: long enough that the replies which do come
(the DISARM's ACK after a failure) arrive in time on a loaded machine."""
REQUEST = StimulationRequest((1, 2), 50, 100, 100, 100, 3e-4)


@contextmanager
def live_bridge(scratch, *, clock=None, ack_timeout_s=5.0, interlocks=None, registry=None):
    """A started, live bridge (no heartbeat thread) wired to a scripted device.

    A reply the test expects must come within ``ack_timeout_s`` even on a loaded machine, so
    it is generous; tests where the device stays silent wait it out once, so they shorten it
    to :data:`SILENCE_S`. Without ``interlocks``, the data-age limit is the ceiling: the
    bridge ages a request's data by its own waits in real time, and a loaded machine that
    stalls the test's thread 40 ms would block :data:`OK` as stale (tests of that interlock
    set their own).
    """
    with ScriptedDevice() as device:
        settings = BridgeSettings(
            port=device.port,
            dry_run=False,
            ack_timeout_s=ack_timeout_s,
            audit_log=scratch / "audit.jsonl",
        )
        transport = UdpTransport.connect("127.0.0.1", device.port)
        bridge = StimulationBridge(
            settings,
            interlocks or InterlockSettings(max_sample_age_s=MAX_SAMPLE_AGE_CEILING_S),
            transport=transport,
            clock=clock or FakeClock(),
            heartbeat_thread=False,
            registry=registry,
        )
        try:
            with bridge:
                yield bridge, device
        finally:
            transport.close()


def _events(scratch):
    return [r["event"] for r in read_audit_log(scratch / "audit.jsonl")]


def test_starts_disarmed_and_blocks_until_armed(scratch):
    with live_bridge(scratch) as (bridge, device):
        assert not bridge.armed and bridge.status().last_disarm_reason == "disarmed at start"
        assert bridge.status().last_disarm_cause == "start"
        decision = bridge.request_stimulation(REQUEST, OK)
        assert decision.outcome == "blocked" and decision.interlocks == ("armed",)
        assert device.stimulate_sequences() == []


def test_an_acknowledged_train_is_sent_and_audited_before_and_after(scratch):
    with live_bridge(scratch) as (bridge, device):
        bridge.arm()
        decision = bridge.request_stimulation(REQUEST, OK)
        assert decision.sent and decision.sequence in device.stimulate_sequences()
        assert bridge.armed and bridge.status().last_disarm_cause is None
        bridge.disarm("done for the day")
        assert bridge.status().last_disarm_cause == "operator"
    assert _events(scratch) == ["start", "arm", "transmit", "decision", "disarm", "close"]
    records = read_audit_log(scratch / "audit.jsonl")
    assert records[2]["sequence"] == records[3]["sequence"] == decision.sequence


def test_the_arm_and_transmit_records_say_what_an_audit_links_a_train_to(scratch):
    """The arm record names the device's session; the transmit record, durable before the
    STIMULATE leaves, names the train and the frame it was decided on
    (bench.benchmarks.chaos.soak)."""
    health = LoopHealth(0.01, 0, True, input_seq=41, input_timestamp=1234.5)
    with live_bridge(scratch) as (bridge, device):
        bridge.arm()
        bridge.request_stimulation(REQUEST, health)
        session = device.session
    records = read_audit_log(scratch / "audit.jsonl")
    arm, transmit = (r for r in records if r["event"] in ("arm", "transmit"))
    assert arm["session"] == session != 0
    assert transmit["request"] == REQUEST.to_record()
    # The health as judged: the age the loop measured plus the bridge's own wait since.
    judged = transmit["health"]
    assert judged["newest_sample_age_s"] >= health.newest_sample_age_s
    assert judged | {"newest_sample_age_s": None} == health.to_record() | {
        "newest_sample_age_s": None
    }
    assert (transmit["health"]["input_seq"], transmit["health"]["input_timestamp"]) == (41, 1234.5)


@pytest.mark.parametrize(
    ("behaviour", "outcome"),
    [
        ("nack", "rejected"),
        ("silent", "failed"),
        ("garbage", "failed"),
        ("corrupt", "failed"),
        ("wrong_sequence", "failed"),
        ("wrong_type", "failed"),
        ("status_reply", "failed"),
    ],
)
def test_anything_but_a_matching_ack_disarms(scratch, behaviour, outcome):
    with live_bridge(scratch, ack_timeout_s=SILENCE_S) as (bridge, device):
        bridge.arm()
        device.plan(MessageType.STIMULATE, behaviour)
        decision = bridge.request_stimulation(REQUEST, OK)
        assert decision.outcome == outcome and decision.transmitted
        assert not bridge.armed
        assert bridge.status().last_disarm_reason and bridge.status().last_disarm_cause == "fault"
        # The bridge told the device to disarm after the failure.
        kinds = [f.message_type for f in device.received]
        assert kinds[-1] == MessageType.DISARM
        assert not device.armed


@pytest.mark.parametrize("behaviour", ["stale_then_ack", "garbage_then_ack"])
def test_stale_replies_and_noise_before_the_ack_are_skipped(scratch, behaviour):
    with live_bridge(scratch) as (bridge, device):
        bridge.arm()
        device.plan(MessageType.STIMULATE, behaviour)
        assert bridge.request_stimulation(REQUEST, OK).sent
        assert bridge.armed


def test_a_nack_carries_its_code_into_the_decision_and_metrics(scratch):
    with live_bridge(scratch) as (bridge, device):
        bridge.arm()
        device.nack_code = 0x14
        device.plan(MessageType.STIMULATE, "nack")
        decision = bridge.request_stimulation(REQUEST, OK)
        assert decision.error_code == 0x14
        assert "CHARGE_DENSITY (0x14)" in decision.reason
        value = bridge.registry.get_sample_value(
            "corticast_bridge_requests_total", {"outcome": "rejected", "reason": "CHARGE_DENSITY"}
        )
        assert value == 1
        assert bridge.registry.get_sample_value("corticast_bridge_armed") == 0


def test_arm_refused_or_unanswered_leaves_the_bridge_disarmed(scratch):
    with live_bridge(scratch, ack_timeout_s=SILENCE_S) as (bridge, device):
        device.plan(MessageType.ARM, "nack")
        with pytest.raises(NotArmedError, match="device refused ARM: NOT_ARMED"):
            bridge.arm()
        device.plan(MessageType.ARM, "silent")
        with pytest.raises(AckTimeoutError, match="no reply to ARM"):
            bridge.arm()
        assert not bridge.armed
    records = read_audit_log(scratch / "audit.jsonl")
    reasons = [r["reason"] for r in records if r["event"] == "arm_failed"]
    assert len(reasons) == 2, reasons
    assert reasons[0].startswith("device refused ARM: NOT_ARMED"), reasons
    assert reasons[1].startswith("no reply to ARM"), reasons


def test_a_device_that_reports_itself_disarmed_disarms_the_host(scratch):
    with live_bridge(scratch) as (bridge, device):
        bridge.arm()
        device.plan(MessageType.HEARTBEAT, "ack_disarmed")
        assert bridge.heartbeat() is True
        assert not bridge.armed
        why = "device reports itself disarmed (heartbeat watchdog or device fault)"
        assert bridge.status().last_disarm_reason == f"{why}; host disarmed too"
        assert bridge.status().device_armed is False


def test_an_unanswered_heartbeat_disarms_the_host(scratch):
    with live_bridge(scratch, ack_timeout_s=SILENCE_S) as (bridge, device):
        bridge.arm()
        device.plan(MessageType.HEARTBEAT, "silent")
        assert bridge.heartbeat() is False
        assert not bridge.armed
        reason = bridge.status().last_disarm_reason
        assert "no reply to HEARTBEAT" in reason
        assert "link key" not in reason  # the device answered the ARM: it is not keyed
        assert bridge.registry.get_sample_value("corticast_bridge_heartbeat_failures_total") == 1


def test_a_device_armed_behind_the_hosts_back_is_told_to_disarm(scratch):
    with live_bridge(scratch) as (bridge, device):
        device.armed = True
        assert bridge.heartbeat() is True
        assert [f.message_type for f in device.received][-1] == MessageType.DISARM
        assert not device.armed


def test_a_reason_with_a_lone_surrogate_still_tells_the_device_and_is_audited(scratch):
    """Any caller's reason may hold one (a file name that is not UTF-8, as Python decodes
    it): the disarm's audit record failed to encode, disarm() raised, and the device was never
    told. (The HTTP API's reason cannot: pydantic refuses such a string.)"""
    reason = "predictor fault: cannot read '/models/\udcff.onnx'"
    with live_bridge(scratch) as (bridge, device):
        bridge.arm()
        assert bridge.disarm(reason) == Disarmed(was_armed=True, device_confirmed=True)
        assert not device.armed
    [disarm] = [r for r in read_audit_log(scratch / "audit.jsonl") if r["event"] == "disarm"]
    assert disarm["reason"] == reason


def test_without_an_audit_record_nothing_is_sent(scratch):
    with live_bridge(scratch) as (bridge, device):
        bridge.arm()
        bridge._audit.close()  # the disk went away
        with pytest.raises(AuditLogError, match="is closed"):
            bridge.request_stimulation(REQUEST, OK)
        assert device.stimulate_sequences() == []
        assert not bridge.armed
        status = bridge.status()  # the disarm's own record could not be written either
        assert status.last_disarm_cause == "fault"
        assert status.last_disarm_reason.startswith(
            "error while handling a request: AuditLogError: "
        ), status.last_disarm_reason


def test_refractory_and_budget_gauges(scratch):
    clock = FakeClock()
    limits = InterlockSettings(refractory_s=1.5, max_trains_per_minute=2, max_trains_per_day=10)
    with live_bridge(scratch, clock=clock, interlocks=limits) as (bridge, _device):
        bridge.arm()
        assert bridge.request_stimulation(REQUEST, OK).sent
        clock.advance(1.0)
        assert bridge.request_stimulation(REQUEST, OK).interlocks == ("refractory",)
        clock.advance(0.5)
        assert bridge.request_stimulation(REQUEST, OK).sent
        assert bridge.registry.get_sample_value("corticast_bridge_minute_budget_left") == 0
        assert bridge.registry.get_sample_value("corticast_bridge_day_budget_left") == 8
        status = bridge.status()
        assert status.outcomes == {"sent": 2, "blocked": 1} and status.requests == 3


def test_dry_run_decides_and_audits_but_never_opens_a_link(scratch):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(0.05)
        settings = BridgeSettings(port=listener.getsockname()[1], audit_log=scratch / "a.jsonl")
        assert settings.dry_run
        with StimulationBridge(settings, clock=FakeClock()) as bridge:
            assert bridge.request_stimulation(REQUEST, OK).outcome == "blocked"
            bridge.arm()
            decision = bridge.request_stimulation(REQUEST, OK)
            assert decision.outcome == "dry_run" and not decision.transmitted
            assert bridge.heartbeat() is False
            with pytest.raises(RuntimeError, match="dry run"):
                bridge.query_device()
        with pytest.raises(TimeoutError):
            listener.recv(100)
    records = read_audit_log(scratch / "a.jsonl")
    outcomes = [r.get("outcome") for r in records]
    assert outcomes.count("dry_run") == 1 and outcomes.count("blocked") == 1
    (arm,) = [r for r in records if r["event"] == "arm"]
    assert arm["dry_run"] is True, arm


def test_dry_run_refuses_a_transport(scratch):
    with (
        UdpTransport.connect("127.0.0.1", 9) as transport,
        pytest.raises(ValueError, match="'transport' must be None in dry run"),
    ):
        StimulationBridge(BridgeSettings(audit_log=scratch / "a"), transport=transport)


def test_lifecycle_errors_name_the_method_to_call(scratch):
    bridge = StimulationBridge(BridgeSettings(audit_log=scratch / "a.jsonl"))
    with pytest.raises(RuntimeError, match=r"call start\(\) before arm\(\)"):
        bridge.arm()
    bridge.close()
    bridge.close()
    with pytest.raises(RuntimeError, match="closed"):
        bridge.request_stimulation(REQUEST, OK)
    with pytest.raises(RuntimeError, match="closed"):
        bridge.start()


def test_wrong_types_are_refused_before_anything_is_recorded(scratch):
    with live_bridge(scratch) as (bridge, _device):
        with pytest.raises(TypeError, match="'request' must be StimulationRequest, got dict"):
            bridge.request_stimulation({"amplitude_ua": 5}, OK)
        assert bridge.status().requests == 0


class _BrokenHeartbeat(StimulationBridge):
    """Beats normally until the test sets ``explode``, then the heartbeat raises."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.explode = threading.Event()

    def heartbeat(self) -> bool:
        if self.explode.is_set():
            raise OSError("heartbeat exploded")
        return super().heartbeat()


def test_a_request_to_a_bridge_whose_heartbeat_thread_failed_is_refused_naming_why(scratch):
    """A bridge whose heartbeat thread failed can send nothing (the device's watchdog would
    disarm it): a request to it is answered as a refusal, blocked by the ``armed`` interlock
    and naming the failure, not with an exception, which ended the loop's wave stage and was
    counted as a second fault beside the bridge's own. Here the request comes before the
    thread's own disarm has run (held): the bridge disarms first itself, and sends nothing."""
    with ScriptedDevice() as device, UdpTransport.connect("127.0.0.1", device.port) as link:
        settings = BridgeSettings(
            dry_run=False,
            heartbeat_period_s=0.05,
            ack_timeout_s=5.0,
            audit_log=scratch / "audit.jsonl",
        )
        bridge = _BrokenHeartbeat(settings, transport=link)
        thread_s_disarm, let_it_disarm = bridge._heartbeat._on_stopped, threading.Event()

        def held_disarm(error: BaseException | None) -> None:
            let_it_disarm.wait(60.0)  # only a hang reaches it
            thread_s_disarm(error)

        bridge._heartbeat._on_stopped = held_disarm
        with bridge:
            try:
                bridge.arm()
                bridge.explode.set()
                deadline = time.monotonic() + 60.0  # only a hang reaches it
                while bridge._heartbeat.error is None and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert bridge.armed  # the thread's own disarm is held
                decision = bridge.request_stimulation(REQUEST, OK)
                assert not bridge.armed
            finally:
                let_it_disarm.set()
            assert (decision.outcome, decision.interlocks) == ("blocked", ("armed",))
            assert "heartbeat thread failed: OSError: heartbeat exploded" in decision.reason
            assert "the daemon's supervisor reopens it" in decision.reason
            assert device.stimulate_sequences() == []
            assert bridge.status().error == "OSError: heartbeat exploded"
            blocked = {"outcome": "blocked", "reason": "armed"}
            requests = bridge.registry.get_sample_value("corticast_bridge_requests_total", blocked)
            assert requests == 1
    records = read_audit_log(scratch / "audit.jsonl")
    (disarm,) = [r for r in records if r["event"] == "disarm" and r["cause"] == "fault"]
    assert disarm["reason"] == "heartbeat thread failed: OSError: heartbeat exploded"
    (audited,) = [r for r in records if r["event"] == "decision"]
    assert (audited["outcome"], audited["reason"]) == ("blocked", decision.reason)


def test_a_request_mangled_after_construction_is_blocked_and_still_audited(scratch):
    with live_bridge(scratch) as (bridge, device):
        bridge.arm()
        mangled = StimulationRequest((1, 2), 50, 100, 100, 100, 3e-4)
        object.__setattr__(mangled, "amplitude_ua", float("nan"))
        object.__setattr__(mangled, "channels", None)
        decision = bridge.request_stimulation(mangled, OK)
        assert decision.outcome == "blocked"
        assert {"channels", "amplitude"} <= set(decision.interlocks)
        assert device.stimulate_sequences() == []
    (record,) = [r for r in read_audit_log(scratch / "audit.jsonl") if r["event"] == "decision"]
    assert "unrecordable" in record["request"]


def test_no_arm_without_a_record_of_it(scratch):
    with live_bridge(scratch) as (bridge, device):
        bridge._audit.close()
        with pytest.raises(AuditLogError):
            bridge.arm()
        assert not bridge.armed and not device.armed


def test_blocked_requests_are_recorded_once_per_kind_and_period_and_counted_otherwise(
    scratch, monkeypatch
):
    clock = FakeClock()
    settings = BridgeSettings(audit_log=scratch / "a.jsonl", audit_blocked_period_s=60.0)
    fsyncs = []
    real_fsync = os.fsync
    monkeypatch.setattr(audit_log.os, "fsync", lambda fd: fsyncs.append(fd) or real_fsync(fd))
    stale = LoopHealth(1.0, 0, True)
    with StimulationBridge(settings, clock=clock) as bridge:
        before = len(fsyncs)
        for i in range(500):  # disarmed: every request is blocked
            clock.advance(0.0036)
            bridge.request_stimulation(REQUEST, stale if i % 100 == 50 else OK)
        assert len(fsyncs) == before, "a blocked request must not cost an fsync of its own"
        clock.advance(60.0)
        for _ in range(3):
            bridge.request_stimulation(REQUEST, OK)
        bridge.arm()
        assert bridge.request_stimulation(REQUEST, OK).outcome == "dry_run"
        assert bridge.status().outcomes == {"blocked": 503, "dry_run": 1}
    records = read_audit_log(scratch / "a.jsonl")
    in_full = [r for r in records if r["event"] == "decision"]
    summaries = [r for r in records if r["event"] == "blocked_summary"]
    assert [r["request_id"] for r in in_full] == [1, 51, 501, 504]
    assert [r["interlocks"] for r in in_full[:3]] == [["armed"], ["armed", "stale_data"], ["armed"]]
    assert sum(s["requests"] for s in summaries) + 3 == 503
    assert [(s["first_request_id"], s["last_request_id"]) for s in summaries] == [
        (2, 50),
        (52, 500),
        (502, 503),
    ]
    assert summaries[1]["by_interlocks"] == {"armed": 445, "armed+stale_data": 4}


def test_on_send_is_called_once_a_train_may_leave_and_only_then(scratch):
    """The loop starts blanking the artefact in ``on_send``: it must come after every
    interlock and the transmit record, before the device has the STIMULATE, and never for a
    request that sends nothing."""
    calls: list[tuple[int, list[str]]] = []
    with live_bridge(scratch) as (bridge, device):

        def on_send() -> None:
            calls.append((len(device.stimulate_sequences()), _events(scratch)))

        assert bridge.request_stimulation(REQUEST, OK, on_send=on_send).outcome == "blocked"
        assert calls == []  # not armed: nothing sent
        bridge.arm()
        assert bridge.request_stimulation(REQUEST, OK, on_send=on_send).sent
        ((stimulates_before, events_before),) = calls
        assert stimulates_before == 0 and events_before[-1] == "transmit"
        # Refractory: blocked again, and nothing sent.
        assert bridge.request_stimulation(REQUEST, OK, on_send=on_send).outcome == "blocked"
        assert len(calls) == 1


def test_an_on_send_that_fails_disarms_and_nothing_is_sent(scratch):
    with live_bridge(scratch) as (bridge, device):
        bridge.arm()

        def on_send() -> None:
            raise RuntimeError("the ring is gone")

        with pytest.raises(RuntimeError, match="the ring is gone"):
            bridge.request_stimulation(REQUEST, OK, on_send=on_send)
        assert not bridge.armed
        assert "the ring is gone" in bridge.status().last_disarm_reason
        assert device.stimulate_sequences() == []
