"""What the bridge tells people and tools: its status, each decision's reason and sequence, the
audit records an auditor links trains by, the metrics' labels and the log's levels. Written
against the mutants that outlived the behaviour tests (tests/MUTATION.md): a wrong report
misleads the operator on call even when every interlock holds."""

from __future__ import annotations

import logging
import os

import pytest

from firmware_bridge import audit_log
from firmware_bridge.audit_log import read_audit_log
from firmware_bridge.config import BridgeSettings
from firmware_bridge.errors import AckTimeoutError
from firmware_bridge.serial_transport import SerialTransport
from firmware_bridge.stimulation_bridge import Disarmed, StimulationBridge
from firmware_bridge.stimulation_request import StimulationRequest
from firmware_bridge.wire import MessageType

from ._scripted_device import NOISE_FRAMES
from .conftest import FakeClock
from .test_stimulation_bridge import OK, REQUEST, SILENCE_S, live_bridge

_LOGGER = "corticast.bridge"
REFRACTORY_PAST_S = 60.0
"""Past the refractory period and the minute budget's window: a failed train counts in both."""


def _records(scratch, event: str) -> list[dict]:
    return [r for r in read_audit_log(scratch / "audit.jsonl") if r["event"] == event]


def _requests_total(bridge: StimulationBridge, outcome: str, reason: str) -> float | None:
    labels = {"outcome": outcome, "reason": reason}
    return bridge.registry.get_sample_value("corticast_bridge_requests_total", labels)


# -- status ----------------------------------------------------------------------------------


def test_status_says_running_armed_and_live(scratch):
    with live_bridge(scratch) as (bridge, _device):
        status = bridge.status()
        assert (status.running, status.armed, status.dry_run) == (True, False, False)
        bridge.arm()
        assert bridge.status().armed is True
        assert bridge.registry.get_sample_value("corticast_bridge_armed") == 1
    with StimulationBridge(BridgeSettings(audit_log=scratch / "dry.jsonl")) as dry:
        assert (dry.status().running, dry.status().dry_run) == (True, True)


def test_a_failed_heartbeat_thread_is_reported_with_its_type_as_a_fault(scratch):
    with live_bridge(scratch) as (bridge, _device):
        bridge.arm()
        bridge._on_stopped(OSError("socket gone"))
        status = bridge.status()
        assert status.armed is False
        assert status.last_disarm_reason == "heartbeat thread failed: OSError: socket gone"
        assert status.last_disarm_cause == "fault"
        failures = "corticast_bridge_heartbeat_failures_total"
        assert bridge.registry.get_sample_value(failures) == 1
    (disarm,) = _records(scratch, "disarm")
    assert disarm["cause"] == "fault"
    assert disarm["reason"] == "heartbeat thread failed: OSError: socket gone"


def test_a_heartbeat_thread_that_stops_while_disarmed_changes_nothing(scratch):
    with live_bridge(scratch) as (bridge, _device):
        bridge.disarm("lunch")
        bridge._on_stopped(None)
        assert bridge.status().last_disarm_reason == "lunch"
    assert [r["reason"] for r in _records(scratch, "disarm")] == ["lunch"]


def test_a_heartbeat_thread_that_fails_while_disarmed_leaves_the_last_disarm_standing(scratch):
    """With nothing to disarm, the failure is no disarm: the operator on call still reads
    why the host was disarmed (the operator's lunch), and no fault disarm is counted."""
    with live_bridge(scratch) as (bridge, _device):
        bridge.arm()
        bridge.disarm("lunch")
        bridge._on_stopped(OSError("socket gone"))
        status = bridge.status()
        assert (status.last_disarm_reason, status.last_disarm_cause) == ("lunch", "operator")
        disarms = "corticast_bridge_disarms_total"
        assert bridge.registry.get_sample_value(disarms, {"cause": "fault"}) == 0
        assert bridge.registry.get_sample_value("corticast_bridge_heartbeat_failures_total") == 1
    assert [r["reason"] for r in _records(scratch, "disarm")] == ["lunch"]


# -- disarming -------------------------------------------------------------------------------


def test_a_disarm_is_an_operator_request_unless_named_and_its_reason_must_be_text(scratch):
    with live_bridge(scratch) as (bridge, _device):
        bridge.arm()
        assert bridge.disarm() == Disarmed(was_armed=True, device_confirmed=True)
        assert bridge.status().last_disarm_reason == "operator request"
        with pytest.raises(TypeError, match=r"^'reason' must be str"):
            bridge.disarm(5)  # type: ignore[arg-type]
    (disarm,) = _records(scratch, "disarm")
    assert (disarm["cause"], disarm["reason"]) == ("operator", "operator request")


@pytest.mark.parametrize("answer", ["silent", "nack", "ack_armed"])
def test_disarm_says_the_device_confirmed_only_if_it_acknowledged_being_disarmed(scratch, answer):
    """No answer, a refusal, or an ACK that says the device is still armed: the operator must
    not be told the device is disarmed (the host is, either way)."""
    timeout = SILENCE_S if answer == "silent" else 5.0
    with live_bridge(scratch, ack_timeout_s=timeout) as (bridge, device):
        bridge.arm()
        device.plan(MessageType.DISARM, answer)
        assert bridge.disarm() == Disarmed(was_armed=True, device_confirmed=False)
        assert not bridge.armed


def test_disarm_in_dry_run_says_confirmed_even_after_close(scratch, caplog):
    """There is no device to tell, so nothing is left armed (unlike a closed live bridge).
    The log closed with the bridge and ends with its close: the disarm after it writes
    nothing there, and logs no failure to (it logged 'could not audit disarm' with a
    traceback, alarming whoever reads the log for nothing)."""
    bridge = StimulationBridge(BridgeSettings(audit_log=scratch / "dry.jsonl"))
    with bridge:
        bridge.arm()
    caplog.set_level(logging.WARNING, logger="corticast.bridge")
    caplog.clear()
    assert bridge.disarm() == Disarmed(was_armed=False, device_confirmed=True)
    assert [r.getMessage() for r in caplog.records] == []
    assert read_audit_log(scratch / "dry.jsonl")[-1]["event"] == "close"


@pytest.mark.parametrize("dry_run", [False, True])
def test_disarm_before_start_says_the_device_confirmed_only_in_dry_run(scratch, dry_run):
    """Before start() there is no link: nothing is told to a device that an earlier process
    may have left armed, so a live bridge must not say it confirmed."""
    bridge = StimulationBridge(BridgeSettings(dry_run=dry_run, audit_log=scratch / "a.jsonl"))
    try:
        assert bridge.disarm() == Disarmed(was_armed=False, device_confirmed=dry_run)
    finally:
        bridge.close()


def test_close_of_an_armed_bridge_reports_an_operators_disarm(scratch, caplog):
    """Audited, counted, logged and shown in the status as one; and the link reads closed."""
    disarms = "corticast_bridge_disarms_total"
    with live_bridge(scratch) as (bridge, device):
        bridge.arm()
        with caplog.at_level(logging.WARNING, logger=_LOGGER):
            bridge.close()
        status = bridge.status()
        assert (status.last_disarm_reason, status.last_disarm_cause) == (
            "bridge closing",
            "operator",
        )
        assert status.connected is False
        assert bridge.registry.get_sample_value("corticast_bridge_connected") == 0
        assert bridge.registry.get_sample_value(disarms, {"cause": "operator"}) == 1
        assert not device.armed
    assert "stimulation DISARMED (operator): bridge closing" in caplog.messages
    (disarm,) = _records(scratch, "disarm")
    assert (disarm["cause"], disarm["reason"]) == ("operator", "bridge closing")


def test_close_of_a_disarmed_bridge_leaves_the_last_disarm_standing(scratch):
    with live_bridge(scratch) as (bridge, _device):
        bridge.arm()
        bridge.disarm("lunch")
        bridge.close()
        status = bridge.status()
        assert (status.last_disarm_reason, status.last_disarm_cause) == ("lunch", "operator")
        disarms = "corticast_bridge_disarms_total"
        assert bridge.registry.get_sample_value(disarms, {"cause": "operator"}) == 1
    assert [r["reason"] for r in _records(scratch, "disarm")] == ["lunch"]


def test_a_fault_while_disarmed_keeps_the_reason_the_operator_gave(scratch):
    with live_bridge(scratch) as (bridge, device):
        bridge.disarm("lunch")
        bridge.disarm("wave stage restarted", cause="fault")
        device.plan(MessageType.HEARTBEAT, "nack")
        assert bridge.heartbeat() is False
        status = bridge.status()
        assert (status.last_disarm_reason, status.last_disarm_cause) == ("lunch", "operator")
    assert [r["reason"] for r in _records(scratch, "disarm")] == ["lunch"]


def test_a_fault_disarm_of_an_armed_host_is_audited_with_its_cause_and_reason(scratch):
    with live_bridge(scratch) as (bridge, device):
        bridge.arm()
        assert bridge.disarm("wave stage restarted", cause="fault").was_armed is True
        device_refusal = "device refused HEARTBEAT"
        bridge.arm()
        device.plan(MessageType.HEARTBEAT, "nack")
        assert bridge.heartbeat() is False
    disarms = [(r["cause"], r["reason"]) for r in _records(scratch, "disarm")]
    assert disarms[0] == ("fault", "wave stage restarted")
    assert disarms[1][0] == "fault" and disarms[1][1].startswith(device_refusal)


def test_a_fault_while_armed_is_logged_as_an_error_naming_it(scratch, caplog):
    with live_bridge(scratch) as (bridge, _device):
        bridge.arm()
        with caplog.at_level(logging.ERROR, logger=_LOGGER):
            bridge.disarm("wave stage restarted", cause="fault")
        assert bridge.status().last_disarm_cause == "fault"
    assert "FAULT, disarming: wave stage restarted" not in caplog.text  # an operator-side call
    with live_bridge(scratch) as (bridge, device):
        bridge.arm()
        device.plan(MessageType.HEARTBEAT, "nack")
        with caplog.at_level(logging.ERROR, logger=_LOGGER):
            assert bridge.heartbeat() is False
    assert "FAULT, disarming: device refused HEARTBEAT: " in caplog.text


def test_a_command_coming_back_on_the_link_is_logged_naming_it_and_counted(scratch, caplog):
    # A link looped back (a serial loopback plug, a relay that echoes): the host's own frames
    # come back with the sequence it waits for, and must be reported, not silently skipped.
    settings = BridgeSettings(
        transport="serial", dry_run=False, ack_timeout_s=0.2, audit_log=scratch / "audit.jsonl"
    )
    with SerialTransport.open("loop://") as echo:
        bridge = StimulationBridge(settings, transport=echo, heartbeat_thread=False)
        with bridge, caplog.at_level(logging.WARNING, logger=_LOGGER):
            assert bridge.heartbeat() is False
    assert "HEARTBEAT" in caplog.text and "a command, not a reply" in caplog.text
    errors = "corticast_bridge_frame_errors_total"
    assert bridge.registry.get_sample_value(errors, {"code": "UNEXPECTED_TYPE"}) == 1


def test_a_reply_that_answers_nothing_is_counted_and_named_in_the_log(scratch, caplog):
    """An ACK of another command type with the right sequence: skipped, the command then
    unanswered; the operator must see which reply it was and which command it failed."""
    errors = "corticast_bridge_frame_errors_total"
    with live_bridge(scratch, ack_timeout_s=SILENCE_S) as (bridge, device):
        device.plan(MessageType.HEARTBEAT, "wrong_type")
        with caplog.at_level(logging.WARNING, logger=_LOGGER):
            assert bridge.heartbeat() is False
        assert bridge.registry.get_sample_value(errors, {"code": "UNEXPECTED_TYPE"}) == 1
    (line,) = [r.getMessage() for r in caplog.records if "does not answer" in r.getMessage()]
    assert line.startswith(f"reply Ack(acked_type={int(MessageType.ARM)}, ")
    assert "does not answer HEARTBEAT #" in line


def test_a_reply_with_another_sequence_number_is_counted_and_named_in_the_timeout(scratch):
    """A device that answers under the wrong sequence number (a firmware that swaps its bytes,
    say) leaves every command unanswered: the timeout must say that replies did come, and
    which, not only that none did, and the metric must count them."""
    errors = "corticast_bridge_frame_errors_total"
    with live_bridge(scratch, ack_timeout_s=SILENCE_S) as (bridge, device):
        device.plan(MessageType.STATUS_REQUEST, "wrong_sequence")
        with pytest.raises(AckTimeoutError) as raised:
            bridge.query_device()
        (request,) = [f for f in device.received if f.message_type == MessageType.STATUS_REQUEST]
        assert bridge.registry.get_sample_value(errors, {"code": "OTHER_SEQUENCE"}) == 1
    stray = (request.sequence + 1) % 2**32
    assert f"no reply to STATUS_REQUEST #{request.sequence} " in str(raised.value)
    assert f"1 reply to another sequence number came instead (ACK #{stray})" in str(raised.value)


def test_a_noisy_line_is_logged_at_most_once_an_interval_and_counted_in_full(scratch, caplog):
    # One warning per bad frame would let a noisy line flood the log: the metric counts every
    # frame, the log says it once an interval, and its next line how many it left out.
    clock = FakeClock()
    errors = "corticast_bridge_frame_errors_total"
    with live_bridge(scratch, clock=clock) as (bridge, device):
        with caplog.at_level(logging.WARNING, logger=_LOGGER):
            for _ in range(2):
                device.plan(MessageType.HEARTBEAT, "noise_then_ack")
                assert bridge.heartbeat() is True
            lines = [r.getMessage() for r in caplog.records if "bad frame" in r.getMessage()]
            assert len(lines) == 1
            clock.advance(3600.0)
            device.plan(MessageType.HEARTBEAT, "noise_then_ack")
            assert bridge.heartbeat() is True
        counted = bridge.registry.get_sample_value(errors, {"code": "CRC_MISMATCH"})
    lines = [r.getMessage() for r in caplog.records if "bad frame" in r.getMessage()]
    assert counted == 3 * NOISE_FRAMES
    assert len(lines) == 2
    assert f"{2 * NOISE_FRAMES - 1} more like it left out" in lines[1]


# -- heartbeats and device queries ---------------------------------------------------------


def test_a_closed_bridge_sends_no_heartbeat(scratch):
    with live_bridge(scratch) as (bridge, device):
        bridge.close()
        received = len(device.received)
        assert bridge.heartbeat() is False
        assert len(device.received) == received


def test_a_dry_run_heartbeat_is_not_a_failure(scratch):
    with StimulationBridge(BridgeSettings(audit_log=scratch / "dry.jsonl")) as bridge:
        assert bridge.heartbeat() is False
        failures = "corticast_bridge_heartbeat_failures_total"
        assert bridge.registry.get_sample_value(failures) == 0


def test_query_device_says_what_it_needs(scratch):
    bridge = StimulationBridge(BridgeSettings(audit_log=scratch / "a.jsonl"))
    with pytest.raises(RuntimeError, match=r"call start\(\) before query_device\(\)"):
        bridge.query_device()
    with bridge:
        message = "query_device() needs a device; this bridge is in dry run"
        with pytest.raises(RuntimeError) as raised:
            bridge.query_device()
        assert str(raised.value) == message


# -- decisions and their records -------------------------------------------------------------


def test_each_outcome_gives_its_reason(scratch):
    with live_bridge(scratch) as (bridge, _device):
        bridge.arm()
        assert bridge.request_stimulation(REQUEST, OK).reason == "acknowledged by the device"
        mangled = StimulationRequest((1, 2), 50, 100, 100, 100, 3e-4)
        object.__setattr__(mangled, "amplitude_ua", float("nan"))
        object.__setattr__(mangled, "channels", None)
        blocked = bridge.request_stimulation(mangled, OK)
        expected = "; ".join(f"{v.interlock}: {v.reason}" for v in blocked.violations)
        assert len(blocked.violations) >= 2 and blocked.reason == expected
    with StimulationBridge(BridgeSettings(audit_log=scratch / "dry.jsonl")) as dry:
        dry.arm()
        assert dry.request_stimulation(REQUEST, OK).reason == "dry run: passed every interlock"


def test_failed_and_sent_decisions_carry_the_sequence_the_device_saw(scratch):
    clock = FakeClock()
    with live_bridge(scratch, clock=clock, ack_timeout_s=SILENCE_S) as (bridge, device):
        bridge.arm()
        sent = bridge.request_stimulation(REQUEST, OK)
        clock.advance(REFRACTORY_PAST_S)
        device.plan(MessageType.STIMULATE, "silent")
        failed = bridge.request_stimulation(REQUEST, OK)
        assert (sent.outcome, failed.outcome) == ("sent", "failed")
        assert [sent.sequence, failed.sequence] == device.stimulate_sequences()
        assert _requests_total(bridge, "sent", "none") == 1
        assert _requests_total(bridge, "failed", "no_ack") == 1
    transmits = _records(scratch, "transmit")
    assert [(t["request_id"], t["sequence"]) for t in transmits] == [
        (sent.request_id, sent.sequence),
        (failed.request_id, failed.sequence),
    ]


def test_a_train_the_device_refuses_carries_the_sequence_it_refused(scratch):
    with live_bridge(scratch) as (bridge, device):
        bridge.arm()
        device.plan(MessageType.STIMULATE, "nack")
        refused = bridge.request_stimulation(REQUEST, OK)
        assert refused.outcome == "rejected" and refused.error_code is not None
        assert [refused.sequence] == device.stimulate_sequences()
    (decision,) = [d for d in _records(scratch, "decision") if d["outcome"] == "rejected"]
    assert decision["sequence"] == refused.sequence


def test_a_healthy_bridge_reports_no_error(scratch):
    with live_bridge(scratch) as (bridge, _device):
        bridge.arm()
        assert bridge.request_stimulation(REQUEST, OK).sent
        assert bridge.status().error is None


def test_a_device_that_disarms_after_a_train_is_a_fault_named_so(scratch):
    with live_bridge(scratch) as (bridge, device):
        bridge.arm()
        device.plan(MessageType.STIMULATE, "ack_disarmed")
        assert bridge.request_stimulation(REQUEST, OK).sent
        status = bridge.status()
        assert status.armed is False
        assert (
            status.last_disarm_reason == "device reports itself disarmed after delivering a train"
        )


def test_trains_are_fsynced_blocked_requests_are_not_and_every_record_says_dry_run_or_not(
    scratch, monkeypatch
):
    fsyncs: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(audit_log.os, "fsync", lambda fd: fsyncs.append(fd) or real_fsync(fd))
    with live_bridge(scratch) as (bridge, _device):
        blocked = bridge.request_stimulation(REQUEST, OK)
        before = len(fsyncs)
        bridge.request_stimulation(REQUEST, OK)  # the same kind again, counted not written
        assert len(fsyncs) == before
        bridge.arm()
        before = len(fsyncs)
        assert bridge.request_stimulation(REQUEST, OK).sent
        assert len(fsyncs) >= before + 2  # the transmit record and the decision
    decisions = _records(scratch, "decision")
    assert decisions[0]["outcome"] == blocked.outcome == "blocked"
    assert [d["dry_run"] for d in decisions] == [False, False]


def test_blocks_are_counted_by_interlock_and_logged_by_how_they_were_recorded(scratch, caplog):
    with live_bridge(scratch) as (bridge, _device), caplog.at_level(logging.DEBUG, _LOGGER):
        bridge.request_stimulation(REQUEST, OK)
        bridge.request_stimulation(REQUEST, OK)
        blocks = bridge.registry.get_sample_value(
            "corticast_bridge_interlock_blocks_total", {"interlock": "armed"}
        )
        assert blocks == 2
    levels = [
        (r.levelno, r.getMessage()) for r in caplog.records if r.getMessage().startswith("request ")
    ]
    assert [level for level, _ in levels] == [logging.INFO, logging.DEBUG]
    assert levels[0][1].startswith("request 1 blocked: armed: ")


def test_a_failed_train_is_logged_as_an_error(scratch, caplog):
    clock = FakeClock()
    with live_bridge(scratch, clock=clock, ack_timeout_s=SILENCE_S) as (bridge, device):
        bridge.arm()
        device.plan(MessageType.STIMULATE, "silent")
        with caplog.at_level(logging.INFO, _LOGGER):
            assert bridge.request_stimulation(REQUEST, OK).outcome == "failed"
        clock.advance(REFRACTORY_PAST_S)
        bridge.arm()
        with caplog.at_level(logging.INFO, _LOGGER):
            assert bridge.request_stimulation(REQUEST, OK).sent
    outcomes = {
        r.getMessage().split()[2].rstrip(":"): r.levelno
        for r in caplog.records
        if r.getMessage().startswith("request ")
    }
    assert outcomes == {"failed": logging.ERROR, "sent": logging.INFO}
