"""The supervisor and a model reload caught mid-way: between putting its new scheduler in place
and starting it, or ending while a round looks at the scheduler it replaced. Real schedulers on
a real ring buffer, a dry-run bridge (its audit log on disk); the predictors crash on their
first window, as a failing GPU or session would."""

from __future__ import annotations

import threading
from collections.abc import Callable
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


def _a_full_ring_and_its_failed_scheduler() -> tuple[RingBuffer, Scheduler]:
    """A ring holding two windows, and a scheduler that has failed on its first."""
    ring = RingBuffer(64)
    frames = np.zeros((32, *ring.grid.shape), dtype=np.float32)
    ring.append(frames, np.arange(32) / 277.78, np.ones(32, dtype=np.bool_), pylsl.local_clock())
    first = _crashing_scheduler(ring).start()
    wait_until(lambda: not first.running, 30, "the first scheduler to fail")
    return ring, first


def _faults(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("corticast_daemon_faults_total", {"stage": "predictor"}) or 0


def test_a_scheduler_seen_before_its_reload_started_it_is_still_reported_when_it_fails(tmp_path):
    """The reload (on a thread of its own) puts its new scheduler in place, then starts it. A
    supervisor round between the two saw a scheduler not running with no error, and took it
    as already reported: when that scheduler then failed, armed, nothing disarmed (seen in a
    full run: armed 30 s on a dead predictor). A scheduler is reported once it has failed."""
    ring, first = _a_full_ring_and_its_failed_scheduler()
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


class _StagesHeldAfterRead:
    """The stages, whose scheduler the supervisor reads; the first read after
    :attr:`after_read` is set runs it before returning what was read, holding the supervisor
    between its read and what it does on it."""

    def __init__(self, scheduler: Scheduler, bridge: StimulationBridge) -> None:
        self.current = scheduler
        self.bridge = bridge
        self.stopping = False
        self.after_read: Callable[[], None] | None = None

    @property
    def scheduler(self) -> Scheduler:
        read = self.current
        if self.after_read is not None:
            after_read, self.after_read = self.after_read, None
            after_read()
        return read


def test_a_reload_that_finishes_after_the_supervisor_read_the_dead_scheduler_is_not_redone(
    tmp_path,
):
    """A round reads the dead (already reported) scheduler; the reload in flight then puts its
    new scheduler in place, starts it, and ends; the round goes on to find no reload in
    flight and started another, while the new scheduler ran: a daemon's reload closes the
    predictor in use (``Daemon._reload_model``: "its scheduler has ended") and puts a third
    scheduler in place, the second left running, unwatched, on a closed model."""
    _, first = _a_full_ring_and_its_failed_scheduler()
    bridge = StimulationBridge(BridgeSettings(audit_log=tmp_path / "audit.jsonl"))
    stages = _StagesHeldAfterRead(first, bridge)
    let_load = threading.Event()
    idle = RingBuffer(64)  # no frames come: a scheduler on it runs, waiting for its first window
    started_while_running: list[bool] = []
    made: list[Scheduler] = []

    def reload_model() -> None:
        started_while_running.append(stages.current.running)
        assert let_load.wait(60)
        new = Scheduler(idle, CrashingPredictor(_INFO), lambda _: None)
        made.append(new)
        stages.current = new
        new.start()

    supervisor = Supervisor(
        stages,
        DaemonMetrics(CollectorRegistry(), Settings()),
        every_s=0.05,
        open_bridge=lambda: None,
        reload_model=reload_model,
    )
    try:
        with bridge:
            assert not supervisor._repair_predictor()  # reported, the reload started
            reload_in_flight = supervisor._reload

            def reload_finishes() -> None:
                let_load.set()
                reload_in_flight.join(60)

            stages.after_read = reload_finishes
            supervisor._repair_predictor()  # reads the dead one; the reload ends meanwhile
            if supervisor._reload is not None:
                supervisor._reload.join(60)
            assert stages.current.running
            assert started_while_running == [False], "a reload started while the model ran"
    finally:
        for scheduler in made:
            scheduler.stop()
