"""The supervisor and a stream whose timestamps leave the rate it declares: a real rig on
loopback, a real ingestor and a dry-run bridge (its audit log on disk); no model, which the
stream check does not need."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

import numpy as np
import pylsl
import pytest
from prometheus_client import CollectorRegistry

from bench.rig.rig import SimulatedRig
from firmware_bridge import BridgeSettings, StimulationBridge
from service.config import Settings
from service.core.grid import NOMINAL_RATE_HZ
from service.daemon.metrics import DaemonMetrics
from service.daemon.status import Readiness
from service.daemon.supervisor import Supervisor
from service.ingest.ingestor import Ingestor
from service.ingest.settings import IngestSettings, StreamSettings
from tests.service._clocked_pattern import ClockedPattern
from tests.service._loop_harness import wait_until


@dataclass
class _Stages:
    """What the supervisor watches: a stream and a bridge, no model."""

    ingestor: Ingestor
    bridge: StimulationBridge
    scheduler: None = None
    loop: None = None
    ar_baseline: None = None
    scale_updater: None = None
    stopping: bool = False
    marker_inlets: tuple = ()

    def markers_unread(self) -> tuple[str, ...]:
        return ()

    def stalls(self) -> tuple:
        return ()

    def readiness(self) -> Readiness:
        return Readiness.judge(
            self.ingestor, None, self.bridge, started=True, stopping=False, reload_failure=None
        )


def _rate_reasons(stages: _Stages) -> list[str]:
    return [reason for reason in stages.readiness().reasons if reason.startswith("stream rate")]


def _unexpected(what: str):
    def call() -> None:
        pytest.fail(f"the supervisor tried to {what}")

    return call


def _supervisor(stages: _Stages, registry: CollectorRegistry) -> Supervisor:
    """A supervisor of ``stages`` whose rounds come every 20 ms and must neither reopen the
    bridge nor reload a model (there is none)."""
    return Supervisor(
        stages,
        DaemonMetrics(registry, Settings()),
        every_s=0.02,
        open_bridge=_unexpected("reopen the bridge"),
        reload_model=_unexpected("reload a model"),
    )


def test_an_armed_loop_whose_stream_leaves_its_rate_is_disarmed_and_not_rearmed(
    tmp_path, source_id
):
    """Armed while the stream's clock runs at 200 Hz (the bridge alone, as if armed before the
    rate changed): the supervisor's stream check disarms it as a fault naming both rates.
    Back at 277.78 Hz the stream is no longer a reason not to be ready, and the bridge stays
    disarmed: arming again is the operator's."""
    clock = ClockedPattern(200.0)
    rig = SimulatedRig(clock, source_id=source_id, speed=4, wait_for_consumer=True)
    ingest = IngestSettings(rate_window_s=2.0, inlet_buffer_s=10)  # no overflow: no gap
    bridge = StimulationBridge(BridgeSettings(audit_log=tmp_path / "audit.jsonl"))
    registry = CollectorRegistry()
    with rig, Ingestor(StreamSettings(source_id=source_id), ingest) as ingestor, bridge:
        stages = _Stages(ingestor, bridge)
        supervisor = _supervisor(stages, registry)
        wait_until(lambda: math.isfinite(ingestor.status().measured_rate_hz), 10, "a rate")
        [reason] = _rate_reasons(stages)
        assert reason.startswith("stream rate 200.00 Hz measured from its timestamps")
        bridge.arm()
        with supervisor:
            wait_until(lambda: not bridge.armed, 10, "the fault to disarm")
            disarmed = bridge.status()
            # The fault is counted just after its disarm (the disarm comes first).
            counted = {"stage": "stream"}
            wait_until(
                lambda: registry.get_sample_value("corticast_daemon_faults_total", counted),
                10,
                "the fault to be counted",
            )
            faults = registry.get_sample_value("corticast_daemon_faults_total", counted)

            clock.rate_hz = NOMINAL_RATE_HZ
            wait_until(lambda: not _rate_reasons(stages), 10, "the rate back within tolerance")
            time.sleep(10 * 0.02)  # rounds of the supervisor, each of which could arm or fault
            assert not bridge.armed
            assert (
                registry.get_sample_value("corticast_daemon_faults_total", {"stage": "stream"})
                == faults
            )
    assert disarmed.last_disarm_cause == "fault"
    assert disarmed.last_disarm_reason.startswith("stream fault: stream rate 200.00 Hz measured")
    assert "[stream] sample_rate_hz is 277.78 Hz" in disarmed.last_disarm_reason
    assert faults == 1
    assert ingestor.status().error is None


def test_an_armed_loop_whose_stream_runs_ahead_of_the_lsl_clock_is_disarmed(tmp_path, source_id):
    """Armed on a stream stamped on this host's LSL clock, whose rig's clock then jumps 5 s
    ahead (a clock-sync offset gone bad): the supervisor's stream check disarms it as a fault
    naming the lead, before any train is asked on it."""
    info = pylsl.StreamInfo("corticast-rig", "ECoG", 360, NOMINAL_RATE_HZ, "float32", source_id)
    outlet = pylsl.StreamOutlet(info)
    ingest = IngestSettings(lost_after_s=30, stale_after_frames=60 * 278)  # no timing
    bridge = StimulationBridge(BridgeSettings(audit_log=tmp_path / "audit.jsonl"))
    stream = StreamSettings(source_id=source_id, resolve_timeout_s=5.0)
    registry = CollectorRegistry()

    def push(count: int, ahead_s: float) -> None:
        newest = pylsl.local_clock() + ahead_s
        stamps = [newest - (count - 1 - k) / NOMINAL_RATE_HZ for k in range(count)]
        outlet.push_chunk(np.zeros((count, 360), dtype=np.float32), stamps)

    with Ingestor(stream, ingest) as ingestor, bridge:
        stages = _Stages(ingestor, bridge)
        supervisor = _supervisor(stages, registry)
        assert outlet.wait_for_consumers(5)
        push(200, ahead_s=-0.01)  # 0.72 s of stream, stamped as it was taken: measured
        wait_until(lambda: ingestor.status().samples == 200, 10, "the stream")
        reasons = stages.readiness().reasons
        assert not [r for r in reasons if r.startswith("stream")], reasons  # no model: none
        bridge.arm()
        with supervisor:
            push(4, ahead_s=5.0)
            wait_until(lambda: not bridge.armed, 10, "the fault to disarm")
            disarmed = bridge.status()
    assert disarmed.last_disarm_cause == "fault"
    reason = disarmed.last_disarm_reason
    assert re.match(r"stream fault: stream stamped (4\.9|5\.0)\d\d s ahead of this host", reason)
    assert reason.endswith(", while armed")
