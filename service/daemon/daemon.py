"""The daemon: every stage of the closed loop in one process, wired, started and stopped.

ingest thread -> scheduler thread (predictor -> ``ClosedLoop``: publish, score, waves, policy,
bridge) plus the ZeroMQ query thread, the bridge's heartbeat thread and a supervisor
(``service.daemon.supervisor``: a fault in any stage disarms stimulation first, then is
repaired where it can be; it also publishes the ``status`` topic). It starts disarmed. What it
reports about itself (readiness, the status document) is built in ``service.daemon.status``;
its own metrics are ``service.daemon.metrics``. The status query and the ``status`` topic
serve the document kept for ``[api] snapshot_max_age_s`` (:meth:`Daemon.status_kept`),
so clients polling it cost the loop's process one render per period at most.

Disarming never waits: an operator's disarm, a fault's and :meth:`Daemon.stop`'s go straight to
the bridge, whatever else is in progress. Model changes (a hot swap, a reload after a fault) are
serialised among themselves by a lock held through the slow load and warm-up; only the
hand-over of a loaded model to the scheduler takes the short lock that :meth:`Daemon.stop`
also takes. Once stopping has begun, arming is refused, and an arm that raced it is undone.
Under ``[model] serving = "auto"`` a swap measures the new files served the way chosen at start
and switches to the stride they need, or is refused when none fits. A model just swapped in
or reloaded is *unproven* until enough of its predictions have been scored live
(``service.loop.model_health``): arming is allowed then, but the bridge's ``model``
interlock blocks every request until the model is proven healthy, and its blend with
persistence (``service.loop.blend``) starts again from the model.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry
from threadpoolctl import threadpool_limits

from firmware_bridge import BridgeMetrics, Disarmed, StimulationBridge
from service.config import ConfigError, PolicySettings, Settings
from service.core.checks import check_range
from service.core.kept_snapshots import Kept, KeptSnapshots
from service.core.realtime_settings import RealtimeSettings
from service.core.stimulation_markers import STREAM_NAME as STIMULATION_STREAM
from service.core.stimulation_markers import AnnouncedTrain, outlet_source_id
from service.core.thread_placement import normal_policy
from service.core.thread_shortage import ThreadsRanOutError, threads_ran_out
from service.daemon import _systemd
from service.daemon._status_topic import StatusTopic
from service.daemon.metrics import DaemonMetrics
from service.daemon.stalls import Stall, stalls
from service.daemon.state_error import DaemonStateError
from service.daemon.status import Readiness, status_document
from service.daemon.supervisor import Supervisor
from service.inference.backends import predictor_from_settings
from service.inference.metrics import InferenceMetrics
from service.inference.model_files import ModelFiles
from service.inference.predictor import (
    BackendUnavailableError,
    ModelMismatchError,
    Predictor,
    StreamSpec,
    hashing_once,
)
from service.inference.resource_failures import host_resources, raise_if_host_failure
from service.inference.scale_updater import ScaleUpdater
from service.inference.scheduler import Scheduler, check_missing_frame_policy_fits, frames_read
from service.inference.serving_choice import UNAVAILABLE, ServingChoice
from service.inference.serving_probe import ServingProbe
from service.ingest.ingestor import Ingestor
from service.ingest.ring_buffer import RingBuffer
from service.ingest.settings import IngestSettings
from service.ingest.stimulation_marker_inlet import StimulationMarkerInlet, marker_metrics
from service.loop.ar_baseline import ArBaseline
from service.loop.blend import Blend
from service.loop.closed_loop import ClosedLoop
from service.loop.live_accuracy import LiveAccuracy
from service.loop.marker_outlet import MarkerOutlet, longest_marker_blank_s
from service.loop.model_health import ModelHealth
from service.policy.limits import check_policy_limits
from service.policy.stimulation_policy import StimulationPolicy
from service.waves.estimator import WaveEstimator
from service.waves.settings import MIN_PAST_FRAMES, window_frames
from service.zmq_api.publisher import ZmqPublisher
from service.zmq_api.query import QueryServer
from service.zmq_api.wire import decode_message

_log = logging.getLogger("corticast.daemon")


_STOP_DISARM_WAIT_S = 2.0
"""Longest a :meth:`Daemon.begin_stop` waits for another thread's to have disarmed: that one
waits on nothing, or on one exchange with the device where no thread could be had for it."""
_HANDOVER_TIMEOUT_S = 5.0
"""Longest :meth:`Daemon.stop` waits for a model hand-over in progress (it waits out one
inference); past it the predictor counts as in use and is left open."""


class Daemon:
    """Owns and wires every stage; see the module docstring.

    Parameters
    ----------
    settings
        The validated configuration.
    registry
        Where every metric is registered (served at ``/metrics``).
    serve_queries
        Answer the ZeroMQ query socket from this process. False when the control plane runs
        in a process of its own (``[api] own_process``): it serves the queries there, reading
        the history through the control link (``service.daemon.control_link``).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        registry: CollectorRegistry | None = None,
        serve_queries: bool = True,
    ) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self.ingestor = Ingestor(
            settings.stream,
            settings.ingest,
            registry=self.registry,
            wait_for_stream=True,
            placement=settings.realtime.placement("ingest"),
        )
        grid = self.ingestor.grid
        self.marker_inlets = _marker_inlets(
            settings.ingest,
            self.ingestor.ring,
            self.registry,
            self._announce,
            self._forget_live_scores,
            # Only where it has one: with none, a stream of that source id is another's.
            own_source_id=(
                outlet_source_id(settings.stream.source_id, settings.stream.name)
                if settings.loop.stimulation_markers
                else None
            ),
        )
        """One per ``[ingest] stimulation_marker_streams``: other tools' trains, blanked."""
        self.stream_spec = StreamSpec(grid=grid, sample_rate_hz=settings.stream.sample_rate_hz)
        self.publisher_io_priority, self.publisher_io_report = _publisher_io_priority(
            settings.realtime
        )
        """(policy, priority) of the thread that sends every prediction (None: the process's),
        and what ``/status`` shows of it."""
        self.publisher = ZmqPublisher(
            settings.zmq, registry=self.registry, io_thread_priority=self.publisher_io_priority
        )
        self._kept = KeptSnapshots(settings.api.snapshot_max_age_s)
        """The status document as the status query and the ``status`` topic serve it."""
        self.query = (
            QueryServer(
                settings.zmq, self.publisher.history, self.status_kept, registry=self.registry
            )
            if serve_queries
            else None
        )
        self.bridge: StimulationBridge | None = None
        self._replaced: StimulationBridge | None = None
        """The last bridge closed for a fault: an arm finding no bridge names it, and the
        bridge opened in its place reports its last disarm."""
        self.predictor: Predictor | None = None
        self.scheduler: Scheduler | None = None
        self.loop: ClosedLoop | None = None
        self._markers: MarkerOutlet | None = None
        self.accuracy: LiveAccuracy | None = None
        self.blend = Blend(settings.loop, registry=self.registry)
        """Model vs persistence per horizon; reset with the live scores at every model change."""
        self.scale_updater = ScaleUpdater(self.ingestor.ring, settings.stream.sample_rate_hz)
        """Feeds a robust-online model its input statistics (idle for a fixed model)."""
        self.ar_baseline: ArBaseline | None = None
        """Refits and scores the live AR baseline (the supervisor restarts its thread)."""
        self.control_plane_down: str | None = (
            None if serve_queries else "control plane (HTTP API, ZeroMQ queries) not started"
        )
        """Why the control plane in a process of its own does not serve (not ready until it
        does: systemd's READY=1 waits for it); None when it serves, or runs in this one."""
        self.control_queries_down: str | None = None
        """Why the control process's ZeroMQ query server does not answer (its watch restarts
        it: ``service.api.query_watch``), as that process reports it; None while it answers."""
        self.serving: ServingChoice | None = None
        """``[model] serving = "auto"``: what the probe measured and chose at start, then what
        each hot swap measured of its files."""
        self._measured_path: Path | None = None
        """The window graph ``serving`` measured (at start with its int8 copies, if any)."""
        self._serving_note: str | None = None
        """After a swap under ``auto``: that only one way (``_way``) was measured."""
        self._min_stride = settings.scheduler.stride
        """The configured ``[scheduler] stride``: under ``auto`` the least any measurement
        chooses (``settings.scheduler.stride`` is the one in force)."""
        self._way_precision = "fp32"
        """Under ``auto``: the precision chosen at start, which a swap's files serve in where
        they can (their int8 copies)."""
        self._configured = settings
        """The settings as configured, before ``auto`` applied a choice to them."""
        self._way = "the way chosen at start"
        """Under ``auto``: the way a swap's files are measured served, as its messages name
        it (nothing was chosen where nothing fitted at start)."""
        step = settings.model.step_graph if settings.model.mode == "stream" else None
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
        # The bridge's hand-over alone (_open_bridge's check and assignment, stop()'s read).
        # Not the state lock: a swap holds that while it waits out an inference, which may
        # never return, and stop() must close the bridge all the same.
        self._bridge_lock = threading.Lock()
        self._stopping = threading.Event()
        self._stop_once = threading.RLock()
        """Only begin_stop() takes it; re-entrant, for a signal handler on the main thread
        may call begin_stop() while that thread is in it (``corticast serve``'s handler, where
        no thread can be had for the disarm)."""
        self._stop_disarmed = threading.Event()
        """Set once the first begin_stop() has disarmed, for a later one to wait for."""
        self._stop_began_on: int | None = None
        """The thread whose begin_stop() came first: a re-entrant call on it waits for nothing."""
        self._stopped = False
        self._started = False
        self._froze_heap = False
        """Whether :meth:`start` froze the heap (``gc.freeze``), for :meth:`stop` to unfreeze."""
        self._blas = None
        self._switch_interval_s: float | None = None
        metrics = DaemonMetrics(self.registry, settings)
        self._metrics = metrics
        self._inference_metrics = InferenceMetrics(self.registry)
        self._bridge_metrics = BridgeMetrics(self.registry)
        self.supervisor = Supervisor(
            self,
            metrics,
            every_s=settings.loop.supervise_every_s,
            open_bridge=self._open_bridge,
            reload_model=self._reload_model,
            publish_status=StatusTopic(
                self.publisher,
                self.status_kept,
                self._kept.forget,
                period_s=settings.zmq.status_period_s,
            ).publish_if_due,
        )
        # Each stage's own thread disarms as it fails (the supervisor's round then repairs it).
        self.ingestor.on_failure = self.supervisor.disarm_at_once("ingest")
        self.scale_updater.on_failure = self.supervisor.disarm_at_once("scale")
        for inlet in self.marker_inlets:
            inlet.on_failure = self.supervisor.disarm_at_once("markers")
        if self.query is not None:
            self.query.on_failure = self.supervisor.disarm_at_once("query")

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Daemon:
        """Load and warm the model, open the sockets and the bridge, start every thread.

        The stream need not exist yet: the supervisor keeps looking for it (not ready until
        then). A model that cannot load, or a socket that cannot bind, raises here.

        Raises
        ------
        ThreadsRanOutError
            If a thread could not start (the process or its unit at its task limit,
            ``TasksMax=``): what was started is stopped first (the bridge closed, its audit
            log with it), for no caller can stop a daemon whose start raised in a ``with``.
        """
        try:
            return self._start()
        except RuntimeError as err:
            if not threads_ran_out(err):
                raise
            self.stop()
            raise ThreadsRanOutError(
                f"no thread could be started ({err}): this process or its systemd unit is at "
                "its task limit (TasksMax=, ulimit -u); the daemon was stopped"
            ) from err

    def _start(self) -> Daemon:
        """:meth:`start`'s work."""
        # numpy/scipy on one thread each: BLAS threads fighting the model's and the ingest
        # thread for two cores make a 1 ms wave estimate take 20 ms.
        self._blas = threadpool_limits(1)
        self._switch_interval_s = sys.getswitchinterval()
        sys.setswitchinterval(self.settings.loop.gil_switch_interval_ms / 1000)
        # The probe's cache keys and the predictor's info name one file; a host out of
        # descriptors or memory is said so (exit 1, which systemd restarts on), not as a read.
        with hashing_once(), host_resources("cannot load the model at start"):
            # Seconds to a minute of back-to-back inference: on a real-time thread (the
            # drop-in's) it would fill a CPU and be stopped by the kernel within its timings,
            # and a swap's measurement, which it is compared with, runs under the normal policy.
            with normal_policy("the serving probe at start"):
                probe = self._choose_serving()
            self.predictor = self._build_served(probe)
        self._check_ring_holds_wave_window()
        self._check_baseline_window()
        self._check_ring_holds_scored_frames(self.predictor)
        running = self.predictor.info
        self._metrics.set_serving(
            self.settings, self.serving, backend=running.backend, precision=running.precision
        )
        self.scale_updater.attach(self.predictor.normaliser)
        loop_settings = self.settings.loop
        self.accuracy = LiveAccuracy(
            *_normalisation(self.predictor),
            registry=self.registry,
            blend=self.blend,
            ar_lags=loop_settings.ar_lags,
            model=self.predictor.info,
            settle_frames=self.settings.marker_settle_frames,
        )
        self.publisher.start()
        if self.query is not None:
            self.query.start()
        try:
            self._open_bridge()
        except Exception as err:  # a missing device is a state to report, not a crash
            _log.warning("stimulator bridge not connected (the supervisor keeps trying): %s", err)
        # Before the inlets: one may open its stream at once, and passes on what it blanks.
        if loop_settings.stimulation_markers:
            settings = self.settings
            self._markers = MarkerOutlet(
                settings.stream.source_id,
                longest_marker_blank_s(
                    ack_timeout_s=settings.bridge.ack_timeout_s,
                    max_train_duration_ms=settings.interlocks.max_train_duration_ms,
                    blank_after_train_ms=loop_settings.blank_after_train_ms,
                    announced_blank_ms=settings.ingest.stimulation_marker_blank_ms,
                ),
                rig_name=settings.stream.name,
            )
            _log.info(
                "stimulation markers on LSL stream %r (source id %r)",
                STIMULATION_STREAM, self._markers.source_id,
            )  # fmt: skip
        self.ingestor.start()  # looks for the stream on its own thread until it appears
        for inlet in self.marker_inlets:  # each looks for its stream on its own thread
            inlet.start()
        self.ar_baseline = ArBaseline(
            self.ingestor.ring,
            self.accuracy,
            sample_rate_hz=self.stream_spec.sample_rate_hz,
            on_fault=lambda error: self.supervisor.fault("ar", error),
            registry=self.registry,
            history_s=loop_settings.ar_history_s,
            refit_every_s=loop_settings.ar_refit_every_s,
        )
        self.ar_baseline.on_failure = self.supervisor.disarm_at_once("ar")
        self.ar_baseline.start()
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
            blend=self.blend,
            idle_share=self.settings.realtime.idle_share,
            markers=self._markers,
            late_after_frames=self.settings.late_artefact_after_frames,
        )
        self.loop.on_failure = self.supervisor.disarm_at_once("waves")
        self.loop.start()
        self.scale_updater.start()
        self._start_scheduler()
        # Everything loaded so far lives as long as the daemon. Frozen, the garbage collector
        # stops scanning it, so a full collection later (triggered by the loop's own
        # allocations) is short instead of pausing every thread for as long as the heap is big:
        # 40 ms measured at start-up, past the 36 ms staleness limit that disarms. A heap frozen
        # already is the freezer's (a program that embeds the daemon, a test run): the daemon
        # neither scans it again nor unfreezes it at stop.
        self._froze_heap = gc.get_freeze_count() == 0
        if self._froze_heap:
            gc.collect()
            gc.freeze()
        self._started = True
        self.supervisor.start()
        _log.info("daemon started (disarmed): %s", self.predictor.info)
        _warn_if_below_persistence(self.model_files)
        return self

    def begin_stop(self) -> None:
        """Refuse arming from now on and disarm: the first step of :meth:`stop`, which a signal
        handler may take early. Never waits on a model load, an arm or a request in progress
        (one stuck in the audit log's fsync: ``StimulationBridge.disarm_without_waiting``);
        idempotent (the first call disarms). A later call on another thread returns once the
        first has disarmed (``_STOP_DISARM_WAIT_S`` at most): what its caller does next (a
        signal's disarm on a thread of its own, then the stop) happens disarmed."""
        with self._stop_once:
            first = not self._stopping.is_set()
            self._stopping.set()
            if first:
                self._stop_began_on = threading.get_ident()
        if not first:
            if self._stop_began_on != threading.get_ident():
                self._stop_disarmed.wait(_STOP_DISARM_WAIT_S)
            return
        try:
            _systemd.notify("STOPPING=1")
            bridge = self.bridge
            if bridge is not None:
                bridge.disarm_without_waiting("daemon stopping")
        finally:
            self._stop_disarmed.set()

    def stop(self) -> None:
        """Disarm, stop intake, close the bridge (flushing the audit log) and the sockets.

        Does not wait for a model load in progress (a swap, or a reload after a fault): that
        load closes what it loaded when it finds the daemon stopping, nor for ever for a
        request stuck in the audit log's fsync (the bridge's close then finishes on a thread of
        its own once the write returns, if the process still runs). A predictor that a thread
        which did not stop in time may still be using is left open (and logged): closing it
        under a running inference could crash the process. Idempotent.
        """
        self.begin_stop()
        if self._stopped:
            return
        self._stopped = True
        # Every thread asked first, then each waited for: one slow to come round (a call that
        # takes a second to return, an inlet's opening) runs down while the ones before it
        # are waited for, not only once they are, before the bridge's close.
        workers = (self.supervisor, self.scheduler, self.scale_updater, self.loop,
                   self.ar_baseline, *self.marker_inlets, self.ingestor)  # fmt: skip
        for worker in workers:
            if worker is not None:
                worker.request_stop()
        self.supervisor.stop()
        scheduler_ended = self.scheduler.stop() if self.scheduler is not None else True
        self.scale_updater.stop()
        if self.loop is not None:
            self.loop.stop()
        if self.ar_baseline is not None:
            self.ar_baseline.stop()
        for inlet in self.marker_inlets:  # each may be waiting out an opening
            inlet.stop()
        # After the inlets and the wave stage: what either blanked until then is recorded.
        if self._markers is not None:
            self._markers.close()
        self.ingestor.stop()
        with self._bridge_lock:  # one opening now is closed by its opener (_open_bridge)
            bridge = self.bridge
        if bridge is not None:  # not for ever behind a request stuck in an audit log fsync
            bridge.close(bounded=True)  # one the supervisor began closing: waited for, bounded
        if self.query is not None:
            self.query.stop()
        self.publisher.stop()
        self._close_predictor(scheduler_ended)
        if self.supervisor.reloading:
            _log.warning("a model reload is still loading; it closes what it loads")
        if self._blas is not None:
            self._blas.restore_original_limits()
        if self._switch_interval_s is not None:
            sys.setswitchinterval(self._switch_interval_s)
        if self._started and self._froze_heap:
            gc.unfreeze()
        self._started = False
        _log.info("daemon stopped")

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ state
    @property
    def stopping(self) -> bool:
        """Whether stopping has begun (arming is refused from then on)."""
        return self._stopping.is_set()

    @property
    def policy(self) -> PolicySettings:
        """The policy thresholds in use (those configured, or the latest :meth:`set_policy`)."""
        return self._policy_settings

    def readiness(self) -> Readiness:
        """Ready: started and not stopping, the stream live, the model and the wave stage
        running and neither stuck, the query socket answering, the bridge connected (or in
        dry run); otherwise every reason why not."""
        failing = self.supervisor.failing()
        loop = self.loop
        return Readiness.judge(
            self.ingestor,
            self.scheduler,
            self.bridge,
            started=self._started,
            stopping=self._stopping.is_set(),
            reload_failure=failing.get("predictor"),
            waves_running=loop is None or loop.running,
            waves_failure=failing.get("waves"),
            model_waiting=self.scale_updater.not_ready_reason(),
            serving_refusal=self._serving_refusal(),
            control_plane_down=(
                self.control_plane_down
                or self.control_queries_down
                or self._queries_down(failing.get("query"))
            ),
            markers_unread=self.markers_unread(),
            stalled=tuple(stall.problem for stall in self.stalls()),
            bridge_failure=failing.get("bridge"),
        )

    def _queries_down(self, restart_failure: str | None) -> str | None:
        """Why the query socket this process serves does not answer (its thread ended; the
        supervisor restarts it), as the control process's end makes the daemon not ready when
        it serves the queries; None while it answers, or before start and once stopping."""
        query = self.query
        if query is None or query.running or not self._started or self._stopping.is_set():
            return None
        return "ZeroMQ query server not running" + (
            f": restart failed: {restart_failure}" if restart_failure else ""
        )

    def _announce(self, train: AnnouncedTrain, stamp: float) -> None:
        """A train another tool announced, blanked: on the daemon's own marker stream too."""
        outlet = self._markers
        if outlet is not None:
            outlet.push(train, stamp)

    def _forget_live_scores(self) -> None:
        """A marker came later than ``[ingest] stimulation_marker_latency_ms``: the live
        scores, the blend and the AR may have taken its train's frames for cortex, where a
        model far worse than persistence can score level with it. Forgotten: the model is
        unproven (the ``model`` interlock blocks) until scored again on what is measured."""
        accuracy = self.accuracy
        if accuracy is None:  # not started: nothing scored yet
            return
        accuracy.forget_scores()
        _log.warning(
            "live scores, the blend's fit and the live AR forgotten: a stimulation marker came "
            "after its train's frames may have been scored; the model is unproven until %d "
            "predictions are scored again",
            self.settings.loop.health_min_scored,
        )

    def markers_unread(self) -> tuple[str, ...]:
        """Why each stimulation marker stream not connected now is not (``[ingest]
        stimulation_marker_streams``): that tool's trains would be read as cortex."""
        return tuple(
            reason for inlet in self.marker_inlets if (reason := inlet.not_connected_reason())
        )

    def stalls(self) -> tuple[Stall, ...]:
        """The scheduler or wave stage stuck in one call past ``[loop] stall_after_s``."""
        return stalls(self.scheduler, self.loop, self.settings.stall_after_s, self.bridge)

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
        """JSON-able snapshot for ``/status`` (rendered now)."""
        return status_document(self)

    def status_kept(self) -> Kept:
        """:meth:`status` as kept for ``[api] snapshot_max_age_s``, and how old it is (the
        status query's reply and the ``status`` topic say it), for the ZeroMQ status query
        and the topic: rendered at most once per period however many clients ask; dropped by
        every control call (arm, disarm, policy, model), so an operator's change shows at
        once, and a change of the loop's own within the period."""
        return self._kept.get_kept("status", self.status)

    def latest_prediction(self) -> tuple[dict[str, Any], np.ndarray] | None:
        """Header and frames of the newest published prediction, if any."""
        stored = self.publisher.history.latest()
        return None if stored is None else decode_message(stored.header, stored.payload)

    # ------------------------------------------------------------------ control
    def arm(self, deadline: float | None = None) -> None:
        """Arm stimulation (an operator's decision).

        Refused while stopping, unless ready, and when the model has been judged unhealthy
        (worse than persistence on live data). Allowed while the model is unproven (just
        started, swapped or reloaded): the bridge's ``model`` interlock blocks every request
        until it has been scored, so arming early only lets stimulation start the moment the
        model is proven. Takes no lock that a model load holds; an arm that races
        :meth:`stop`, or a fault found while it is under way, is undone and refused (the
        readiness it was judged on predates the fault, whose disarm may have come before
        the bridge armed).

        ``deadline`` (``time.monotonic()``, which every process on this host shares) is when
        the caller stops waiting for the answer: a control plane in a process of its own then
        tells the operator that arming failed, so an arm that is not done by then is refused
        or undone.

        Raises
        ------
        DaemonStateError
            Stopping, not ready, the model unhealthy, a fault found meanwhile, the bridge
            found failed or closed, or none yet after one was closed for a fault (the
            supervisor is reopening it), or the deadline passed; the message says which.
        """
        faults = self.supervisor.faults_found
        if deadline is not None:
            check_range("deadline", deadline, 0.0)
        if self._stopping.is_set():
            raise DaemonStateError("cannot arm: the daemon is stopping")
        if _past(deadline):
            raise DaemonStateError(_TOO_LATE)
        if self.bridge is None and (refusal := self._reopening_replaced()) is not None:
            raise DaemonStateError(refusal)
        readiness = self.readiness()
        if not readiness.ready:
            raise DaemonStateError("cannot arm: " + "; ".join(readiness.reasons))
        health = self.model_health()
        if health.state == "unhealthy":
            raise DaemonStateError(f"cannot arm: the model is {health.describe()}")
        bridge = self.bridge
        if bridge is None:  # replaced between the readiness check and here
            refusal = self._reopening_replaced()
            raise DaemonStateError(refusal or "cannot arm: stimulator bridge not connected")
        try:
            try:
                bridge.arm()
            except RuntimeError as err:  # a bridge that can no longer arm: say what to do
                if self._stopping.is_set():
                    raise DaemonStateError("cannot arm: the daemon is stopping") from err
                if (refusal := _reopening(bridge)) is not None:
                    raise DaemonStateError(refusal) from err
                raise
            # stop() sets _stopping before it disarms; seen here, the disarm may have come
            # before this arm took effect, so undo it.
            if self._stopping.is_set():
                bridge.disarm_without_waiting("daemon stopping (an arm raced the stop)")
                raise DaemonStateError("cannot arm: the daemon is stopping")
            if self.supervisor.faults_found != faults:
                bridge.disarm_without_waiting("a fault was found while arming", cause="fault")
                raise DaemonStateError(
                    "cannot arm: a fault was found while arming (see /status); arm again once ready"
                )
            if _past(deadline):
                bridge.disarm_without_waiting(
                    "armed after the control plane had stopped waiting for it"
                )
                raise DaemonStateError(_TOO_LATE)
        finally:
            self._kept.forget()
        _log.warning("ARMED by operator")

    def _reopening_replaced(self) -> str | None:
        """The refusal of an arm that finds no bridge once one was closed for a fault (the
        supervisor opens another, and may fail to for a while); None where none was ever
        replaced (a device never connected), whose refusal says "not connected"."""
        replaced = self._replaced
        return None if replaced is None else _reopening(replaced)

    @property
    def armed(self) -> bool:
        """Whether the bridge allows stimulation now."""
        bridge = self.bridge
        return bridge is not None and bridge.armed

    def disarm(self, reason: str = "operator request") -> Disarmed:
        """Disarm now, without waiting for anything in progress (a model load, an arm, a
        request stuck in the audit log's fsync: ``StimulationBridge.disarm_without_waiting``);
        returns what the bridge did (nothing was armed, and no device confirmed, without one)."""
        bridge = self.bridge
        if bridge is None:
            return Disarmed(was_armed=False, device_confirmed=False)
        try:
            return bridge.disarm_without_waiting(reason)
        finally:
            self._kept.forget()

    def disarm_then_armed(self, reason: str = "operator request") -> tuple[Disarmed, bool]:
        """:meth:`disarm`, then whether armed now (an arm that won a race with it): one call
        for the control process, so a link that fails after the disarm cannot make a disarm
        that happened answer as one that failed."""
        return self.disarm(reason), self.armed

    def control_plane_failed(self, what: str) -> None:
        """The control process (``[api] own_process``) ended on its own or hung (``what``
        happened to it): a fault like a stage's, since no operator can disarm over HTTP until
        it serves again. Disarms first, then logs and counts it (stage ``control``: ``/status``'s
        faults, the metrics); not ready until it serves again."""
        self.supervisor.fault("control", f"control plane process {what}")
        self.control_plane_down = f"control process {what}; restarting it"
        self.control_queries_down = None  # the next process serves its queries, or fails to start

    def control_query_failed(self, error: str) -> None:
        """The control process's ZeroMQ query server ended with ``error``: a fault of stage
        ``query`` as this process's own query server's end is (disarm first, then counted),
        reported by that process's watch before it restarts the server; not ready until the
        watch reports it answering again (:meth:`control_queries_report`)."""
        self.supervisor.fault("query", error)
        self.control_queries_down = "ZeroMQ query server (control process) not running"

    def control_queries_report(self, down: str | None) -> None:
        """The control process's watch says why its query server does not answer now (a
        restart that failed), or None once it answers again."""
        self.control_queries_down = down

    def set_policy(self, policy: PolicySettings) -> None:
        """Use new (already validated) policy thresholds from the next prediction on.

        Raises :class:`~service.policy.limits.PolicyLimitError`, and changes nothing, when the
        policy does not fit the interlocks or the stream's grid: the check the config loader
        runs on the policy in the file. Raises :class:`DaemonStateError` before :meth:`start`
        (there is no loop to use it yet), as :meth:`arm` does.
        """
        check_policy_limits(policy, self.settings.interlocks, self.stream_spec.grid)
        with self._state_lock:
            if self.loop is None:
                raise DaemonStateError("cannot change the policy: daemon not started")
            new = StimulationPolicy(
                policy, grid=self.stream_spec.grid, sample_rate_hz=self.stream_spec.sample_rate_hz
            )
            self._policy_settings = policy
            self.loop.policy = new
            self._kept.forget()
            _log.warning("policy changed: %s", policy.model_dump(mode="json"))

    def swap_model(self, path: Path, step_path: Path | None = None) -> dict[str, Any]:
        """Load and warm another exported model beside the running one, then switch between
        two predictions; the old one is closed after the switch. The new model starts
        unproven (its live scores start from nothing).

        Only files inside ``[model] directory`` and under ``[model] max_file_bytes`` load; in
        stream mode ``step_path`` defaults to the step graph beside ``path`` and must be the
        one exported with it (``service.inference.model_files``). Swaps wait for each other;
        disarming and stopping never wait for a swap.

        Under ``[model] serving = "auto"`` the new files are measured served the way chosen at
        start (mode, backend, threads, precision: after an int8 choice, the int8 copies beside
        them serve where they are fit, else their own precision; a full probe would take the
        live loop's CPU for a minute), from the probe's cache where they were measured before,
        and judged by the start's rule: the scheduler switches to the stride they need with the
        model, and ``/status``'s ``serving`` block and the metrics say so. Outside ``auto`` the
        stride in force stays.

        The file checks, the load, its checks and warm-up and the measurement run under the
        normal policy where the calling thread is real-time
        (``thread_placement.normal_policy``; the new model's own threads are put back under
        the caller's), and each file is hashed once.

        Returns
        -------
        dict
            What serves now: ``model`` (the predictor's info) and the files it runs from,
            resolved (``path``, ``step_path``; None outside stream mode).

        Raises
        ------
        ModelFileError
            If the files break the model directory's rules, or files beside them that the
            swap would read do (``ModelFiles.for_swap``; nothing is read or loaded).
        DaemonStateError
            If the daemon is stopping (before or during the load; what was loaded is closed),
            or under ``auto`` if no stride fits the measurement (it names the p99, the limit
            and what would help); the running model is then kept, at its stride.
        ModelMismatchError, BackendUnavailableError, ValueError, OSError
            As loading does, or if the backend runs other files than these (a torch backend
            runs ``[model] checkpoint``); the running model is then kept. A
            ``HostResourceError`` (an ``OSError``) says the host ran out of descriptors or
            memory checking, loading or measuring them (any read of the swap's, however it
            raised it), not that they do not fit.
        """
        # One place for every read the swap makes (the files' metadata, hashes, the probe's
        # records, the sessions): one that fails for want of descriptors or memory is a 503,
        # not a 422 calling the files unreadable, however the read raised it.
        with host_resources(f"cannot swap to {str(path)!r}"):
            return self._swap(path, step_path)

    def _swap(self, path: Path, step_path: Path | None) -> dict[str, Any]:
        """:meth:`swap_model`'s work."""
        if self._stopping.is_set():
            raise DaemonStateError("cannot swap the model: the daemon is stopping")
        # Seconds of CPU-bound work (the files' metadata parsed; sessions built, checked,
        # warmed up; the measurement's back-to-back inference): on a real-time thread (the
        # drop-in makes every daemon thread one) it would fill a CPU and have the kernel stop
        # the loop's threads. Not the hand-over: the scheduler waits for it.
        measuring = self.serving is not None  # which reads the files beside them too
        with normal_policy("the hot swap's file checks"):  # before waiting for another swap
            named = ModelFiles.for_swap(path, step_path, self.settings.model, measured=measuring)
        with self._swap_lock:
            # Each file is hashed once, for the predictors' info and the probe's keys alike.
            with normal_policy("the hot swap's load and measurement"), hashing_once():
                new, files, measured = self._load_and_measure(named)
            stride = None if measured is None else measured[0].chosen.stride
            with self._state_lock:
                if self._stopping.is_set():
                    new.close()
                    raise DaemonStateError(
                        f"model {str(files.path)!r} was loaded, but the daemon is stopping: "
                        "not used"
                    )
                self.scale_updater.attach(new.normaliser)  # the new model's statistics
                # Unproven, blend reset, before it serves: a request on its first predictions
                # must never be judged on the old model's record. The old model's last
                # predictions, handed on after this, are not scored as the new one's.
                self.accuracy.set_normalisation(*_normalisation(new), new.info)
                previous = self.scheduler.swap_predictor(new, stride=stride)  # waits out one
                self.predictor = new
                self.model_files = files
                if measured is not None:
                    self._serve_measured(measured[0], named)
                self._kept.forget()
            previous.close()
            self._metrics.set_serving(
                self.settings, self.serving, backend=new.info.backend, precision=new.info.precision
            )
            _log.warning("model swapped to %s (%s)", files.as_dict(), new.info)
            _warn_if_below_persistence(files)
            return {"model": dataclasses.asdict(new.info), **files.as_dict()}

    def serving_status(self) -> dict[str, Any]:
        """``/status``'s ``serving`` block: the setting and, under ``auto``, the latest
        measurement's table (the start's probe of every way, then each hot swap's of the way
        chosen at start), its choice and why, and the files it measured (``measured``); after
        a swap, ``note`` says that only that way was measured."""
        if self.serving is None:
            return {"serving": self.settings.model.serving}
        block = {"serving": "auto", **self.serving.as_dict(), "measured": str(self._measured_path)}
        if self._serving_note is not None:
            block["note"] = self._serving_note
        return block

    # ------------------------------------------------------------------ internals
    def _choose_serving(self) -> ServingProbe | None:
        """``[model] serving = "auto"``: probe (or read the cache) and serve the choice from
        here on (mode, backend, threads, the files of its precision, stride). When nothing
        fits, serve as configured: :meth:`readiness` then says why arming is refused and what
        would help. Returns the probe (None outside ``auto``)."""
        settings = self.settings
        if settings.model.serving != "auto":
            return None
        probe = ServingProbe(
            settings.model,
            self.stream_spec,
            staleness_limit_s=settings.interlocks.max_sample_age_s,
            min_stride=settings.scheduler.stride,
        )
        self._measured_path = settings.model.path.expanduser().resolve()
        self._serve_choice(probe, probe.choose())
        return probe

    def _build_served(self, probe: ServingProbe | None) -> Predictor:
        """The predictor of the way chosen at start. Under ``auto`` a chosen way that fails
        to load becomes a row saying why, as a fresh probe would have it, and the next that
        fits serves: a cached record outlives what it measured (ONNX Runtime lists its CUDA
        provider whether or not CUDA's libraries still load), and the daemon must not fail
        at every restart on it while another way fits. None fitting, the configured way
        loads, or the start fails with its error. A host out of descriptors or memory fails
        the start (``HostResourceError``, exit 1: systemd restarts it): that is no fault of
        the way, which would otherwise give way to a worse one until the next restart."""
        while True:
            try:
                return self._build_predictor(self.model_files)
            except Exception as err:
                chosen = None if self.serving is None else self.serving.chosen
                if probe is None or chosen is None:
                    raise
                raise_if_host_failure(err, "cannot load the model at start")  # not the way's
                failed = f"failed to load at start: {type(err).__name__}: {err}"
                if isinstance(err, BackendUnavailableError):  # the advice lists its backend
                    failed = f"{UNAVAILABLE}failed to load at start: {err}"
                _log.warning(
                    "serving probe: %s failed to load at start (%s); choosing again from the "
                    "measurements", chosen.measurement.candidate.label, err,
                )  # fmt: skip
                measurements = [
                    dataclasses.replace(row.measurement, problem=failed)
                    if row is chosen
                    else row.measurement
                    for row in self.serving.rows
                ]
                self._serve_choice(probe, probe.decide(measurements))

    def _serve_choice(self, probe: ServingProbe, choice: ServingChoice) -> None:
        """Serve ``choice`` of the configured settings' probe from here on (see
        :meth:`_choose_serving`)."""
        self.settings = settings = self._configured
        self.serving = choice
        for line in choice.table():
            _log.info("serving probe: %s", line)
        if choice.chosen is None:
            _log.warning("serving probe: %s; serving as configured, arming refused", choice.why)
            self.model_files = ModelFiles.for_start(settings.model, self.stream_spec)
            self._way_precision = probe.precision
            self._way = "the configured way (nothing fitted at start)"
            return
        chosen = choice.chosen.measurement.candidate
        self._way_precision = chosen.precision
        model = probe.settings_for(chosen)  # an int8 choice serves the int8 copies' files
        scheduler = settings.scheduler.model_copy(update={"stride": choice.chosen.stride})
        self.model_files = ModelFiles.for_start(model, self.stream_spec)
        self.settings = settings.model_copy(update={"model": model, "scheduler": scheduler})
        _log.info(
            "serving (auto) %s at stride %d from %s: %s",
            chosen.label, scheduler.stride, self.model_files.as_dict(), choice.why,
        )  # fmt: skip

    def _load_and_measure(
        self, files: ModelFiles
    ) -> tuple[Predictor, ModelFiles, tuple[ServingChoice, ModelFiles] | None]:
        """A swap's slow part: ``files`` loaded and, under ``auto``, measured; where the way
        measured serves their int8 copies, those loaded instead. Returns the predictor, the
        files it runs from and the measurement (None outside ``auto``)."""
        new = self._load_for_swap(files)
        try:
            measured = self._measure_swap(files, new.info.backend)
        except BaseException:
            new.close()
            raise
        if measured is not None and measured[1] != files:  # their int8 copies serve
            new.close()
            files = measured[1]
            new = self._load_for_swap(files)
        return new, files, measured

    def _load_for_swap(self, files: ModelFiles) -> Predictor:
        new = self._build_predictor(files)
        try:
            self._check_ring_holds_scored_frames(new)
        except ModelMismatchError:
            new.close()
            raise
        if Path(new.info.model_path) not in files.opened:
            new.close()
            raise BackendUnavailableError(
                f"the {new.info.backend} backend runs {new.info.model_path!r}, not the "
                "files asked for: a hot swap changes the ONNX files only"
            )
        return new

    def _measure_swap(
        self, files: ModelFiles, loaded: str
    ) -> tuple[ServingChoice, ModelFiles] | None:
        """Under ``auto``: ``files`` measured served the way chosen at start (its mode, backend,
        threads and precision; as configured where nothing fitted at start, ``backend =
        "auto"`` the one that ``loaded`` them), judged by the start's rule
        (``service.inference.serving_probe``: seconds, within the control link's swap
        timeout), and the files that way serves: an int8 choice serves the int8 copies beside
        them where those are fit, else their own precision (logged). None outside ``auto``.

        Raises DaemonStateError, naming the p99, the limit and what would help, when no stride
        fits.
        """
        if self.serving is None:
            return None
        settings = self.settings
        model = settings.model.model_copy(update={"path": files.path, "step_path": files.step_path})
        probe = ServingProbe(
            model,
            self.stream_spec,
            staleness_limit_s=settings.interlocks.max_sample_age_s,
            min_stride=self._min_stride,
        )
        backend = model.backend  # the way's name; what a predictor reports may add to it
        if backend == "auto":  # nothing fitted at start: the backend "auto" loaded
            backend = loaded.partition("+")[0]  # TensorRT reports "tensorrt+cudagraph"
        precision = self._way_precision
        if not probe.offers(model.mode, precision):
            graphs = probe.int8.get(model.mode)
            why = (
                "it is an int8 graph" if probe.precision == "int8"
                else "no int8 copy beside it" if graphs is None
                else graphs.problem
            )  # fmt: skip
            _log.warning(
                "%s serves %s; %s offers none for %s mode (%s): measured in %s",
                self._way, precision, files.path, model.mode, why, probe.precision,
            )  # fmt: skip
            precision = probe.precision
        choice = probe.choose_way(model.mode, backend, model.threads, precision)
        if choice.chosen is None:
            [row] = choice.rows
            raise DaemonStateError(
                f"cannot swap to {str(files.path)!r} ([model] serving = 'auto'): served "
                f"{self._way}, it fits no stride: {row.reason}; {choice.advice}, or a "
                "restart with it as [model] path, which measures every way this host can serve "
                "it; the running model keeps serving"
            )
        served = probe.settings_for(choice.chosen.measurement.candidate)
        if served.path == model.path:
            return choice, files
        step = served.step_path if model.mode == "stream" else None
        return choice, ModelFiles.for_swap(served.path, step, settings.model)

    def _serve_measured(self, choice: ServingChoice, named: ModelFiles) -> None:
        """A swap's measurement of the ``named`` files in force: its stride for a restarted
        scheduler too, and what ``/status`` says (the caller holds the state lock)."""
        stride = choice.chosen.stride
        was = self.settings.scheduler.stride
        scheduler = self.settings.scheduler.model_copy(update={"stride": stride})
        self.settings = self.settings.model_copy(update={"scheduler": scheduler})
        self.serving, self._measured_path = choice, named.path
        candidate = choice.chosen.measurement.candidate
        label = candidate.label
        way = self._way
        if candidate.precision != self._way_precision:  # no such copies beside these files
            way += f" but in {candidate.precision}: they offer no {self._way_precision} graphs"
        self._serving_note = (
            f"measured at the hot swap to {named.path}: {label}, {way}, only; restart "
            "with it as [model] path to measure every way"
        )
        _log.info(
            "serving (auto) %s at stride %d (was %d) for %s swapped in: %s",
            label, stride, was, named.as_dict(), choice.why,
        )  # fmt: skip

    def _serving_refusal(self) -> str | None:
        if self.serving is None or self.serving.chosen is not None:
            return None
        return "no way of serving the model fits this host ([model] serving = 'auto'): " + (
            self.serving.advice or self.serving.why
        )

    def _build_predictor(self, files: ModelFiles) -> Predictor:
        predictor = predictor_from_settings(
            self.settings.model, files.path, files.step_path, self.stream_spec
        )
        try:  # before the scheduler sees it, so a refused model is closed, not leaked
            check_missing_frame_policy_fits(predictor, self.settings.scheduler.missing_frames)
            self._check_ring_holds_window(predictor)
        except ModelMismatchError:
            predictor.close()
            raise
        return predictor

    def _check_ring_holds_window(self, predictor: Predictor) -> None:
        """Refuse a ring (``[ingest] ring_seconds``) shorter than what one window of this
        model reads. The config's own check compares the ring with the loop's needs only: it
        cannot know the model. Unrefused, every window fails to read, and the scheduler dies
        and is reloaded for ever."""
        scheduler = self.settings.scheduler
        window = predictor.metadata.past_frames
        needed = frames_read(window, scheduler.missing_frames, scheduler.max_missing_frames)
        short = self._ring_short_of(needed)
        if short is None:
            return
        reach = (
            ""
            if needed == window
            else f" and the {needed - window} more that [scheduler] missing_frames = "
            "'irregular' reaches back ([scheduler] max_missing_frames)"
        )
        raise ModelMismatchError(
            f"{short} that model {predictor.info.model_path!r} reads for each prediction (its "
            f"input window of {window} frames{reach}); set [ingest] ring_seconds to at least "
            f"{needed / self.stream_spec.sample_rate_hz:.4g} s"
        )

    def _check_ring_holds_scored_frames(self, predictor: Predictor) -> None:
        """Refuse a ring shorter than what the live scores read of each prediction: its
        input, its true frames and the settle after them (``Settings.marker_settle_frames``),
        all still held when it is scored; an overwritten frame may have been blanked, and leaves the
        prediction unscored. Unrefused, no prediction is ever scored and the model stays
        unproven, stimulation blocked, for good, with nothing saying why. Checked after the
        wave window (a ring too short for both is named by that), and for a swap's model."""
        scheduler = self.settings.scheduler
        window = predictor.metadata.past_frames
        reach = frames_read(window, scheduler.missing_frames, scheduler.max_missing_frames)
        truth, settle = self.stream_spec.future_frames, self.settings.marker_settle_frames
        needed = reach + truth + settle
        short = self._ring_short_of(needed)
        if short is None:
            return
        raise ModelMismatchError(
            f"{short} the live scores read for each prediction of model "
            f"{predictor.info.model_path!r} (its input of {reach} frames, its {truth} true "
            f"frames and the {settle} of [ingest] stimulation_marker_latency_ms after them); "
            "no prediction could ever be scored, nor the model proven: set [ingest] "
            f"ring_seconds to more than {needed / self.stream_spec.sample_rate_hz:.4g} s (the "
            "ring must also hold the frames that arrive while a prediction waits)"
        )

    def _check_ring_holds_wave_window(self) -> None:
        """Refuse a ring shorter than the measured frames each wave estimate reads (``[waves]
        past_frames``, up to the prediction's input). Unrefused, every prediction is served
        and scored but the wave stage finds its frames gone and skips every decision,
        silently. The model's window is checked first (:meth:`_check_ring_holds_window`)."""
        needed = self.settings.waves.past_frames
        short = self._ring_short_of(needed)
        if short is None:
            return
        raise ConfigError(
            f"{short} measured frames each wave estimate reads ([waves] past_frames); no "
            "decision could ever be made: set [ingest] ring_seconds to more than "
            f"{needed / self.stream_spec.sample_rate_hz:.4g} s (the ring must also hold the "
            "frames that arrive while a decision waits)"
        )

    def _check_baseline_window(self) -> None:
        """Refuse an amplitude baseline window (``[loop] robust_sd_seconds``) of fewer frames
        than its robust s.d. needs (``MIN_PAST_FRAMES``): no refresh could ever succeed, and
        the policy, with no amplitude unit, would never decide, silently."""
        rate = self.stream_spec.sample_rate_hz
        seconds = self.settings.loop.robust_sd_seconds
        frames = window_frames(seconds, rate)
        if frames >= MIN_PAST_FRAMES:
            return
        raise ConfigError(
            f"[loop] robust_sd_seconds ({seconds:g} s) is {frames} frames at {rate:g} Hz, "
            f"fewer than the {MIN_PAST_FRAMES} measured frames the amplitude baseline's robust "
            "s.d. needs; no decision could ever be made: set [loop] robust_sd_seconds to at "
            f"least {MIN_PAST_FRAMES / rate:.4g} s"
        )

    def _ring_short_of(self, needed: int) -> str | None:
        """Where the ring holds fewer than ``needed`` frames, the start of the refusal that
        says so (the setting, the frames it keeps at the stream's rate, ``needed``); None
        where it holds them."""
        ring = self.ingestor.ring.capacity
        if ring >= needed:
            return None
        return (
            f"[ingest] ring_seconds ({self.settings.ingest.ring_seconds:g} s) keeps {ring} "
            f"frames at {self.stream_spec.sample_rate_hz:g} Hz, fewer than the {needed}"
        )

    def _start_scheduler(self) -> None:
        scheduler = self.settings.scheduler
        self.scheduler = Scheduler(
            self.ingestor.ring,
            self.predictor,
            self.loop.handle,
            before_inference=self.loop.ahead,
            stride=scheduler.stride,
            past_frames=self.stream_spec.past_frames,
            missing_frames=scheduler.missing_frames,
            max_missing_frames=scheduler.max_missing_frames,
            sample_rate_hz=self.stream_spec.sample_rate_hz,
            metrics=self._inference_metrics,
            placement=self.settings.realtime.placement("inference"),
            idle_share=self.settings.realtime.idle_share,
        )
        self.scheduler.on_failure = self.supervisor.disarm_at_once("predictor")
        self.scheduler.start()

    def _open_bridge(self) -> None:
        """(Re)open the bridge, disarmed. Raises (and ``self.bridge`` is None) if the device
        or the audit log cannot be opened; the supervisor retries. A bridge reopened after a
        failure rebuilds refractory and budgets from the audit log the old one closed, and
        reports the old one's last disarm (a fault's) as its own until it is armed. One
        that finishes opening once stopping has begun is closed again at once: the
        supervisor's round can outlast :meth:`stop`'s wait for it, and stop closes only the
        bridge it finds."""
        previous = self.bridge
        if previous is not None:  # kept through failed opens: the next bridge says it too
            self._replaced = previous  # first: an arm finding no bridge then says why
        self.bridge = None
        bridge = StimulationBridge(
            self.settings.bridge,
            self.settings.interlocks,
            metrics=self._bridge_metrics,
            last_disarm=_last_disarm(self._replaced),
        )
        try:
            bridge.start()
        except BaseException:
            bridge.close()
            raise
        with self._bridge_lock:  # stop() reads the bridge to close under it, once stopping
            if not self._stopping.is_set():
                self.bridge = bridge
                return
        bridge.close()
        _log.info("a stimulator bridge finished opening as the daemon stopped: closed")

    def _close_predictor(self, scheduler_ended: bool) -> None:
        """stop()'s last look at the model: close it unless a thread may still be using it.
        The scheduler in place is looked at too: a reload may have started one after stop()
        stopped it, and failed to stop it again (``_reload_model``)."""
        if not self._state_lock.acquire(timeout=_HANDOVER_TIMEOUT_S):
            _log.error("a model hand-over did not finish; the predictor is left open")
            return
        try:
            predictor, scheduler = self.predictor, self.scheduler
        finally:
            self._state_lock.release()
        if predictor is None:
            return
        if not scheduler_ended or (scheduler is not None and scheduler.running):
            _log.error(
                "the scheduler thread did not stop, so it may still be running the model: "
                "the predictor is left open (closing it under an inference could crash)"
            )
            return
        predictor.close()

    def _reload_model(self) -> None:
        """Reload the model from its files after the scheduler died and start a new scheduler
        (the supervisor runs this on a thread of its own: a load can take minutes). Raises as
        loading does; the supervisor reports it and tries again later.

        The load runs under the normal policy where this thread is real-time (the drop-in
        makes it SCHED_RR 1, the ingest thread's too), as a swap's does, and each file is
        hashed once."""
        with self._swap_lock:
            if self._stopping.is_set():
                return
            self.predictor.close()  # its scheduler has ended; frees memory for the new one
            with normal_policy("the model's reload"), hashing_once():
                new = self._build_predictor(self.model_files)
            with self._state_lock:
                if self._stopping.is_set():
                    new.close()
                    return
                self.predictor = new
                self.scale_updater.attach(new.normaliser)
                self.accuracy.set_normalisation(*_normalisation(new), new.info)  # unproven
                self._start_scheduler()
                # stop() reads the scheduler without this lock: one that began after the check
                # above may have stopped this scheduler before it started. Stopped here, under
                # the lock, before stop() looks at the model to close.
                if self._stopping.is_set():
                    self.scheduler.stop()
            # As at start and a swap: what runs now (backend "auto" may have failed over).
            self._metrics.set_serving(
                self.settings, self.serving, backend=new.info.backend, precision=new.info.precision
            )
        _log.warning("predictor reloaded after a fault (%s)", new.info)


def _last_disarm(bridge: StimulationBridge | None) -> tuple[str, str] | None:
    """(reason, cause) of ``bridge``'s last disarm; None without a bridge or one."""
    state = None if bridge is None else bridge.status()
    if state is None or state.last_disarm_reason is None or state.last_disarm_cause is None:
        return None
    return state.last_disarm_reason, state.last_disarm_cause


def _reopening(bridge: StimulationBridge) -> str | None:
    """The refusal of an arm that met ``bridge`` failed or closed: the supervisor closes a
    bridge whose heartbeat thread failed and opens a new one (stop() too closes it, but arms
    are refused as stopping first). None for a bridge running well."""
    failure = bridge.status().error
    if failure is None and bridge.running:
        return None
    cause = "after a fault" if failure is None else f"after a fault ({failure})"
    return (
        f"cannot arm: the stimulator bridge is being reopened {cause}; the daemon stays "
        "disarmed: arm again once /readyz says ready"
    )


_TOO_LATE = (
    "cannot arm: the control plane had stopped waiting for this arm (the loop was busy); "
    "the daemon stays disarmed; arm again"
)


def _marker_inlets(
    ingest: IngestSettings,
    ring: RingBuffer,
    registry: CollectorRegistry,
    announce: Callable[[AnnouncedTrain, float], None],
    on_late: Callable[[], None],
    *,
    own_source_id: str | None,
) -> tuple[StimulationMarkerInlet, ...]:
    """The inlets of ``[ingest] stimulation_marker_streams``, sharing their metrics, each
    calling ``on_late`` for a marker later than the latency allowed; none reads the daemon's
    own marker stream (``own_source_id``), should another daemon's of the same name be
    listed."""
    if not ingest.stimulation_marker_streams:
        return ()
    metrics = marker_metrics(registry)
    blank_s = ingest.stimulation_marker_blank_ms / 1000
    return tuple(
        StimulationMarkerInlet(
            stream.name,
            ring,
            source_id=stream.source_id,
            blank_s=blank_s,
            latency_s=ingest.stimulation_marker_latency_ms / 1000,
            metrics=metrics,
            announce=announce,
            on_late=on_late,
            ignore_source_id=own_source_id,
            unheard_s=ingest.stimulation_marker_unheard_s,
        )
        for stream in ingest.stimulation_marker_streams
    )


def _past(deadline: float | None) -> bool:
    """Whether a caller's ``time.monotonic()`` deadline has passed (None: it waits for ever)."""
    return deadline is not None and time.monotonic() > deadline


def _publisher_io_priority(
    realtime: RealtimeSettings,
) -> tuple[tuple[int, int] | None, dict[str, Any] | None]:
    """The (policy, priority) for the ZeroMQ I/O thread that sends what inference predicts
    (``RealtimeSettings.placement("publisher_io")``), where this process may use it (None:
    the process's); libzmq would abort the process on a refusal, so it is tried first. And
    what ``/status`` shows of it (None: nothing asked): ``policy``, ``priority`` (None: the
    process's) and ``refused`` with why. Logged either way."""
    placement = realtime.placement("publisher_io")
    if placement is None or placement.policy is None:
        return None, None
    name = f"SCHED_{placement.policy.upper()}"
    wanted = f"{name} priority {placement.priority}"
    refusal = placement.realtime_refusal()
    if refusal is not None:
        _log.warning(
            "ZeroMQ publisher's I/O thread runs at the process's priority, not under %s: %s",
            wanted, refusal,
        )  # fmt: skip
        return None, {"policy": None, "priority": None, "refused": [f"{wanted}: {refusal}"]}
    _log.info("ZeroMQ publisher's I/O thread runs under %s", wanted)
    report = {"policy": name, "priority": placement.priority, "refused": []}
    return (placement.os_policy, placement.priority), report


def _normalisation(predictor: Predictor) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
    """A fixed model's (mean, scale); (None, None) for a robust-online model, whose predictions
    are scored in the statistics each one used (``Prediction.normalisation``)."""
    norm = predictor.metadata.normalisation
    if predictor.normaliser.online is not None:
        return None, None
    return (
        np.asarray(norm["mean"], dtype=np.float32),
        np.asarray(norm["scale"], dtype=np.float32),
    )


def _warn_if_below_persistence(files: ModelFiles) -> None:
    """Say so when the model's own held-out check puts it below persistence somewhere: the
    live scores would show it only after ``[loop] health_min_scored`` predictions."""
    warning = files.below_persistence_warning()
    if warning is not None:
        _log.warning(warning)
