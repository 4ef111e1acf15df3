"""The daemon's supervisor: every stage checked every ``loop.supervise_every_s``, each fault
disarming stimulation first, then logged, counted and repaired where it can be.

A stale stream, and a scheduler or wave stage stuck in a call that does not return
(``service.daemon.stalls``: no prediction or no decision for ``[loop] stall_after_s``), are
checked every round: found while armed, either is a fault that disarms (a stuck stage cannot
be restarted, so it is reported, and the daemon is not ready until it comes round again).
The ingestor reconnects by itself (and is restarted if it died, on a thread of its own: its
start waits on the network for the stream), a crashed predictor is reloaded (on a thread of
its own too: a TensorRT engine build can take minutes) and the scheduler restarted, the wave
stage, the live AR baseline's thread, a robust-online model's input statistics updater and the
ZeroMQ query server (where this process serves the queries) are restarted if they died, a lost
bridge is reopened and stays disarmed until an operator arms it again. Each repair step is
independent: one that fails is logged, counted and retried on its own
(``service.daemon._repair_schedule``) while the others go on, and every round the supervisor
completes pings the systemd watchdog (liveness, ready or not).
Its last step publishes the daemon's status on the ZeroMQ ``status`` topic when due
(``service.daemon._status_topic``).

One rule for every fault, the query server's included: each is counted in
``corticast_daemon_faults`` under its stage and disarms stimulation first
(:meth:`Supervisor.fault`). The query server is not on the stimulation path, but researchers'
tools watching the loop read through it, and with the control plane in a process of its own
that process's watch reports its query server's death here as the same fault
(``service.api.query_watch``, restarting it by the same rule: ``service.daemon.restarts``); a
fault count that sometimes meant "disarmed" and sometimes not would leave whoever reads the
alert to guess which.

The supervisor reads the stages through :class:`Supervised` (the daemon, whose stages may be
replaced between two reads) and repairs through the two actions it is given: reopening the
bridge and reloading the model, both of which the daemon owns.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Protocol

from firmware_bridge import StimulationBridge
from service.core.errors import CorticastError
from service.core.worker import BackgroundWorker
from service.daemon import _systemd
from service.daemon._repair_schedule import RepairSchedule
from service.daemon._repair_thread import RepairThread
from service.daemon.metrics import DaemonMetrics, marker_step
from service.daemon.restarts import WorkerRestarts
from service.daemon.stalls import Stall
from service.daemon.status import Readiness
from service.inference.scale_updater import ScaleUpdater
from service.inference.scheduler import Scheduler
from service.ingest.ingestor import Ingestor
from service.ingest.stimulation_marker_inlet import StimulationMarkerInlet
from service.loop.ar_baseline import ArBaseline
from service.loop.closed_loop import ClosedLoop
from service.loop.model_health import ModelHealth
from service.zmq_api.query import QueryServer

_log = logging.getLogger("corticast.daemon")

_EVERY_ROUND = ("stream", "stall", "gauges")
"""Checks rather than repairs: tried every round even after a failure (the stream and stall
checks are what disarm on stale data and a stuck stage), never postponed by the repair
steps' backoff."""


class BridgeStillClosingError(CorticastError, RuntimeError):
    """The failed bridge's close has yet to let go of the audit log and the link: its
    successor waits (opened on the same log, it would be refused as "in use by another
    bridge", which names no cause)."""


class BridgeCloseError(CorticastError, RuntimeError):
    """The failed bridge's close, on its own thread, failed once the supervisor had gone on:
    reported as the bridge step's failure (logged at error and counted), which it would have
    been had the close failed on the supervisor's thread."""


class Supervised(Protocol):
    """What the supervisor watches: each stage as it is now (None where there is none)."""

    @property
    def ingestor(self) -> Ingestor: ...

    @property
    def scheduler(self) -> Scheduler | None: ...

    @property
    def loop(self) -> ClosedLoop | None: ...

    @property
    def ar_baseline(self) -> ArBaseline | None: ...

    @property
    def scale_updater(self) -> ScaleUpdater: ...

    @property
    def bridge(self) -> StimulationBridge | None: ...

    @property
    def query(self) -> QueryServer | None:
        """The ZeroMQ query server, None where another process serves the queries."""
        ...

    @property
    def marker_inlets(self) -> tuple[StimulationMarkerInlet, ...]: ...

    def markers_unread(self) -> tuple[str, ...]: ...

    def stalls(self) -> tuple[Stall, ...]: ...

    @property
    def stopping(self) -> bool:
        """Whether stopping has begun: nothing slow is started then, and no stage restarted
        (a round that outlasts ``Daemon.stop``'s wait for the supervisor would otherwise
        start again what the daemon has just stopped)."""
        ...

    def readiness(self) -> Readiness: ...

    def model_health(self) -> ModelHealth: ...


class Supervisor(BackgroundWorker):
    """Supervises ``stages``; see the module docstring.

    Parameters
    ----------
    stages
        What is watched.
    metrics
        Where faults, failed steps and the readiness, armed, model health and waiting gauges are
        counted.
    every_s
        Period of the rounds (shorter if systemd's watchdog asks for it), and the wait before
        a failed step is first retried.
    open_bridge
        (Re)opens the bridge, disarmed; raises if it cannot (retried later).
    reload_model
        Reloads the model from its files after its scheduler died and starts a new scheduler;
        slow, so run on a thread of its own; raises if it cannot (retried later).
    publish_status
        Told each round whether the daemon is armed and ready; publishes the status when due
        (``StatusTopic.publish_if_due``). None: no status is published.
    """

    def __init__(
        self,
        stages: Supervised,
        metrics: DaemonMetrics,
        *,
        every_s: float,
        open_bridge: Callable[[], None],
        reload_model: Callable[[], None],
        publish_status: Callable[[bool, bool], None] | None = None,
    ) -> None:
        super().__init__("corticast-supervisor")
        self._stages = stages
        self._metrics = metrics
        self._every_s = every_s
        self._publish_status = publish_status
        self._repairs = RepairSchedule(metrics.step_failures, first_retry_s=every_s)
        self._notified_ready = False
        self._armed_and_ready: tuple[bool, bool] | None = None
        """Armed and ready as the gauges step last judged them (the status step's news)."""
        self._bridge_failed_logged: StimulationBridge | None = None
        self._bridge_closing: StimulationBridge | None = None
        """The failed bridge whose close was started: not closed again, its successor opened
        once it has let go of the audit log (:meth:`_repair_bridge`)."""
        self._opening = RepairThread(open_bridge, "corticast-bridge-open")
        """Opens the latest bridge (:meth:`_repair_bridge`)."""
        self._ingest_restart = RepairThread(self._restart_ingestor, "corticast-ingest-restart")
        """Starts the ingestor again (:meth:`_repair_ingestor`)."""
        self._ingest_fault_reported: BaseException | None = None
        """The ingestor's failure reported, while it is down (reported once, not per try)."""
        self._scheduler_fault_reported: Scheduler | None = None
        self._reload = RepairThread(reload_model, "corticast-model-reload")
        self._faults_found = 0
        self._faults_lock = threading.Lock()
        self._restarts: dict[str, WorkerRestarts] = {}
        """By worker name: its failures soon after a restart (:meth:`_restart`'s backoff)."""

    def failing(self) -> dict[str, str]:
        """Step -> its latest error, for the steps failing now."""
        return self._repairs.failing()

    def fault_counts(self) -> dict[str, float]:
        """Stage -> faults found so far, for the stages that have had any."""
        return self._metrics.fault_counts()

    @property
    def reloading(self) -> bool:
        """Whether a model reload is still loading on its own thread."""
        return self._reload.running

    def _work(self) -> None:
        period = self._every_s
        watchdog = _systemd.watchdog_interval_s()
        if watchdog is not None:
            period = min(period, watchdog)
        while not self._stop_requested.wait(period):
            try:
                self._round()
            except Exception:  # the supervisor must outlive whatever it supervises
                _log.exception("supervisor round failed")

    def _round(self) -> None:
        """Every step is tried on its own, so one that fails (logged, counted, retried later)
        never keeps the others from running, and the round always ends with the watchdog
        ping. Faults are handled (disarm first) before anything slow is tried; nothing slow
        runs on this thread."""
        steps = (
            ("stream", self._check_stream),
            ("stall", self._check_stalls),
            ("ingest", self._repair_ingestor),
            ("predictor", self._repair_predictor),
            ("waves", self._repair_waves),
            ("ar", self._repair_ar),
            ("scale", self._repair_scale),
            *self._marker_steps(),
            ("query", self._repair_query),
            ("bridge", self._repair_bridge),
            ("gauges", self._update_gauges),
            ("status", self._status),
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

    @property
    def faults_found(self) -> int:
        """Faults found so far; counted as each is found, before its disarm, so an arm that
        began before a fault and armed after its disarm sees it (``Daemon.arm``)."""
        with self._faults_lock:
            return self._faults_found

    def fault(self, stage: str, error: BaseException | str) -> None:
        """Disarm first (as caused by a fault), then log and count under ``stage``; the
        daemon reports its control process's end here too."""
        self._disarm_for(stage, error)
        self._metrics.faults.labels(stage).inc()
        _log.error("%s fault: %s", stage, error)

    def disarm_at_once(self, stage: str) -> Callable[[BaseException], None]:
        """A worker's failure callback (``BackgroundWorker.on_failure``) for ``stage``: its
        own thread disarms as it fails, and counts the fault for an arm under way
        (:attr:`faults_found`), so the bridge is not left armed until this supervisor's next
        round, nor until a backed-off restart step is due again. The round still reports,
        counts and repairs it (:meth:`fault`)."""
        return functools.partial(self._disarm_for, stage)

    def _disarm_for(self, stage: str, error: BaseException | str) -> None:
        """Count a fault in ``stage`` (:attr:`faults_found`), then disarm as caused by it,
        waiting neither on a stuck holder of the bridge's exchange lock (the wave stage stuck
        in a request's audit log fsync is such a fault) nor for the device's answer: the
        supervisor must go on round, and a device that stopped answering held a round with
        faults for one exchange (6 s at the longest ACK deadline), most of ``WatchdogSec``."""
        with self._faults_lock:
            self._faults_found += 1
        bridge = self._stages.bridge
        if bridge is not None:  # the host at once; the record and DISARM on the bridge's thread
            bridge.disarm_in_background(f"{stage} fault: {error}", cause="fault")

    def _check_stream(self) -> bool:
        """Armed on a stale or lost stream, on one whose timestamps do not keep the rate
        configured (the model and the wave estimate would run on a wrong time base), or on
        one stamped ahead of this host's LSL clock (no train's artefact could be blanked by
        its stamps): a fault. Back at that rate and clock, the daemon is ready again; arming
        again is the operator's."""
        bridge, ingestor = self._stages.bridge, self._stages.ingestor
        if bridge is not None and bridge.armed:
            if not ingestor.is_fresh():
                self.fault("stream", "data stale or stream lost while armed")
            elif (rate_problem := ingestor.rate_problem()) is not None:
                self.fault("stream", f"{rate_problem}, while armed")
            elif (ahead := ingestor.stamp_lead_problem()) is not None:
                self.fault("stream", f"{ahead}, while armed")
            elif unread := self._stages.markers_unread():
                self.fault("stream", "; ".join(unread) + ", while armed")
        self._metrics.waiting.set(0 if ingestor.status().connected else 1)
        return True

    def _check_stalls(self) -> bool:
        """Armed while the scheduler or the wave stage is stuck in one call: a fault of that
        stage, for the loop is no longer closed. Nothing can end a stuck thread, so nothing
        is repaired; the daemon stays not ready until the stage comes round again, and arming
        again is the operator's."""
        bridge = self._stages.bridge
        if bridge is not None and bridge.armed:
            for stall in self._stages.stalls():
                self.fault(stall.stage, f"{stall.problem}, while armed")
        return True

    def _repair_ingestor(self) -> bool:
        """An ingestor whose thread ended (it reconnects by itself while it runs) is reported
        if it failed (once per failure, as :meth:`_restart` reports one), and started again on
        a thread of its own (:meth:`_restart_ingestor`); True once it runs. Its start looks
        for the stream and opens it, LSL calls on the network: a one-shot resolve may block
        for seconds past its timeout, and the inlet's description, clock offset and open wait
        up to ``[stream] resolve_timeout_s`` (5 s) each on an outlet that answers the resolver
        but not its inlet. On this thread they stopped the rounds, and their watchdog pings,
        for as long."""
        ingestor = self._stages.ingestor
        if ingestor.running or self._stages.stopping:
            self._ingest_fault_reported = None  # its traceback freed
            return True
        if self._ingest_restart.running:
            return False
        try:
            ingestor.raise_if_failed()
        except Exception as err:
            if err.__cause__ is not self._ingest_fault_reported:
                self.fault("ingest", err)
                self._ingest_fault_reported = err.__cause__
        self._ingest_restart.start_unless_running(self._stages.stopping)
        return False

    def _restart_ingestor(self) -> None:
        """Start the ingestor again, stopped; stopped once more where the daemon's stop began
        meanwhile (it stops the ingestor it finds, which may be before this start)."""
        ingestor = self._stages.ingestor
        ingestor.stop()
        ingestor.start()  # raises e.g. if the stream found has the wrong format
        if self._stages.stopping:
            ingestor.stop()

    def _repair_predictor(self) -> bool:
        """A failed scheduler is reported once, and its model reloaded on a thread of its own;
        True once the model runs again. A scheduler not running without an error is not yet
        reported: a reload puts its new one in place before it starts it, and a round in
        between must not take it for one already reported, or its failure never disarms.
        Whether a reload is in flight is read before the scheduler: one that ends after that
        read may have replaced it, and a reload started on the dead one read would close the
        model its successor runs."""
        reloading = self.reloading
        scheduler = self._stages.scheduler
        if scheduler is None or scheduler.running:
            return True
        if self._scheduler_fault_reported is not scheduler:
            try:
                scheduler.raise_if_failed()
            except Exception as err:
                self._scheduler_fault_reported = scheduler
                self.fault("predictor", err)
        if not reloading:
            self._reload.start_unless_running(self._stages.stopping)
        return False

    def _repair_waves(self) -> bool:
        return self._restart("waves", self._stages.loop, "wave stage")

    def _repair_ar(self) -> bool:
        """The live AR baseline's thread outlives its own failed rounds (it reports them as
        faults itself, ``service.loop.ar_baseline``); one that ended all the same (its report
        raised, or it was stopped) is reported if it failed, and restarted."""
        return self._restart("ar", self._stages.ar_baseline, "live AR baseline thread")

    def _repair_scale(self) -> bool:
        """A failed statistics updater leaves a robust-online model on frozen input statistics:
        a fault like any stage's (disarm first), then it is started again."""
        return self._restart("scale", self._stages.scale_updater, "model input statistics updater")

    def _marker_steps(self) -> tuple[tuple[str, Callable[[], bool]], ...]:
        """One step per stimulation marker inlet, ``markers <stream>``: each is repaired, and
        retried when it fails, on its own, as every step is, so one that cannot be started
        holds up none of the others."""
        return tuple(
            (marker_step(inlet.label), functools.partial(self._repair_marker_inlet, inlet))
            for inlet in self._stages.marker_inlets
        )

    def _repair_marker_inlet(self, inlet: StimulationMarkerInlet) -> bool:
        """A stimulation marker inlet whose thread ended (it reconnects by itself while it
        runs) is reported if it failed, and started again."""
        return self._restart("markers", inlet, f"stimulation marker inlet {inlet.label!r}")

    def _restart(self, stage: str, worker: BackgroundWorker | None, name: str) -> bool:
        """A worker whose thread ended is reported as a fault of ``stage`` if it failed (once
        per failure), and started again at doubling waits while it keeps failing
        (``service.daemon.restarts``; it stays down meanwhile: not ready, naming it), unless
        stopping has begun (the daemon stops it then)."""
        if worker is None or worker.running or self._stages.stopping:
            return True
        restarts = self._restarts.setdefault(name, WorkerRestarts(self._every_s))
        restarts.restart(worker, name, functools.partial(self.fault, stage))
        return True

    def _repair_query(self) -> bool:
        """A query server whose thread ended (a ZeroMQ error it does not answer as one
        request's) is reported and started again on its endpoint (``tcp://HOST:*`` gets a new
        port): no query is answered until it is. Its start binds a new socket, releasing the
        old one's context first."""
        return self._restart("query", self._stages.query, "ZeroMQ query server")

    def _repair_bridge(self) -> bool:
        """A bridge that was never opened is opened; one whose heartbeat thread died is closed
        and a new one opened, disarmed. The new bridge rebuilds refractory and budgets from the
        audit log the old one closed, so no train already given is forgotten. It is opened on a
        thread of its own (:meth:`_open_on_own_thread`); an open that fails leaves the stages
        with no bridge, and a later round retries.

        The close is not waited for (``StimulationBridge.close_without_waiting``: the host
        disarmed and the send gate shut at once, the rest on a thread of its own): a close on
        this thread, even bounded, stopped the rounds and their watchdog pings for as long as a
        close with a silent device takes, 19 s at the longest ACK deadline, past systemd's
        ``WatchdogSec``. It is started once; the new bridge is opened only once the old one has
        let go of the audit log, this step coming round meanwhile (not failing), and failing,
        naming where the close is stuck, once it has taken longer than that (the daemon not
        ready; retried at the steps' backoff). A close that fails on its own thread is this
        step's failure, logged and counted as one."""
        bridge = self._stages.bridge
        if bridge is None:
            return self._open_on_own_thread()  # the device was not there: keep trying
        if (error := bridge.status().error) is None:
            return True
        if self._bridge_failed_logged is not bridge:
            self.fault("bridge", error)
            self._bridge_failed_logged = bridge
        if self._bridge_closing is not bridge:
            bridge.close_without_waiting(functools.partial(self._close_failed, bridge))
            self._bridge_closing = bridge
        if not bridge.released:
            if bridge.close_held_up:
                raise BridgeStillClosingError(_still_closing(bridge))
            return False
        return self._open_on_own_thread()

    def _open_on_own_thread(self) -> bool:
        """Open the bridge on a thread of its own; the next rounds find it in place. Opening reads
        the audit log back and makes its start record durable: on this thread, a disk whose
        fsync hangs stopped the rounds and their watchdog pings until it returned. An open
        that failed raises here, once, for the step's backoff to retry it."""
        self._opening.start_unless_running(self._stages.stopping)
        return False

    def _close_failed(self, bridge: StimulationBridge, error: BaseException) -> None:
        """The failed ``bridge``'s close failed on its own thread: a failure of this step."""
        failure = BridgeCloseError(
            f"closing the failed stimulator bridge on {bridge.link_name} failed: "
            f"{type(error).__name__}: {error}"
        )
        failure.__cause__ = error
        self._repairs.failed("bridge", failure)

    def _update_gauges(self) -> bool:
        bridge = self._stages.bridge
        armed = bridge is not None and bridge.armed
        ready = self._stages.readiness().ready
        self._armed_and_ready = (armed, ready)
        self._metrics.armed.set(1 if armed else 0)
        self._metrics.ready.set(1 if ready else 0)
        # Judged every round (rolling means, O(1)): the state the model interlock is told.
        self._metrics.model_health.state(self._stages.model_health().state)
        if ready and not self._notified_ready:
            self._notified_ready = _systemd.notify("READY=1") or True
        return True

    def _status(self) -> bool:
        """Publish the status when due, told what this round's gauges step judged."""
        if self._publish_status is not None and self._armed_and_ready is not None:
            self._publish_status(*self._armed_and_ready)
        return True


def _still_closing(bridge: StimulationBridge) -> str:
    """Why the failed ``bridge``'s successor is not opened yet: where its close is stuck."""
    writing = bridge.audit_writing_for()
    stuck = (
        f"in an audit log write that has not returned for {writing:.1f} s (is its disk hung?)"
        if writing is not None
        else "behind the exchange with the device in progress"
    )
    return (
        f"the old bridge is still closing: stuck {stuck}; the host is disarmed, and a new "
        "bridge is opened once the old one has released the audit log"
    )
