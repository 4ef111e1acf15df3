"""The daemon: every stage of the closed loop in one process, started, watched and stopped.

ingest thread -> scheduler thread (predictor -> ``ClosedLoop``: publish, score, waves, policy,
bridge) plus the ZeroMQ query thread, the bridge's heartbeat thread and a supervisor. It
starts disarmed. The supervisor checks every stage every ``loop.supervise_every_s``; a fault
in any stage disarms stimulation first, is logged and counted, and is then repaired where it
can be: the ingestor reconnects by itself (and is restarted if it died), a crashed predictor
is reloaded (on a thread of its own: a TensorRT engine build can take minutes) and the
scheduler restarted, a lost bridge is reopened and stays disarmed until an operator arms it
again. Each repair step is independent: one that fails is logged, counted and retried on its
own (``service.daemon._repair_schedule``) while the others go on, and every round the supervisor
completes pings the systemd watchdog (liveness, ready or not). Readiness means: the stream is
live, the model warm, the bridge connected (or in dry run).

Disarming never waits: an operator's disarm, a fault's and :meth:`Daemon.stop`'s go straight to
the bridge, whatever else is in progress. Model changes (a hot swap, a reload after a fault) are
serialised among themselves by a lock held through the slow load and warm-up; only the
hand-over of a loaded model to the scheduler takes the short lock that :meth:`Daemon.stop`
also takes. Once stopping has begun, arming is refused, and an arm that raced it is undone.
A model just swapped in or reloaded is *unproven* until enough of its predictions have been
scored live (``service.loop.model_health``): arming is allowed then, but the bridge's ``model``
interlock blocks every request until the model is proven healthy.
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

from firmware_bridge import BridgeMetrics, Disarmed, StimulationBridge
from service.config import PolicySettings, Settings
from service.core.errors import CorticastError
from service.core.worker import BackgroundWorker
from service.daemon import _systemd
from service.daemon._repair_schedule import RepairSchedule
from service.inference.backends import predictor_from_settings
from service.inference.metrics import InferenceMetrics
from service.inference.model_files import ModelFiles
from service.inference.predictor import (
    BackendUnavailableError,
    ModelMismatchError,
    Predictor,
    StreamSpec,
)
from service.inference.scheduler import Scheduler, check_missing_frame_policy_fits
from service.ingest.ingestor import Ingestor
from service.loop.closed_loop import ClosedLoop
from service.loop.live_accuracy import LiveAccuracy
from service.loop.model_health import ModelHealth
from service.policy.limits import check_policy_limits
from service.policy.stimulation_policy import StimulationPolicy
from service.waves.estimator import WaveEstimator
from service.zmq_api.publisher import ZmqPublisher
from service.zmq_api.query import QueryServer

_log = logging.getLogger("corticast.daemon")


FAULT_STAGES = ("stream", "ingest", "predictor", "waves", "bridge")
"""Where the supervisor finds faults (the ``stage`` label of ``corticast_daemon_faults``)."""
SUPERVISOR_STEPS = ("stream", "ingest", "predictor", "waves", "bridge", "gauges")
"""The supervisor's steps, each tried on its own every round (the ``step`` label of
``corticast_daemon_supervisor_step_failures``)."""
_EVERY_ROUND = ("stream", "gauges")
"""Checks rather than repairs: tried every round even after a failure (the stream check is
what disarms on stale data), never postponed by the repair steps' backoff."""
_HANDOVER_TIMEOUT_S = 5.0
"""Longest :meth:`Daemon.stop` waits for a model hand-over in progress (it waits out one
inference); past it the predictor counts as in use and is left open."""


class DaemonStateError(CorticastError, RuntimeError):
    """An operator action that the daemon's current state does not allow (e.g. arming while
    not ready or while stopping); the message says why."""


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
        step = settings.model.step_path if settings.model.mode == "stream" else None
        self.model_files = ModelFiles(settings.model.path, step)
        """What the model runs from: the configured files, then each swap's."""
        self._estimator = WaveEstimator(
            settings.waves, grid=grid, sample_rate_hz=settings.stream.sample_rate_hz
        )
        self._policy_settings = settings.policy
        # Model changes one at a time, held through the slow load (never taken by disarm).
        self._swap_lock = threading.Lock()
        # Short: a loaded model's hand-over to the scheduler, policy changes, and stop()'s
        # look at which predictor to close. Never held while loading or talking to the device.
        self._state_lock = threading.Lock()
        self._stopping = threading.Event()
        self._stop_once = threading.Lock()  # only begin_stop() takes it
        self._stopped = False
        self._started = False
        self._notified_ready = False
        self._bridge_failed_logged: StimulationBridge | None = None
        self._scheduler_fault_reported: Scheduler | None = None
        self._reload: threading.Thread | None = None
        self._reload_error: BaseException | None = None
        self._blas = None
        self._switch_interval_s: float | None = None
        self._metrics = _DaemonMetrics(self.registry)
        self._repairs = RepairSchedule(
            self._metrics.step_failures, first_retry_s=settings.loop.supervise_every_s
        )
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
        self.predictor = self._build_predictor(self.model_files)
        self.accuracy = LiveAccuracy(*_normalisation(self.predictor), registry=self.registry)
        self.publisher.start()
        self.query.start()
        try:
            self._open_bridge()
        except Exception as err:  # a missing device is a state to report, not a crash
            _log.warning("stimulator bridge not connected (the supervisor keeps trying): %s", err)
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

    def begin_stop(self) -> None:
        """Refuse arming from now on and disarm: the first step of :meth:`stop`, which a signal
        handler may take early. Never waits on a model load or an arm in progress; idempotent
        (the first call disarms)."""
        with self._stop_once:
            first = not self._stopping.is_set()
            self._stopping.set()
        if not first:
            return
        _systemd.notify("STOPPING=1")
        bridge = self.bridge
        if bridge is not None:
            bridge.disarm("daemon stopping")

    def stop(self) -> None:
        """Disarm, stop intake, close the bridge (flushing the audit log) and the sockets.

        Does not wait for a model load in progress (a swap, or a reload after a fault): that
        load closes what it loaded when it finds the daemon stopping. A predictor that a thread
        which did not stop in time may still be using is left open (and logged): closing it
        under a running inference could crash the process. Idempotent.
        """
        self.begin_stop()
        if self._stopped:
            return
        self._stopped = True
        self._supervisor.stop()
        scheduler_ended = self.scheduler.stop() if self.scheduler is not None else True
        if self.loop is not None:
            self.loop.stop()
        self.ingestor.stop()
        if self.bridge is not None:
            self.bridge.close()
        self.query.stop()
        self.publisher.stop()
        self._close_predictor(scheduler_ended)
        if self._reload is not None and self._reload.is_alive():
            _log.warning("a model reload is still loading; it closes what it loads")
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
        if self._stopping.is_set():
            reasons.append("daemon stopping")
        if not self.ingestor.is_fresh():
            status = self.ingestor.status()
            reasons.append(
                "stream not live: "
                + ("no stream found yet" if not status.connected else "data stale")
            )
        if self.scheduler is None or not self.scheduler.running:
            failed = self._repairs.failing().get("predictor")
            reasons.append("model not running" + (f": reload failed: {failed}" if failed else ""))
        bridge = self.bridge.status() if self.bridge is not None else None
        if bridge is not None and bridge.error is not None:
            reasons.append(f"stimulator bridge failed: {bridge.error}")
        elif bridge is None or not (bridge.dry_run or bridge.connected):
            reasons.append("stimulator bridge not connected")
        return Readiness(not reasons, tuple(reasons))

    def model_health(self) -> ModelHealth:
        """The running model's health on its own live scores (``service.loop.model_health``)."""
        running = self.scheduler is not None and self.scheduler.running
        return ModelHealth.judge(self.accuracy, self.settings.loop, running=running)

    def model_healthy(self) -> bool:
        """What the bridge's ``model`` interlock is told: running, scored on at least
        ``[loop] health_min_scored`` live predictions since it was loaded, and not worse
        than persistence on them. An unproven model is not healthy."""
        return self.model_health().healthy

    def status(self) -> dict[str, Any]:
        """JSON-able snapshot for ``/status`` and the ZeroMQ status query."""
        readiness = self.readiness()
        ingest = dataclasses.asdict(self.ingestor.status())
        bridge = self.bridge.status() if self.bridge is not None else None
        latency = np.array(self.loop.recent_latency) if self.loop is not None else np.zeros(0)
        psnr = self.accuracy.psnr() if self.accuracy is not None else {}
        health = self.model_health()
        scheduler = self.scheduler
        return _json_safe(
            {
                "ready": readiness.ready,
                "not_ready_reasons": list(readiness.reasons),
                "stream": ingest,
                "model": {
                    **(dataclasses.asdict(self.predictor.info) if self.predictor else {}),
                    "files": self.model_files.as_dict(),
                    "healthy": health.healthy,
                    "health": {
                        "state": health.state,
                        "scored": health.scored,
                        "needed": health.needed,
                        "summary": health.describe(),
                    },
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
                "supervisor_steps_failing": self._repairs.failing(),
            }
        )

    def latest_prediction(self) -> tuple[dict[str, Any], np.ndarray] | None:
        """Header and frames of the newest published prediction, if any."""
        stored = self.publisher.history.latest()
        return None if stored is None else (stored.header, stored.payload)

    # ------------------------------------------------------------------ control
    def arm(self) -> None:
        """Arm stimulation (an operator's decision).

        Refused while stopping, unless ready, and when the model has been judged unhealthy
        (worse than persistence on live data). Allowed while the model is unproven (just
        started, swapped or reloaded): the bridge's ``model`` interlock blocks every request
        until it has been scored, so arming early only lets stimulation start the moment the
        model is proven. Takes no lock that a model load holds; an arm that races
        :meth:`stop` is undone and refused.

        Raises
        ------
        DaemonStateError
            Stopping, not ready, or the model unhealthy; the message says which.
        """
        if self._stopping.is_set():
            raise DaemonStateError("cannot arm: the daemon is stopping")
        readiness = self.readiness()
        if not readiness.ready:
            raise DaemonStateError("cannot arm: " + "; ".join(readiness.reasons))
        health = self.model_health()
        if health.state == "unhealthy":
            raise DaemonStateError(f"cannot arm: the model is {health.describe()}")
        bridge = self.bridge
        if bridge is None:  # replaced between the readiness check and here
            raise DaemonStateError("cannot arm: stimulator bridge not connected")
        bridge.arm()
        # stop() sets _stopping before it disarms; seen here, the disarm may have come
        # before this arm took effect, so undo it.
        if self._stopping.is_set():
            bridge.disarm("daemon stopping (an arm raced the stop)")
            raise DaemonStateError("cannot arm: the daemon is stopping")
        _log.warning("ARMED by operator")

    @property
    def armed(self) -> bool:
        """Whether the bridge allows stimulation now."""
        bridge = self.bridge
        return bridge is not None and bridge.armed

    def disarm(self, reason: str = "operator request") -> Disarmed:
        """Disarm now, without waiting for anything in progress (a model load, an arm);
        returns what the bridge did (nothing was armed, and no device confirmed, without one)."""
        bridge = self.bridge
        if bridge is None:
            return Disarmed(was_armed=False, device_confirmed=False)
        return bridge.disarm(reason)

    def set_policy(self, policy: PolicySettings) -> None:
        """Use new (already validated) policy thresholds from the next prediction on.

        Raises :class:`~service.policy.limits.PolicyLimitError`, and changes nothing, when the
        policy does not fit the interlocks or the stream's grid: the check the config loader
        runs on the policy in the file.
        """
        check_policy_limits(policy, self.settings.interlocks, self.stream_spec.grid)
        with self._state_lock:
            new = StimulationPolicy(
                policy, grid=self.stream_spec.grid, sample_rate_hz=self.stream_spec.sample_rate_hz
            )
            self._policy_settings = policy
            self.loop.policy = new
            _log.warning("policy changed: %s", policy.model_dump(mode="json"))

    def swap_model(self, path: Path, step_path: Path | None = None) -> dict[str, Any]:
        """Load and warm another exported model beside the running one, then switch between
        two predictions; the old one is closed after the switch. The new model starts
        unproven (its live scores start from nothing).

        Only files inside ``[model] directory`` and under ``[model] max_file_bytes`` load; in
        stream mode ``step_path`` defaults to the step graph beside ``path`` and must be the
        one exported with it (``service.inference.model_files``). Swaps wait for each other;
        disarming and stopping never wait for a swap.

        Returns
        -------
        dict
            What serves now: ``model`` (the predictor's info) and the files it runs from,
            resolved (``path``, ``step_path``; None outside stream mode).

        Raises
        ------
        ModelFileError
            If the files break the model directory's rules (nothing is loaded).
        DaemonStateError
            If the daemon is stopping (before or during the load; what was loaded is closed).
        ModelMismatchError, BackendUnavailableError, ValueError, OSError
            As loading does, or if the backend runs other files than these (a torch backend
            runs ``[model] checkpoint``); the running model is then kept.
        """
        if self._stopping.is_set():
            raise DaemonStateError("cannot swap the model: the daemon is stopping")
        files = ModelFiles.for_swap(path, step_path, self.settings.model)
        with self._swap_lock:
            new = self._build_predictor(files)
            if Path(new.info.model_path) not in files.opened:
                new.close()
                raise BackendUnavailableError(
                    f"the {new.info.backend} backend runs {new.info.model_path!r}, not the "
                    "files asked for: a hot swap changes the ONNX files only"
                )
            with self._state_lock:
                if self._stopping.is_set():
                    new.close()
                    raise DaemonStateError(
                        f"model {str(files.path)!r} was loaded, but the daemon is stopping: "
                        "not used"
                    )
                previous = self.scheduler.swap_predictor(new)  # waits out one inference
                self.accuracy.set_normalisation(*_normalisation(new))  # unproven again
                self.predictor = new
                self.model_files = files
            previous.close()
            _log.warning("model swapped to %s (%s)", files.as_dict(), new.info)
            return {"model": dataclasses.asdict(new.info), **files.as_dict()}

    # ------------------------------------------------------------------ internals
    def _build_predictor(self, files: ModelFiles) -> Predictor:
        predictor = predictor_from_settings(
            self.settings.model, files.path, files.step_path, self.stream_spec
        )
        try:  # before the scheduler sees it, so a refused model is closed, not leaked
            check_missing_frame_policy_fits(predictor, self.settings.scheduler.missing_frames)
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

    def _open_bridge(self) -> None:
        """(Re)open the bridge, disarmed. Raises (and ``self.bridge`` is None) if the device
        or the audit log cannot be opened; the supervisor retries."""
        self.bridge = None
        bridge = StimulationBridge(
            self.settings.bridge, self.settings.interlocks, metrics=self._bridge_metrics
        )
        try:
            bridge.start()
        except BaseException:
            bridge.close()
            raise
        self.bridge = bridge

    def _replace_failed_bridge(self, error: str) -> None:
        """A bridge whose heartbeat thread died is closed and a new one opened, disarmed. The
        new bridge rebuilds refractory and budgets from the audit log the old one closed, so
        no train already given is forgotten. Raises, as opening does, if the new one cannot
        open (``self.bridge`` is then None and the next round retries)."""
        bridge = self.bridge
        if self._bridge_failed_logged is not bridge:
            self._fault("bridge", error)
            self._bridge_failed_logged = bridge
        bridge.close()
        self._open_bridge()

    def _close_predictor(self, scheduler_ended: bool) -> None:
        """stop()'s last look at the model: close it unless a thread may still be using it."""
        if not self._state_lock.acquire(timeout=_HANDOVER_TIMEOUT_S):
            _log.error("a model hand-over did not finish; the predictor is left open")
            return
        try:
            predictor = self.predictor
        finally:
            self._state_lock.release()
        if predictor is None:
            return
        if not scheduler_ended:
            _log.error(
                "the scheduler thread did not stop, so it may still be running the model: "
                "the predictor is left open (closing it under an inference could crash)"
            )
            return
        predictor.close()

    def _reload_predictor(self) -> None:
        """Reload the model from its file after the scheduler died (on a thread of its own:
        a load can take minutes) and start a new scheduler. A failure is kept for the
        supervisor, which reports it and tries again later."""
        try:
            with self._swap_lock:
                if self._stopping.is_set():
                    return
                self.predictor.close()  # its scheduler has ended; frees memory for the new one
                new = self._build_predictor(self.model_files)
                with self._state_lock:
                    if self._stopping.is_set():
                        new.close()
                        return
                    self.predictor = new
                    self.accuracy.set_normalisation(*_normalisation(new))  # unproven again
                    self._start_scheduler()
            _log.warning("predictor reloaded after a fault")
        except Exception as err:
            self._reload_error = err

    def _fault(self, stage: str, error: BaseException | str) -> None:
        """Disarm first, then log and count."""
        bridge = self.bridge
        if bridge is not None:
            bridge.disarm(f"{stage} fault: {error}", cause="fault")
        self._metrics.faults.labels(stage).inc()
        _log.error("%s fault: %s", stage, error)

    def _supervise(self) -> None:
        """One round (the supervisor thread calls this): every step is tried on its own, so
        one that fails (logged, counted, retried later) never keeps the others from running,
        and the round always ends with the watchdog ping. Faults are handled (disarm first)
        before anything slow is tried; nothing slow runs on this thread."""
        steps = (
            ("stream", self._check_stream),
            ("ingest", self._repair_ingestor),
            ("predictor", self._repair_predictor),
            ("waves", self._repair_waves),
            ("bridge", self._repair_bridge),
            ("gauges", self._update_gauges),
        )
        for step, run in steps:
            if step not in _EVERY_ROUND and not self._repairs.due(step):
                continue
            try:
                working = run()
            except Exception as err:
                self._repairs.failed(step, err)
            else:
                if working:
                    self._repairs.succeeded(step)
        # Liveness, not readiness: the supervisor came round, so the process is not hung. A rig
        # paused between sessions makes the daemon not ready, and must not get it restarted.
        _systemd.notify("WATCHDOG=1")

    def _check_stream(self) -> bool:
        if self.bridge is not None and self.bridge.armed and not self.ingestor.is_fresh():
            self._fault("stream", "data stale or stream lost while armed")
        self._metrics.waiting.set(0 if self.ingestor.status().connected else 1)
        return True

    def _repair_ingestor(self) -> bool:
        if self.ingestor.running:  # it reconnects by itself while it runs
            return True
        try:
            self.ingestor.raise_if_failed()
        except Exception as err:
            self._fault("ingest", err)
        self.ingestor.stop()
        self.ingestor.start()  # raises e.g. if the stream found has the wrong format
        return True

    def _repair_predictor(self) -> bool:
        """A dead scheduler is reported once, and its model reloaded on a thread of its own;
        True once the model runs again."""
        scheduler = self.scheduler
        if scheduler is None or scheduler.running:
            return True
        if self._scheduler_fault_reported is not scheduler:
            self._scheduler_fault_reported = scheduler
            try:
                scheduler.raise_if_failed()
            except Exception as err:
                self._fault("predictor", err)
        if self._reload is not None and self._reload.is_alive():
            return False
        if self._reload_error is not None:
            error, self._reload_error = self._reload_error, None
            raise error
        if self._stopping.is_set():
            return False
        self._reload = threading.Thread(
            target=self._reload_predictor, name="corticast-model-reload", daemon=True
        )
        self._reload.start()
        return False

    def _repair_waves(self) -> bool:
        if self.loop is None or self.loop.running:
            return True
        try:
            self.loop.raise_if_failed()
        except Exception as err:
            self._fault("waves", err)
        self.loop.start()
        _log.warning("wave stage restarted")
        return True

    def _repair_bridge(self) -> bool:
        if self.bridge is None:
            self._open_bridge()  # the device was not there: keep trying
            return True
        if (error := self.bridge.status().error) is not None:
            self._replace_failed_bridge(error)
        return True

    def _update_gauges(self) -> bool:
        self._metrics.armed.set(1 if self.bridge is not None and self.bridge.armed else 0)
        ready = self.readiness().ready
        self._metrics.ready.set(1 if ready else 0)
        if ready and not self._notified_ready:
            self._notified_ready = _systemd.notify("READY=1") or True
        return True


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
        self.step_failures = Counter(
            "corticast_daemon_supervisor_step_failures",
            "Supervisor steps that raised (each is retried on its own)", ["step"],
            registry=registry,
        )  # fmt: skip
        for step in SUPERVISOR_STEPS:
            self.step_failures.labels(step)

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
