"""The daemon: every stage of the closed loop in one process, started, watched and stopped.

ingest thread -> scheduler thread (predictor -> ``ClosedLoop``: publish, score, waves, policy,
bridge) plus the ZeroMQ query thread, the bridge's heartbeat thread and a supervisor. It
starts disarmed. The supervisor checks every stage every ``loop.supervise_every_s``; a fault
in any stage disarms stimulation first, is logged and counted, and is then repaired where it
can be: the ingestor reconnects by itself (and is restarted if it died), a crashed predictor
is reloaded and the scheduler restarted, a lost bridge is reopened and stays disarmed until an
operator arms it again. Readiness means: the stream is live, the model warm, the bridge
connected (or in dry run).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge
from threadpoolctl import threadpool_limits

from firmware_bridge import BridgeMetrics, StimulationBridge
from service import _systemd
from service._worker import BackgroundWorker
from service.backends import predictor_from_settings
from service.closed_loop import ClosedLoop
from service.config import PolicySettings, Settings
from service.inference_metrics import InferenceMetrics
from service.ingestor import Ingestor
from service.live_accuracy import LiveAccuracy
from service.policy import StimulationPolicy
from service.predictor import ModelMismatchError, Predictor, StreamSpec
from service.scheduler import Scheduler, check_policy_fits
from service.waves import WaveEstimator
from service.zmq_publisher import ZmqPublisher
from service.zmq_query import QueryServer

_log = logging.getLogger("corticast.daemon")


FAULT_STAGES = ("stream", "ingest", "predictor", "waves", "bridge")
"""Where the supervisor finds faults (the ``stage`` label of ``corticast_daemon_faults``)."""


class DaemonStateError(RuntimeError):
    """An operator action that the daemon's current state does not allow (e.g. arming while
    not ready); the message says why."""


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reasons: tuple[str, ...]


class Daemon:
    """Owns and wires every stage; see the module docstring.

    Parameters
    ----------
    settings
        The validated configuration.
    registry
        Where every metric is registered (served at ``/metrics``).
    """

    def __init__(self, settings: Settings, *, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self.ingestor = Ingestor(
            settings.stream, settings.ingest, registry=self.registry, wait_for_stream=True
        )
        grid = self.ingestor.grid
        self.stream_spec = StreamSpec(grid=grid, sample_rate_hz=settings.stream.sample_rate_hz)
        self.publisher = ZmqPublisher(settings.zmq, registry=self.registry)
        self.query = QueryServer(
            settings.zmq, self.publisher.history, self.status, registry=self.registry
        )
        self.bridge: StimulationBridge | None = None
        self.predictor: Predictor | None = None
        self.scheduler: Scheduler | None = None
        self.loop: ClosedLoop | None = None
        self.accuracy: LiveAccuracy | None = None
        self.model_paths = {"path": str(settings.model.path), "step_path": None}
        self._estimator = WaveEstimator(
            settings.waves, grid=grid, sample_rate_hz=settings.stream.sample_rate_hz
        )
        self._policy_settings = settings.policy
        self._control_lock = threading.Lock()
        self._started = False
        self._notified_ready = False
        self._bridge_failed_logged: StimulationBridge | None = None
        self._blas = None
        self._switch_interval_s: float | None = None
        self._metrics = _DaemonMetrics(self.registry)
        self._inference_metrics = InferenceMetrics(self.registry)
        self._bridge_metrics = BridgeMetrics(self.registry)
        self._supervisor = _Supervisor(self)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Daemon:
        """Load and warm the model, open the sockets and the bridge, start every thread.

        The stream need not exist yet: the supervisor keeps looking for it (not ready until
        then). A model that cannot load, or a socket that cannot bind, raises here.
        """
        # numpy/scipy on one thread each: BLAS threads fighting the model's and the ingest
        # thread for two cores make a 1 ms wave estimate take 20 ms.
        self._blas = threadpool_limits(1)
        self._switch_interval_s = sys.getswitchinterval()
        sys.setswitchinterval(self.settings.loop.gil_switch_interval_ms / 1000)
        self.predictor = self._build_predictor(self.settings.model.path, None)
        self.accuracy = LiveAccuracy(*_normalisation(self.predictor), registry=self.registry)
        self.publisher.start()
        self.query.start()
        self._open_bridge()
        self.ingestor.start()  # looks for the stream on its own thread until it appears
        self.loop = ClosedLoop(
            self.ingestor.ring,
            self._estimator,
            StimulationPolicy(
                self._policy_settings,
                grid=self.stream_spec.grid,
                sample_rate_hz=self.stream_spec.sample_rate_hz,
            ),
            lambda: self.bridge,
            self.publisher,
            self.accuracy,
            self.settings.loop,
            sample_rate_hz=self.stream_spec.sample_rate_hz,
            model_healthy=self.model_healthy,
            registry=self.registry,
        )
        self.loop.start()
        self._start_scheduler()
        # Everything loaded so far lives as long as the daemon. Frozen, the garbage collector
        # stops scanning it, so a full collection later (triggered by the loop's own
        # allocations) is short instead of pausing every thread for as long as the heap is big:
        # 40 ms measured at start-up, past the 36 ms staleness limit that disarms.
        gc.collect()
        gc.freeze()
        self._started = True
        self._supervisor.start()
        _log.info("daemon started (disarmed): %s", self.predictor.info)
        return self

    def stop(self) -> None:
        """Disarm, stop intake, close the bridge (flushing the audit log) and the sockets."""
        _systemd.notify("STOPPING=1")
        if self.bridge is not None:
            self.bridge.disarm("daemon stopping")
        self._supervisor.stop()
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.loop is not None:
            self.loop.stop()
        self.ingestor.stop()
        if self.bridge is not None:
            self.bridge.close()
        self.query.stop()
        self.publisher.stop()
        if self.predictor is not None:
            self.predictor.close()
        if self._blas is not None:
            self._blas.restore_original_limits()
        if self._switch_interval_s is not None:
            sys.setswitchinterval(self._switch_interval_s)
        if self._started:
            gc.unfreeze()
        self._started = False
        _log.info("daemon stopped")

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ state
    def readiness(self) -> Readiness:
        reasons = []
        if not self._started:
            reasons.append("daemon not started")
        if not self.ingestor.is_fresh():
            status = self.ingestor.status()
            reasons.append(
                "stream not live: "
                + ("no stream found yet" if not status.connected else "data stale")
            )
        if self.scheduler is None or not self.scheduler.running:
            reasons.append("model not running")
        bridge = self.bridge.status() if self.bridge is not None else None
        if bridge is not None and bridge.error is not None:
            reasons.append(f"stimulator bridge failed: {bridge.error}")
        elif bridge is None or not (bridge.dry_run or bridge.connected):
            reasons.append("stimulator bridge not connected")
        return Readiness(not reasons, tuple(reasons))

    def model_healthy(self) -> bool:
        """Running, and (once enough is scored) not worse than persistence on live data."""
        if self.scheduler is None or not self.scheduler.running or self.accuracy is None:
            return False
        if self.accuracy.scored < self.settings.loop.health_min_scored:
            return True
        psnr = self.accuracy.psnr()
        model, floor = (float(np.mean(psnr[k])) for k in ("model", "persistence"))
        return model >= floor - self.settings.loop.health_margin_db

    def status(self) -> dict[str, Any]:
        """JSON-able snapshot for ``/status`` and the ZeroMQ status query."""
        readiness = self.readiness()
        ingest = dataclasses.asdict(self.ingestor.status())
        bridge = self.bridge.status() if self.bridge is not None else None
        latency = np.array(self.loop.recent_latency) if self.loop is not None else np.zeros(0)
        psnr = self.accuracy.psnr() if self.accuracy is not None else {}
        scheduler = self.scheduler
        return _json_safe(
            {
                "ready": readiness.ready,
                "not_ready_reasons": list(readiness.reasons),
                "stream": ingest,
                "model": {
                    **(dataclasses.asdict(self.predictor.info) if self.predictor else {}),
                    "healthy": self.model_healthy(),
                },
                "scheduler": {
                    "stride": self.settings.scheduler.stride,
                    "missing_frames": self.settings.scheduler.missing_frames,
                    "predictions": scheduler.predictions if scheduler else 0,
                    "skipped_windows": scheduler.skipped if scheduler else 0,
                    "refused_windows": scheduler.refused if scheduler else 0,
                    "wave_stage_superseded": self.loop.superseded if self.loop else 0,
                },
                "latency_ms": _percentiles(latency),
                "live_psnr_db": {k: v.tolist() for k, v in psnr.items()},
                "waves": self.loop.latest_wave if self.loop else None,
                "armed": bool(bridge and bridge.armed),
                "bridge": dataclasses.asdict(bridge) if bridge else None,
                "interlocks": self.settings.interlocks.model_dump(mode="json"),
                "policy": self._policy_settings.model_dump(mode="json"),
                "last_stimulation_decision": self.loop.latest_decision if self.loop else None,
                "faults": self._metrics.fault_counts(),
            }
        )

    def latest_prediction(self) -> tuple[dict[str, Any], np.ndarray] | None:
        """Header and frames of the newest published prediction, if any."""
        stored = self.publisher.history.latest()
        return None if stored is None else (stored.header, stored.payload)

    # ------------------------------------------------------------------ control
    def arm(self) -> None:
        """Arm stimulation (an operator's decision); refused unless ready."""
        with self._control_lock:
            readiness = self.readiness()
            if not readiness.ready:
                raise DaemonStateError("cannot arm: " + "; ".join(readiness.reasons))
            if not self.model_healthy():
                raise DaemonStateError(
                    "cannot arm: the model is unhealthy (worse than persistence)"
                )
            self.bridge.arm()
            _log.warning("ARMED by operator")

    def disarm(self, reason: str = "operator request") -> bool:
        """Disarm now; returns whether it was armed."""
        with self._control_lock:
            if self.bridge is None:
                return False
            return self.bridge.disarm(reason)

    def set_policy(self, policy: PolicySettings) -> None:
        """Use new (already validated) policy thresholds from the next prediction on.

        Raises ValueError, and changes nothing, when the thresholds do not fit the stream
        (an electrode off the grid); only the stream knows the grid, not the settings model.
        """
        with self._control_lock:
            new = StimulationPolicy(
                policy, grid=self.stream_spec.grid, sample_rate_hz=self.stream_spec.sample_rate_hz
            )
            self._policy_settings = policy
            self.loop.policy = new
            _log.warning("policy changed: %s", policy.model_dump(mode="json"))

    def swap_model(self, path: Path, step_path: Path | None = None) -> dict[str, Any]:
        """Load and warm another exported model beside the running one, then switch between
        two predictions; the old one is closed after the switch. Raises as loading does
        (``ModelMismatchError`` for a model that does not fit); the running model is then kept.
        """
        with self._control_lock:
            new = self._build_predictor(path, step_path)
            previous = self.scheduler.swap_predictor(new)
            self.accuracy.set_normalisation(*_normalisation(new))
            self.predictor = new
            self.model_paths = {"path": str(path), "step_path": None if step_path is None else
                                str(step_path)}  # fmt: skip
            previous.close()
            _log.warning("model swapped to %s (%s)", path, new.info)
            return dataclasses.asdict(new.info)

    # ------------------------------------------------------------------ internals
    def _build_predictor(self, path: Path, step_path: Path | None) -> Predictor:
        model = self.settings.model
        step = step_path if step_path is not None else model.step_path
        predictor = predictor_from_settings(model, path, step, self.stream_spec)
        try:  # before the scheduler sees it, so a refused model is closed, not leaked
            check_policy_fits(predictor, self.settings.scheduler.missing_frames)
        except ModelMismatchError:
            predictor.close()
            raise
        return predictor

    def _start_scheduler(self) -> None:
        scheduler = self.settings.scheduler
        self.scheduler = Scheduler(
            self.ingestor.ring,
            self.predictor,
            self.loop.handle,
            stride=scheduler.stride,
            past_frames=self.stream_spec.past_frames,
            missing_frames=scheduler.missing_frames,
            max_missing_frames=scheduler.max_missing_frames,
            sample_rate_hz=self.stream_spec.sample_rate_hz,
            metrics=self._inference_metrics,
        )
        self.scheduler.start()

    def _open_bridge(self) -> bool:
        """(Re)open the bridge, disarmed; False (and retried later) if the device is away."""
        bridge = StimulationBridge(
            self.settings.bridge, self.settings.interlocks, metrics=self._bridge_metrics
        )
        try:
            bridge.start()
        except Exception as err:  # a missing device is a state to report, not a crash
            _log.warning("stimulator bridge not connected: %s", err)
            bridge.close()
            self.bridge = None
            return False
        self.bridge = bridge
        return True

    def _replace_failed_bridge(self, error: str) -> None:
        """A bridge whose heartbeat thread died is replaced, but only if it never admitted a
        train: a new bridge starts with empty refractory and budget history, which must not
        forget a train already given. Otherwise it stays down (not ready) until a restart."""
        bridge = self.bridge
        admitted = sum(n for outcome, n in bridge.status().outcomes.items() if outcome != "blocked")
        if self._bridge_failed_logged is not bridge:
            self._fault("bridge", error)
            self._bridge_failed_logged = bridge
        if admitted:
            _log.error(
                "bridge failed after %d admitted train(s); it is not reopened, so its "
                "refractory and budgets cannot be forgotten: restart the daemon", admitted,
            )  # fmt: skip
            return
        bridge.close()
        self._open_bridge()

    def _fault(self, stage: str, error: BaseException | str) -> None:
        """Disarm first, then log and count."""
        if self.bridge is not None:
            self.bridge.disarm(f"{stage} fault: {error}", cause="fault")
        self._metrics.faults.labels(stage).inc()
        _log.error("%s fault: %s", stage, error)

    def _supervise(self) -> None:
        """One round of checks (the supervisor thread calls this). Faults are handled (disarm
        first) before anything slow, such as looking for a lost stream, is tried."""
        if self.bridge is not None and self.bridge.armed and not self.ingestor.is_fresh():
            self._fault("stream", "data stale or stream lost while armed")
        self._metrics.waiting.set(0 if self.ingestor.status().connected else 1)
        if not self.ingestor.running:  # it died (it reconnects by itself while it runs)
            try:
                self.ingestor.raise_if_failed()
            except Exception as err:
                self._fault("ingest", err)
            self.ingestor.stop()
            try:
                self.ingestor.start()
            except Exception as err:  # e.g. the stream found has the wrong format
                _log.error("cannot read the stream: %s", err)
        if self.scheduler is not None and not self.scheduler.running:
            try:
                self.scheduler.raise_if_failed()
            except Exception as err:
                self._fault("predictor", err)
            with self._control_lock:
                self.predictor.close()
                self.predictor = self._build_predictor(
                    Path(self.model_paths["path"]),
                    None if self.model_paths["step_path"] is None
                    else Path(self.model_paths["step_path"]),
                )  # fmt: skip
                self._start_scheduler()
                _log.warning("predictor reloaded after a fault")
        if self.loop is not None and not self.loop.running:
            try:
                self.loop.raise_if_failed()
            except Exception as err:
                self._fault("waves", err)
            self.loop.start()
        if self.bridge is None:
            self._open_bridge()  # the device was not there at start: keep trying
        elif (error := self.bridge.status().error) is not None:
            self._replace_failed_bridge(error)
        self._metrics.armed.set(1 if self.bridge is not None and self.bridge.armed else 0)
        ready = self.readiness().ready
        self._metrics.ready.set(1 if ready else 0)
        if ready and not self._notified_ready:
            self._notified_ready = _systemd.notify("READY=1") or True
        # Liveness, not readiness: the supervisor came round, so the process is not hung. A rig
        # paused between sessions makes the daemon not ready, and must not get it restarted.
        _systemd.notify("WATCHDOG=1")


class _Supervisor(BackgroundWorker):
    def __init__(self, daemon: Daemon) -> None:
        super().__init__("corticast-supervisor")
        self._daemon = daemon

    def _work(self) -> None:
        period = self._daemon.settings.loop.supervise_every_s
        watchdog = _systemd.watchdog_interval_s()
        if watchdog is not None:
            period = min(period, watchdog)
        while not self._stop_requested.wait(period):
            try:
                self._daemon._supervise()
            except Exception:  # the supervisor must outlive whatever it supervises
                _log.exception("supervisor round failed")


class _DaemonMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.faults = Counter(
            "corticast_daemon_faults", "Faults by stage (each disarms first)", ["stage"],
            registry=registry,
        )  # fmt: skip
        for stage in FAULT_STAGES:  # every series from the start, so increase() sees the first
            self.faults.labels(stage)
        self.ready = Gauge("corticast_daemon_ready", "1 when ready", registry=registry)
        self.armed = Gauge("corticast_daemon_armed", "1 while armed", registry=registry)
        self.waiting = Gauge(
            "corticast_daemon_waiting_for_stream", "1 while no stream has been found",
            registry=registry,
        )  # fmt: skip

    def fault_counts(self) -> dict[str, float]:
        return {
            sample.labels["stage"]: sample.value
            for metric in self.faults.collect()
            for sample in metric.samples
            if sample.name.endswith("_total") and sample.value > 0
        }


def _normalisation(predictor: Predictor) -> tuple[np.ndarray, np.ndarray]:
    norm = predictor.metadata.normalisation
    return (
        np.asarray(norm["mean"], dtype=np.float32),
        np.asarray(norm["scale"], dtype=np.float32),
    )


def _percentiles(latency: np.ndarray) -> dict[str, float | None]:
    if latency.size == 0:
        return {"inference_p50": None, "inference_p99": None, "age_p50": None, "age_p99": None}
    inference, age = latency[:, 0] * 1e3, latency[:, 1] * 1e3
    return {
        "inference_p50": float(np.percentile(inference, 50)),
        "inference_p99": float(np.percentile(inference, 99)),
        "age_p50": float(np.percentile(age, 50)),
        "age_p99": float(np.percentile(age, 99)),
    }


def _json_safe(value: Any) -> Any:
    """NaN/inf become None and numpy scalars plain numbers, so the snapshot is strict JSON."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    return value
