"""The bridge's own waits age the data a request rests on: the wait for its lock (behind a
heartbeat exchange or another request's fsync) counts in the age the staleness interlock
judges, the transmit record's fsync is judged again just before the STIMULATE leaves, and the
STIMULATE carries the host time of its admission, so the device's deadline covers the fsync.

Real emulator over real UDP, on the real clock (its deadline check needs one); the slow disk is
a fault injection (an audit log that stalls on the transmit record)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from firmware_bridge.audit_log import AuditLog, read_audit_log
from firmware_bridge.config import (
    MAX_SAMPLE_AGE_CEILING_S,
    BridgeSettings,
    EmulatorSettings,
    InterlockSettings,
)
from firmware_bridge.emulator import FirmwareEmulator
from firmware_bridge.errors import ErrorCode
from firmware_bridge.loop_health import LoopHealth
from firmware_bridge.stimulation_bridge import StimulationBridge
from firmware_bridge.udp_transport import UdpTransport

from .test_disarm_races import (
    ACK_TIMEOUT_S,
    DEADLINE_S,
    REQUEST,
    _HoldingRelay,
    _StallingAuditLog,
    _Thread,
)

FRESH = LoopHealth(0.005, 0, True)
STALL_S = 0.5
"""How long the disk stalls: ten times the default staleness limit, five times the device's
default command deadline, so that nothing but a hang of the test machine blurs either."""


@contextmanager
def _link(
    scratch: Any, log: AuditLog, *, relayed: bool = False, **interlocks: Any
) -> Iterator[tuple[Any, Any]]:
    """Bridge and emulator on UDP, armed; ``relayed``: through a relay that can hold the
    device's replies back (``bridge.relay``)."""
    with ExitStack() as stack:
        stack.callback(log.close)
        server = stack.enter_context(UdpTransport.bind("127.0.0.1", 0))
        emulator = FirmwareEmulator(
            BridgeSettings(transport="udp"),
            EmulatorSettings(heartbeat_timeout_s=10),  # no heartbeats here; the test decides
            transport=server,
        )
        port = server.local_address[1]
        relay = _HoldingRelay(port) if relayed else None
        if relay is not None:
            stack.callback(relay.close)
            port = relay.port
        link = stack.enter_context(UdpTransport.connect("127.0.0.1", port))
        settings = BridgeSettings(
            port=port,
            dry_run=False,
            audit_log=scratch / "audit.jsonl",
            ack_timeout_s=ACK_TIMEOUT_S if relayed else 0.1,  # a held reply is waited for
        )
        bridge = StimulationBridge(
            settings,
            InterlockSettings(**interlocks),
            transport=link,
            audit_log=log,
            heartbeat_thread=False,
        )
        bridge.relay = relay
        with emulator, bridge:
            bridge.arm()
            yield bridge, emulator


def _across_a_stalled_fsync(bridge: StimulationBridge, log: Any) -> Any:
    """The decision on a request on fresh data whose transmit record's fsync stalls
    :data:`STALL_S`."""
    request = _Thread(lambda: bridge.request_stimulation(REQUEST, FRESH))
    request.start()
    assert log.stalled.wait(DEADLINE_S), "the request never reached its transmit record"
    time.sleep(STALL_S)
    log.release.set()
    return request.finish()


def test_the_wait_for_the_bridge_lock_counts_in_the_data_age(scratch):
    log = _StallingAuditLog(scratch / "audit.jsonl")
    with _link(scratch, log) as (bridge, _):
        first = _Thread(lambda: bridge.request_stimulation(REQUEST, FRESH))
        first.start()
        assert log.stalled.wait(DEADLINE_S), "the first request never reached its fsync"
        second = _Thread(lambda: bridge.request_stimulation(REQUEST, FRESH))
        second.start()
        assert second.entered.wait(DEADLINE_S)
        time.sleep(STALL_S)  # the second request waits behind the first one's fsync
        log.release.set()
        first.finish()
        decision = second.finish()
    assert "stale_data" in decision.interlocks, decision.reason
    assert decision.health.newest_sample_age_s > InterlockSettings().max_sample_age_s


def test_data_gone_stale_during_the_transmit_fsync_is_not_sent(scratch):
    log = _StallingAuditLog(scratch / "audit.jsonl")
    with _link(scratch, log) as (bridge, emulator):
        decision = _across_a_stalled_fsync(bridge, log)
        assert bridge.armed  # a slow disk is not a fault of the device: still armed
    assert decision.outcome == "blocked" and decision.interlocks == ("stale_data",)
    assert decision.reason.startswith("stale_data: before sending: ")
    assert decision.reason.endswith("; nothing was sent")
    assert decision.violations[0].reason.startswith("before sending: ")
    assert decision.sequence is not None  # its transmit record was written under it
    assert emulator.pulses == ()


def test_a_train_withdrawn_for_stale_data_leaves_refractory_and_budgets_and_restarts_agree(
    scratch,
):
    """Stopped after its transmit record because its data went stale during the fsync, the
    train was never sent: on a day's budget of one, the next request on fresh data is sent at
    once (refractory would have blocked it for 2 s), and a bridge started again on the log
    counts that one train, not two."""
    log = _StallingAuditLog(scratch / "audit.jsonl")
    one_a_day = {"max_trains_per_minute": 1, "max_trains_per_day": 1}
    with _link(scratch, log, **one_a_day) as (bridge, emulator):
        withdrawn = _across_a_stalled_fsync(bridge, log)
        assert withdrawn.withdrawn and withdrawn.interlocks == ("stale_data",), withdrawn.reason
        assert bridge.status().day_budget_left == 1
        again = bridge.request_stimulation(REQUEST, FRESH)
        assert again.outcome == "sent", again.reason
        assert len(emulator.pulses) == 1
    restarted = StimulationBridge(
        BridgeSettings(audit_log=scratch / "audit.jsonl"),
        InterlockSettings(**one_a_day),
        heartbeat_thread=False,
    )
    with restarted:
        assert restarted.status().day_budget_left == 0
        restarted.arm()  # in dry run
        assert restarted.request_stimulation(REQUEST, FRESH).interlocks == (
            "refractory",
            "minute_budget",
            "day_budget",
        )
    starts = [r for r in read_audit_log(scratch / "audit.jsonl") if r["event"] == "start"]
    assert [s["restored_trains"] for s in starts] == [0, 1]


def test_the_device_deadline_counts_from_admission_not_from_after_the_fsync(scratch):
    log = _StallingAuditLog(scratch / "audit.jsonl")
    # A staleness limit past the stall: only the device's deadline stands in the way.
    with _link(scratch, log, max_sample_age_s=MAX_SAMPLE_AGE_CEILING_S) as (bridge, emulator):
        decision = _across_a_stalled_fsync(bridge, log)
    assert decision.outcome == "rejected", decision.reason
    assert decision.error_code == ErrorCode.EXPIRED
    assert emulator.pulses == ()


def test_the_wait_for_the_lock_is_counted_once_in_the_age_judged_before_sending(scratch):
    """The request waits behind a heartbeat whose reply the link holds back; its data are then
    that much older, once. Judged again before sending, the wait was once added twice (the
    age at admission, which holds it, aged by the time since the request came, which holds
    it too): data 0.5 s old, under a 0.8 s limit, were refused as 1 s old."""
    log = AuditLog(scratch / "audit.jsonl")
    with _link(scratch, log, relayed=True, max_sample_age_s=0.8) as (bridge, emulator):
        bridge.relay.holding.set()
        heartbeat = _Thread(bridge.heartbeat)
        heartbeat.start()
        assert bridge.relay.held.wait(DEADLINE_S), "the heartbeat's reply never came"
        request = _Thread(lambda: bridge.request_stimulation(REQUEST, FRESH))
        request.start()
        assert request.entered.wait(DEADLINE_S)
        time.sleep(STALL_S)  # the request waits behind the heartbeat's exchange
        bridge.relay.release()
        assert heartbeat.finish() is True
        decision = request.finish()
    assert decision.health.newest_sample_age_s > STALL_S  # the wait counts at admission
    assert decision.outcome == "sent", decision.reason
    assert len(emulator.pulses) == 1
