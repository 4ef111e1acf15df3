"""The supervisor and a model reload caught between putting its new scheduler in place and
starting it: real schedulers on a real ring buffer, a dry-run bridge (its audit log on disk);
the predictors crash on their first window, as a failing GPU or session would."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pylsl
from prometheus_client import CollectorRegistry

from firmware_bridge import BridgeSettings, StimulationBridge
from service.config import Settings
from service.daemon.metrics import DaemonMetrics
from service.daemon.supervisor import Supervisor
from service.inference.predictor import PredictorInfo
from service.inference.scheduler import Scheduler
from service.ingest.ring_buffer import RingBuffer
from tests.service._fault_injection import CrashingPredictor
from tests.service._loop_harness import wait_until

_INFO = PredictorInfo(
    backend="onnxruntime-cpu", device="cpu", precision="fp32", mode="window",
    model="crashing", model_path="crashing.onnx", model_sha256="0" * 64,
)  # fmt: skip


@dataclass
class _Stages:
    """What the supervisor's predictor step reads: the scheduler now, and the bridge."""

    scheduler: Scheduler
    bridge: StimulationBridge
    stopping: bool = False


def _crashing_scheduler(ring: RingBuffer) -> Scheduler:
    """A scheduler whose first window (due at once: the ring is full) raises."""
    return Scheduler(ring, CrashingPredictor(_INFO), lambda _: None, registry=CollectorRegistry())


def _faults(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("corticast_daemon_faults_total", {"stage": "predictor"}) or 0


def test_a_scheduler_seen_before_its_reload_started_it_is_still_reported_when_it_fails(tmp_path):
    """The reload (on a thread of its own) puts its new scheduler in place, then starts it. A
    supervisor round between the two saw a scheduler not running with no error, and took it
    as already reported: when that scheduler then failed, armed, nothing disarmed (seen in a
    full run: armed 30 s on a dead predictor). A scheduler is reported once it has failed."""
    ring = RingBuffer(64)
    frames = np.zeros((32, *ring.grid.shape), dtype=np.float32)
    ring.append(frames, np.arange(32) / 277.78, np.ones(32, dtype=np.bool_), pylsl.local_clock())
    first = _crashing_scheduler(ring).start()
    wait_until(lambda: not first.running, 30, "the first scheduler to fail")
    bridge = StimulationBridge(BridgeSettings(audit_log=tmp_path / "audit.jsonl"))
    stages = _Stages(first, bridge)
    in_place, let_start = threading.Event(), threading.Event()

    def reload_model() -> None:
        second = _crashing_scheduler(ring)
        stages.scheduler = second  # in place, as Daemon._start_scheduler does, not started yet
        in_place.set()
        let_start.wait(60)
        second.start()

    registry = CollectorRegistry()
    supervisor = Supervisor(
        stages,
        DaemonMetrics(registry, Settings()),
        every_s=0.05,
        open_bridge=lambda: None,
        reload_model=reload_model,
    )
    with bridge:
        supervisor._repair_predictor()  # the first failure reported, the reload started
        assert _faults(registry) == 1
        assert in_place.wait(60)
        supervisor._repair_predictor()  # a round in between: the new scheduler not started
        bridge.arm()
        let_start.set()
        wait_until(lambda: not supervisor.reloading, 30, "the reload to finish")
        second = stages.scheduler
        wait_until(lambda: second is not first and not second.running, 30, "the second to fail")
        supervisor._repair_predictor()
        assert not bridge.armed, "a failed scheduler left the bridge armed"
        assert _faults(registry) == 2
        assert "predictor fault" in (bridge.status().last_disarm_reason or "")
