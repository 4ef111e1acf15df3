"""The daemon's supervisor and its stop: every repair step runs on its own, the watchdog is
pinged every round, and a predictor still in use is not closed. Real rig process, emulator
over UDP, a real unix datagram socket as systemd's ``NOTIFY_SOCKET``; the faults are injected
around the real parts (``_fault_injection``)."""

import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pylsl
import pytest

from firmware_bridge import (
    AuditLog,
    Decision,
    LoopHealth,
    StimulationBridge,
    StimulationRequest,
    read_audit_log,
)
from firmware_bridge.wire import MessageType
from service.config import Settings
from service.core.thread_placement import ThreadPlacement
from service.core.worker import BackgroundWorker
from service.daemon.daemon import Daemon, DaemonStateError
from service.inference.onnx_predictor import OnnxPredictor
from service.inference.scheduler import Scheduler
from service.ingest.ingestor import Ingestor
from service.ingest.stimulation_marker_inlet import StimulationMarkerInlet
from service.loop.closed_loop import ClosedLoop
from service.zmq_api.client import PredictionClient
from tests.firmware_bridge._holding_relay import HoldingRelay
from tests.service._fault_injection import Call, CrashingPredictor, ModelLoads, non_finite_model
from tests.service._loop_harness import (
    AUTH,
    LOAD_FAULTS,
    Emulator,
    NotifySocket,
    Rig,
    arm_daemon_when_ready,
    arm_when_ready,
    loop_settings,
    served_beside_rig,
    wait_until,
)
from tests.service.daemon.test_daemon_stimulation import (
    BASELINE_S,
    REQUEST_ALWAYS,
    _requesting_settings,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def notify(monkeypatch):
    sink = NotifySocket()
    monkeypatch.setenv("NOTIFY_SOCKET", sink.path)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    yield sink
    sink.close()


def _arm_and_see_the_gauge(daemon: Daemon, tries: int = 3) -> None:
    """Arm, and wait for the supervisor's armed gauge to say so. An arm that a load fault
    (:data:`LOAD_FAULTS`) undid before the gauge was read is tried again once ready; any other
    disarm fails, naming its reason."""
    for _ in range(tries):
        arm_daemon_when_ready(daemon)
        wait_until(
            lambda: _sample(daemon, "corticast_daemon_armed") == 1 or not daemon.bridge.armed,
            30,
            "the armed gauge, or a disarm",
            explain=daemon.bridge.status,
        )
        if _sample(daemon, "corticast_daemon_armed") == 1:
            return
        reason = daemon.bridge.status().last_disarm_reason or ""
        assert any(fault in reason for fault in LOAD_FAULTS), reason
    raise AssertionError(f"disarmed by load faults {tries} times; last: {reason}")


def _sample(daemon: Daemon, name: str, **labels: str) -> float | None:
    return daemon.registry.get_sample_value(name, labels)


def _stuck_thread_waited_briefly(
    monkeypatch: pytest.MonkeyPatch, worker: type[BackgroundWorker]
) -> None:
    """A stop waits 0.5 s, not 2 s, for the thread of a ``worker`` the test holds stuck in a
    call: that it does not end shows as well, and the stop goes on as it does after 2 s."""
    monkeypatch.setattr(worker, "stop_wait_s", 0.5)


def test_a_failing_model_reload_holds_up_no_other_repair_nor_the_watchdog(
    tmp_path, exported, source_id, monkeypatch, notify
):
    """The model crashed and its reload keeps failing, the wave stage and the live AR
    baseline's thread are down, and the bridge could not open (its audit log cannot fsync:
    /dev/null): both threads are restarted, the bridge opens once the log can be written, the
    gauges follow, the watchdog keeps being pinged; and once the model loads again it runs,
    unproven, and can be armed."""
    _, window, step = exported
    audit = tmp_path / "audit.jsonl"
    audit.symlink_to("/dev/null")  # accepts writes, refuses fsync: no durable record
    settings = loop_settings(tmp_path, window, step, source_id, bridge={"audit_log": audit})
    loads = ModelLoads(monkeypatch)
    rig = Rig(source_id).start()
    emulator = Emulator(settings).start()
    try:
        with Daemon(settings) as daemon:
            assert daemon.bridge is None  # refused to start without a durable audit log
            with pytest.raises(DaemonStateError, match=r"stimulator bridge not connected$"):
                daemon.arm()  # none ever opened: no fault to name, no reopening to wait for
            # Scored past what a fresh model shows right after its reload (see below): that is
            # its predictions less the ~16 still waiting for their frames, so 50 tell them apart.
            wait_until(lambda: daemon.accuracy.scored >= 50, 30, "predictions scored")

            loads.failing()
            daemon.scheduler.swap_predictor(CrashingPredictor(daemon.predictor.info))
            wait_until(lambda: loads.attempts >= 2, 30, "two failed reloads")
            daemon.loop.stop()  # the wave stage is down too
            daemon.ar_baseline.stop()  # and the live AR baseline's thread
            audit.unlink()  # the log can be made durable now: the bridge can open
            pings = notify.count("WATCHDOG=1")

            wait_until(lambda: daemon.loop.running, 30, "the wave stage to be restarted")
            wait_until(lambda: daemon.ar_baseline.running, 30, "the AR thread to be restarted")
            wait_until(lambda: daemon.bridge is not None, 30, "the bridge to be reopened")
            wait_until(lambda: daemon.bridge.status().connected, 30, "the device to answer")
            wait_until(lambda: notify.count("WATCHDOG=1") >= pings + 5, 30, "watchdog pings")
            assert not daemon.scheduler.running  # the reload still fails ...
            failures = "corticast_daemon_supervisor_step_failures_total"
            # (each failed reload is counted by the round after it)
            wait_until(lambda: _sample(daemon, failures, step="predictor") >= 3, 30, "counts")
            assert loads.attempts >= 3
            assert _sample(daemon, "corticast_daemon_faults_total", stage="predictor") == 1
            assert _sample(daemon, failures, step="waves") == 0
            assert _sample(daemon, failures, step="ar") == 0
            assert _sample(daemon, "corticast_daemon_faults_total", stage="ar") == 0  # stopped
            failing = daemon.status()["supervisor_steps_failing"]
            assert "simulated model load failure" in failing["predictor"]
            reasons = daemon.readiness().reasons
            assert "model not running: reload failed: " + failing["predictor"] in reasons
            assert not any("bridge" in reason for reason in reasons), reasons
            assert _sample(daemon, "corticast_daemon_ready") == 0

            # ... until the file can be read again: the model runs, unproven, and can be armed.
            loads.normal()
            wait_until(lambda: daemon.readiness().ready, 30, "ready after the reload")
            health = daemon.model_health()
            assert daemon.scheduler.predictions >= health.scored  # scored from zero again
            wait_until(lambda: _sample(daemon, "corticast_daemon_ready") == 1, 30, "ready gauge")
            wait_until(
                lambda: daemon.status()["supervisor_steps_failing"] == {}, 30, "no step failing"
            )
            _arm_and_see_the_gauge(daemon)

            # A second crash disarms (fault first), and the gauge says so while reloads fail.
            # The two gauges are set one after the other: here the ready gauge comes late.
            ready = daemon._metrics.ready
            set_ready = ready.set

            def slow_to_fall(value: float) -> None:
                if value == 0 and _sample(daemon, "corticast_daemon_ready") == 1:
                    time.sleep(0.5)
                set_ready(value)

            monkeypatch.setattr(ready, "set", slow_to_fall)
            loads.failing()
            daemon.scheduler.swap_predictor(CrashingPredictor(daemon.predictor.info))
            wait_until(lambda: not daemon.bridge.armed, 30, "the fault to disarm")
            wait_until(lambda: _sample(daemon, "corticast_daemon_armed") == 0, 30, "armed gauge")
            wait_until(lambda: _sample(daemon, "corticast_daemon_ready") == 0, 30, "ready gauge")
    finally:
        rig.kill()
        emulator.stop()
    assert notify.count("READY=1") == 1 and notify.count("STOPPING=1") == 1


class _Predictions:
    """Subscribes to the daemon's ``prediction`` topic on a thread of its own: the model
    path and whether every value was finite, for each prediction published (the loop
    publishes each one it is handed before the wave estimate and the policy see it)."""

    def __init__(self, endpoint: str) -> None:
        self.seen: list[tuple[str, bool]] = []
        self._endpoint = endpoint
        self._stop, self._ready = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._watch, name="test-predictions", daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    def _watch(self) -> None:
        with PredictionClient(self._endpoint, None) as client:
            self._ready.set()
            while not self._stop.is_set():
                message = client.receive(timeout_s=0.2)
                if message is not None:
                    path = message.header["predictor"]["model_path"]
                    self.seen.append((path, bool(np.isfinite(message.array).all())))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def test_a_model_that_outputs_nan_is_a_predictor_fault_that_disarms_and_reaches_no_policy(
    tmp_path, exported, source_id, notify
):
    """A bad export, the tiny model's graph with a Mul by NaN at 3 of its 5760 outputs, swapped
    in under a running, armed daemon whose policy requests at almost every prediction: its
    predictions are never published (so never reach the wave estimate nor the policy), the
    supervisor disarms with a reason that names the model and the count, counts a predictor
    fault, and reloads the configured model, which serves again."""
    _, window, step = exported
    nan_path = non_finite_model(
        window, tmp_path / "nan.onnx", ((0, 15, 0, 3, 4), (0, 15, 0, 3, 5), (0, 0, 0, 17, 19))
    )
    settings = loop_settings(
        tmp_path, window, step, source_id,
        policy=REQUEST_ALWAYS,
        loop={"health_min_scored": 50, "health_margin_db": 20.0, "robust_sd_seconds": BASELINE_S},
    )  # fmt: skip
    rig = Rig(source_id).start()
    emulator = Emulator(settings).start()
    try:
        with Daemon(settings) as daemon:
            wait_until(daemon.model_healthy, 30, "the model to be proven")
            _arm_and_see_the_gauge(daemon)
            predictions = _Predictions(daemon.publisher.endpoint)
            try:
                wait_until(lambda: predictions.seen, 30, "a prediction published")
                crashed = daemon.scheduler
                crashed.swap_predictor(OnnxPredictor(nan_path, threads=1)).close()
                wait_until(lambda: not daemon.bridge.armed, 30, "the fault to disarm")
                reason = daemon.bridge.status().last_disarm_reason or ""
                if any(fault in reason for fault in LOAD_FAULTS):  # the machine's, not ours
                    pytest.skip(f"disarmed by a load fault first: {reason}")
                assert reason.startswith("predictor fault: "), reason
                assert f"({nan_path}, onnxruntime-cpu) output 3 non-finite values" in reason
                assert daemon.bridge.status().last_disarm_cause == "fault"
                faults = "corticast_daemon_faults_total"
                wait_until(lambda: daemon.scheduler is not crashed, 30, "the model reloaded")
                wait_until(lambda: daemon.scheduler.predictions > 0, 30, "predictions again")
                count = len(predictions.seen)
                wait_until(lambda: len(predictions.seen) > count, 30, "published again")
            finally:
                predictions.stop()
            assert _sample(daemon, faults, stage="predictor") == 1
            nan_count = "corticast_scheduler_non_finite_predictions_total"
            assert _sample(daemon, nan_count) == 1
            published_by = {path for path, _ in predictions.seen}
            assert str(nan_path) not in published_by and str(window) in published_by
            assert all(finite for _, finite in predictions.seen)
    finally:
        rig.kill()
        emulator.stop()


def test_stop_leaves_open_a_predictor_that_a_stuck_inference_still_uses(
    settings, source_id, monkeypatch, caplog
):
    _stuck_thread_waited_briefly(monkeypatch, Scheduler)
    loads = ModelLoads(monkeypatch)
    rig = Rig(source_id).start()
    daemon = Daemon(settings).start()
    predictor = loads.made[0]  # the model the scheduler runs
    try:
        wait_until(lambda: daemon.scheduler.predictions > 5, 30, "predictions")
        predictor.hold.set()
        assert predictor.inside.wait(30), "no inference reached the gate"
        with caplog.at_level(logging.ERROR, logger="corticast"):
            daemon.stop()  # the scheduler thread cannot end: its inference does not return
        assert not predictor.closed, "closed under an inference in progress"
        assert "the predictor is left open" in caplog.text
        assert daemon.scheduler.running  # reported as it is
    finally:
        predictor.release.set()
        rig.kill()
        daemon.stop()
    assert daemon.scheduler.stop(timeout=30)  # the inference returned; the thread ends
    predictor.close()


def test_stop_closes_the_bridge_while_a_swaps_hand_over_waits_on_a_stuck_inference(
    tmp_path, exported, source_id, monkeypatch
):
    """A swap's hand-over holds the state lock while it waits out the inference in flight;
    one that does not return (a GPU call) holds it for as long. ``stop`` must still close
    the bridge (flushing the audit log) and the sockets: it waited on that lock for the
    bridge to close, for as long as the inference."""
    _, window, step = exported
    settings = loop_settings(tmp_path, window, step, source_id)
    # stop()'s last wait, for the hand-over held here, is bounded: 1 s of it shows as much as
    # the 5 s a real inference may take.
    monkeypatch.setattr("service.daemon.daemon._HANDOVER_TIMEOUT_S", 1.0)
    _stuck_thread_waited_briefly(monkeypatch, Scheduler)
    loads = ModelLoads(monkeypatch)
    rig = Rig(source_id).start()
    emulator = Emulator(settings).start()
    daemon = Daemon(settings).start()
    predictor = loads.made[0]  # the model the scheduler runs
    try:
        wait_until(lambda: daemon.bridge is not None, 30, "the bridge")
        bridge = daemon.bridge
        wait_until(lambda: daemon.scheduler.predictions > 5, 30, "predictions")
        predictor.hold.set()
        assert predictor.inside.wait(30), "no inference reached the gate"
        swap = Call(lambda: daemon.swap_model(window), "test-swap")
        wait_until(lambda: len(loads.made) == 2 or swap.done.is_set(), 30, "the swap's load")
        assert swap.error is None and len(loads.made) == 2
        wait_until(daemon._state_lock.locked, 30, "the swap's hand-over")
        stopping = Call(daemon.stop, "test-stop")
        assert stopping.done.wait(30), "stop() waits on the stuck hand-over"
        assert stopping.error is None
        assert not bridge.running  # closed, its audit log flushed
        assert not swap.done.is_set()  # still waiting on the inference
    finally:
        predictor.release.set()
        rig.kill()
        emulator.stop()
    assert swap.done.wait(30)
    assert daemon.scheduler.stop(timeout=30)
    for made in loads.made:
        made.close()


@pytest.fixture
def settings(tmp_path, exported, source_id):
    _, window, step = exported
    return loop_settings(tmp_path, window, step, source_id)


def test_a_failed_bridge_is_reopened_and_the_new_one_remembers_the_trains_given(
    tmp_path, exported, source_id
):
    """A bridge whose heartbeat thread died after it had admitted a train is replaced: the new
    bridge rebuilds refractory and budgets from the audit log, so nothing is forgotten and the
    daemon need not be restarted (it once stayed down, not ready, until an operator did). It
    says it is disarmed by the fault (``/status`` once said "disarmed at start")."""
    _, window, step = exported
    settings = loop_settings(tmp_path, window, step, source_id)
    emulator = Emulator(settings).start()
    try:
        with Daemon(settings) as daemon:
            wait_until(lambda: daemon.bridge is not None, 30, "the bridge")
            failed = daemon.bridge
            wait_until(lambda: failed.status().connected, 30, "the device to answer")
            failed.arm()
            health = LoopHealth(newest_sample_age_s=0.001, missing_frames=0, model_healthy=True)
            assert failed.request_stimulation(REQUEST, health).sent
            assert len(emulator.device.pulses) == 1

            def broken_heartbeat() -> None:
                raise RuntimeError("simulated heartbeat failure")

            failed._heartbeat._beat = broken_heartbeat  # fault injection: the thread dies
            wait_until(lambda: daemon.bridge not in (failed, None), 30, "the bridge to be replaced")
            reopened = daemon.bridge
            assert not failed.armed and not reopened.armed  # a fault disarms; reopening keeps it
            status = reopened.status()
            # Disarmed by the fault, not "at start": the daemon never restarted.
            assert status.last_disarm_cause == "fault", status
            assert status.last_disarm_reason == failed.status().last_disarm_reason
            limits = settings.interlocks
            assert status.minute_budget_left == limits.max_trains_per_minute - 1
            assert status.day_budget_left == limits.max_trains_per_day - 1
            wait_until(lambda: reopened.status().connected, 30, "the device to answer again")
            reopened.arm()
            decision = reopened.request_stimulation(REQUEST, health)
            assert decision.interlocks == ("refractory",)  # the first bridge's train counts
            assert len(emulator.device.pulses) == 1
    finally:
        emulator.stop()


REQUEST = StimulationRequest((1, 2), 50, 100, 100, 100, 3e-4)
GATE_S = 60.0
"""Longest a test holds a part it has stopped; only a hang reaches it."""


def _kill_heartbeat(bridge: StimulationBridge) -> None:
    """Fault injection: the bridge's heartbeat thread dies at its next beat."""

    def broken_heartbeat() -> None:
        raise RuntimeError("simulated heartbeat failure")

    bridge._heartbeat._beat = broken_heartbeat


def test_the_wave_stage_s_request_to_a_bridge_whose_heartbeat_died_is_refused_naming_why(
    tmp_path, exported, source_id, monkeypatch
):
    """A bridge whose heartbeat thread died answers the wave stage's requests, until the
    supervisor has replaced it, with a refusal naming why (as every interlock's, in the audit
    log and the outcome metrics). It used to raise: the wave stage ended, was restarted, and
    a second fault ("waves") was counted beside the bridge's own. Here the supervisor's close
    of the failed bridge is held until the wave stage has asked it."""
    _, window, step = exported
    settings = loop_settings(
        tmp_path, window, step, source_id,
        policy=REQUEST_ALWAYS, loop={"robust_sd_seconds": BASELINE_S},
    )  # fmt: skip
    rig = Rig(source_id).start()
    emulator = Emulator(settings).start()
    let_close = threading.Event()
    try:
        with Daemon(settings) as daemon:
            wait_until(lambda: daemon.readiness().ready, 30, "ready")
            failed = daemon.bridge
            answers: list[Decision | BaseException] = []
            ask, close = failed.request_stimulation, failed.close_without_waiting

            def answered(request, health, **kwargs) -> Decision:
                dead = failed.status().error is not None  # the heartbeat thread has died
                try:
                    answer = ask(request, health, **kwargs)
                except BaseException as err:
                    if dead:
                        answers.append(err)
                    raise
                if dead:
                    answers.append(answer)
                return answer

            def held_close(*args) -> None:
                let_close.wait(GATE_S)
                close(*args)

            monkeypatch.setattr(failed, "request_stimulation", answered)
            monkeypatch.setattr(failed, "close_without_waiting", held_close)
            _kill_heartbeat(failed)
            wait_until(lambda: answers, 60, "a request to the failed bridge")
            let_close.set()
            wait_until(lambda: daemon.bridge not in (failed, None), 30, "the bridge reopened")
            reopened = daemon.bridge
            wait_until(lambda: reopened.status().requests > 0, 60, "a request to the new one")
            assert daemon.supervisor.fault_counts() == {"bridge": 1}
            refusal = answers[0]
            assert isinstance(refusal, Decision), repr(refusal)
            assert refusal.outcome == "blocked"
            armed = refusal.violations[0]  # beside others (the model here is still unproven)
            assert armed.interlock == "armed"
            assert "heartbeat thread failed: RuntimeError: simulated" in armed.reason
    finally:
        let_close.set()
        rig.kill()
        emulator.stop()


def test_an_arm_meeting_a_failed_bridge_closed_for_reopening_says_to_arm_once_ready(
    settings, monkeypatch
):
    """An operator's arm that reaches the bridge just as the supervisor closes it (its
    heartbeat thread died) to open another is refused as the other "not now" refusals are
    (409), saying the bridge is being reopened after a fault and to arm again once /readyz
    says ready; it used to answer "arming failed: StimulationBridge is closed". The race is
    laid out: the arm, past the daemon's readiness check, waits for the close."""
    with served_beside_rig(settings, settings.stream.source_id) as (served, http, _emulator):
        daemon = served.daemon
        wait_until(lambda: http.get("/readyz").status_code == 200, 30, "ready")
        failed, reached = daemon.bridge, threading.Event()
        arm = failed.arm

        def arm_once_closed() -> None:
            reached.set()
            _kill_heartbeat(failed)
            wait_until(lambda: not failed.running, 30, "the supervisor to close the bridge")
            arm()

        monkeypatch.setattr(failed, "arm", arm_once_closed)
        deadline = time.monotonic() + 30
        while True:  # until an arm reaches the bridge (a loaded host may be unready a moment)
            answer = http.post("/control/arm", headers=AUTH, timeout=GATE_S)
            if reached.is_set() or time.monotonic() > deadline:
                break
        assert answer.status_code == 409, answer.text
        detail = answer.json()["detail"]
        assert detail.startswith("cannot arm: the stimulator bridge is being reopened after a")
        assert "simulated heartbeat failure" in detail
        assert detail.endswith("arm again once /readyz says ready")
        # As it says; read from the arm's answer: a load fault may disarm it right after.
        assert arm_when_ready(http) == {"armed": True}
        assert daemon.bridge is not failed


def test_an_arm_while_a_bridge_closed_for_a_fault_cannot_be_reopened_yet_names_that_fault(
    settings, monkeypatch
):
    """Between the supervisor closing a bridge for a fault and a new one opening (here the
    device cannot be opened again yet), an arm answered only "stimulator bridge not
    connected", as for a device never connected; it is refused as an arm meeting the failed
    bridge is, naming the fault and saying to arm again once /readyz says ready. A device
    never connected keeps "not connected" (``test_daemon.py``)."""
    emulator = Emulator(settings).start()
    try:
        with Daemon(settings) as daemon:
            wait_until(lambda: daemon.bridge is not None, 30, "the bridge")
            failed = daemon.bridge

            def cannot_open(self) -> None:
                raise OSError("simulated: the device cannot be opened")

            monkeypatch.setattr(StimulationBridge, "start", cannot_open)  # new bridges only
            _kill_heartbeat(failed)
            wait_until(lambda: "bridge" in daemon.supervisor.failing(), 30, "a failed reopen")
            assert daemon.bridge is None
            with pytest.raises(DaemonStateError) as refused:
                daemon.arm()
            assert str(refused.value) == (
                "cannot arm: the stimulator bridge is being reopened after a fault "
                "(RuntimeError: simulated heartbeat failure); the daemon stays disarmed: arm "
                "again once /readyz says ready"
            )
    finally:
        emulator.stop()


def test_a_wave_stage_that_cannot_be_restarted_makes_the_daemon_not_ready_naming_why(
    settings, monkeypatch
):
    """The wave stage turns predictions into stimulation requests: armed without it, nothing
    would ever be requested. One that is down and cannot be started again (its AR thread
    cannot be made: the process is out of threads) is a reason not to be ready, with the
    restart's error, and arming is refused; once it starts again, the daemon is ready. It
    used to say ready, and armed, with no wave stage."""
    rig = Rig(settings.stream.source_id).start()
    emulator = Emulator(settings).start()
    try:
        with Daemon(settings) as daemon:
            wait_until(lambda: daemon.readiness().ready, 30, "ready")

            def out_of_threads(self) -> None:
                raise RuntimeError("can't start new thread")

            monkeypatch.setattr(ClosedLoop, "open_ar_thread", out_of_threads)
            daemon.loop.stop()
            wait_until(lambda: "waves" in daemon.supervisor.failing(), 30, "a failed restart")
            failure = daemon.supervisor.failing()["waves"]
            assert "can't start new thread" in failure
            expected = "wave stage not running: restart failed: " + failure
            assert expected in daemon.readiness().reasons
            assert expected in daemon.status()["not_ready_reasons"]
            with pytest.raises(DaemonStateError, match="wave stage not running"):
                daemon.arm()
            assert not daemon.bridge.armed

            monkeypatch.undo()
            wait_until(lambda: daemon.loop.running, 30, "the wave stage to be restarted")
            wait_until(lambda: daemon.readiness().ready, 30, "ready again")
    finally:
        rig.kill()
        emulator.stop()


def test_a_marker_inlet_that_cannot_be_started_holds_up_the_restart_of_no_other(
    tmp_path, exported, source_id, monkeypatch, caplog
):
    """Two tools' marker streams (neither announced yet: each inlet looks for its own). Both
    inlets end, and the first cannot be started again (the process is out of threads): the
    second is restarted all the same, and the first is reported, logged and in /status's
    failing steps under its stream, until it starts. The supervisor used to try them in turn
    in one step, which the first's failure ended: the second waited for the first."""
    _, window, step = exported
    names = [f"{source_id}-lab-stimulator-{n}" for n in (1, 2)]
    settings = loop_settings(tmp_path, window, step, source_id,
                             ingest={"stimulation_marker_streams": names})  # fmt: skip
    daemon = Daemon(settings).start()  # no stream: it starts all the same, looking for one
    try:
        first, second = daemon.marker_inlets
        # Each inlet's step and the markers stage are counted from the start, at 0, so that
        # an alert's increase() sees the first failure and the first fault.
        failures = "corticast_daemon_supervisor_step_failures_total"
        for inlet in (first, second):
            assert _sample(daemon, failures, step=f"markers {inlet.label}") == 0
        assert _sample(daemon, "corticast_daemon_faults_total", stage="markers") == 0
        prepare = StimulationMarkerInlet._prepare

        def out_of_threads_for_the_first(self: StimulationMarkerInlet) -> None:
            if self is first:
                raise RuntimeError("can't start new thread")
            prepare(self)

        monkeypatch.setattr(StimulationMarkerInlet, "_prepare", out_of_threads_for_the_first)
        with caplog.at_level(logging.ERROR, logger="corticast.daemon"):
            first.stop()
            second.stop()
            wait_until(lambda: second.running, 30, "the second inlet to be restarted")
            failing = f"markers {first.label}"
            wait_until(lambda: failing in _steps_failing(daemon), 30, "the failure in /status")
        assert "can't start new thread" in _steps_failing(daemon)[failing]
        assert f"supervisor: {failing} failed" in caplog.text
        assert not first.running
        assert _sample(daemon, failures, step=failing) >= 1
        monkeypatch.undo()
        wait_until(lambda: first.running, 30, "the first inlet to be restarted once it can be")
        wait_until(lambda: failing not in _steps_failing(daemon), 30, "its step to work again")
    finally:
        daemon.stop()


def _steps_failing(daemon: Daemon) -> dict[str, str]:
    return daemon.status()["supervisor_steps_failing"]


def test_once_stopping_has_begun_the_supervisor_restarts_no_stage(settings, notify):
    """``Daemon.stop`` begins the stop, stops the supervisor (waiting 2 s), then each stage; a
    supervisor round that outlasts that wait (its ingest step restarting an ingestor whose
    stream resolves but does not answer) used to go on to restart the wave stage and the live
    AR baseline's thread the daemon had just stopped, left running after ``stop``. Here the
    stop has begun (as SIGTERM's handler begins it) and those stages are stopped under a
    supervisor that keeps coming round: none is started again."""
    daemon = Daemon(settings).start()  # no stream: it starts all the same, looking for one
    try:
        daemon.begin_stop()
        daemon.loop.stop()
        daemon.ar_baseline.stop()
        daemon.ingestor.stop()
        pings = notify.count("WATCHDOG=1")
        wait_until(lambda: notify.count("WATCHDOG=1") >= pings + 5, 30, "supervisor rounds")
        assert not daemon.loop.running
        assert not daemon.ar_baseline.running
        assert not daemon.ingestor.running
    finally:
        daemon.stop()


def test_a_bridge_that_finishes_opening_once_stopping_has_begun_is_closed(
    tmp_path, exported, source_id
):
    """The supervisor's round can outlast ``Daemon.stop``'s wait for it, and ``stop`` closes
    only the bridge it finds: a bridge such a round finished opening after that was left open,
    its heartbeat thread and its link to the device running on after the daemon stopped."""
    _, window, step = exported
    settings = loop_settings(tmp_path, window, step, source_id)
    emulator = Emulator(settings).start()
    daemon = Daemon(settings).start()
    try:
        wait_until(lambda: daemon.bridge is not None, 30, "the bridge")
        daemon.stop()  # closes the bridge it finds
        before = set(threading.enumerate())
        daemon._open_bridge()  # a supervisor round that outlasted stop's wait finishes now
        assert daemon.bridge is None
        assert [t for t in threading.enumerate() if t not in before] == []
    finally:
        if daemon.bridge is not None:
            daemon.bridge.close()  # what the defect left open
        daemon.stop()
        emulator.stop()


@pytest.mark.skipif(
    not ThreadPlacement("rr", 1, frozenset()).realtime_permitted(),
    reason="SCHED_RR is not permitted here",
)
def test_a_reload_on_a_real_time_supervisor_loads_the_model_under_the_normal_policy(
    tmp_path, exported, source_id, monkeypatch
):
    """Under the drop-in the supervisor, and the reload thread it starts, are SCHED_RR 1, as
    is the ingest thread: seconds of building, checking and warming up a model there would
    hold a CPU for RR's whole time slice before the ingest thread of the same priority ran on
    it. The load runs under the normal policy."""
    _, window, step = exported
    settings = loop_settings(tmp_path, window, step, source_id)
    build, seen = Daemon._build_predictor, []

    def observed(self, files):
        seen.append(os.sched_getscheduler(0))
        return build(self, files)

    rig = Rig(source_id).start()
    try:
        with Daemon(settings) as daemon:
            wait_until(lambda: daemon.scheduler.predictions > 5, 30, "predictions")
            [supervisor] = [t for t in threading.enumerate() if t.name == "corticast-supervisor"]
            os.sched_setscheduler(supervisor.native_id, os.SCHED_RR, os.sched_param(1))
            monkeypatch.setattr(Daemon, "_build_predictor", observed)
            crashed = daemon.scheduler
            crashed.swap_predictor(CrashingPredictor(daemon.predictor.info)).close()
            wait_until(
                lambda: daemon.scheduler is not crashed and daemon.scheduler.predictions > 5,
                30,
                "predictions after the reload",
            )
    finally:
        rig.kill()
    assert seen == [os.SCHED_OTHER]


def test_a_reload_between_putting_its_scheduler_in_place_and_starting_it_leaves_none_after_stop(
    settings, monkeypatch
):
    """A reload (the supervisor's, on its own thread) puts its new scheduler in place, then
    starts it; ``stop`` reads the scheduler to stop without the state lock the hand-over holds.
    One that read it in between stopped a scheduler not started yet, and the reload then
    started it: left running after ``stop``, on the model ``stop`` then closed under it."""
    in_window, let_start = threading.Event(), threading.Event()
    held: list[Scheduler] = []
    start = Scheduler.start

    def held_start(self: Scheduler) -> Scheduler:
        if threading.current_thread().name == "corticast-model-reload":
            held.append(self)
            in_window.set()
            assert let_start.wait(60)
        return start(self)

    monkeypatch.setattr(Scheduler, "start", held_start)
    daemon = Daemon(settings).start()  # no stream: the scheduler waits for its first window
    stopping = None
    try:
        daemon.scheduler.stop()  # ended: the supervisor reloads the model
        assert in_window.wait(60), "no reload reached its scheduler's start"
        [new] = held
        assert daemon.scheduler is new  # in place, not started
        stopping = Call(daemon.stop, "test-stop")
        wait_until(lambda: new._stop_requested.is_set(), 30, "stop to stop the scheduler")
        let_start.set()
        assert stopping.done.wait(60) and stopping.error is None
        daemon.supervisor._reload.join(60)
        assert not new.running, "a scheduler started after stop, on the model stop closed"
    finally:
        let_start.set()
        if stopping is not None:
            stopping.done.wait(60)
        for scheduler in held:
            scheduler.stop()
        daemon.stop()


def test_a_reloaded_scheduler_stuck_in_its_first_inference_as_stop_begins_keeps_its_model(
    settings, source_id, monkeypatch
):
    """As above, but the reload's scheduler, once started, is stuck in its first inference (a
    GPU call that does not return): the reload cannot stop it, and ``stop``, which had
    stopped it before it started, took it for ended and closed the model under the
    inference."""
    _stuck_thread_waited_briefly(monkeypatch, Scheduler)  # the reload's stop of it
    loads = ModelLoads(monkeypatch)
    in_window, let_start = threading.Event(), threading.Event()
    held: list[Scheduler] = []
    start = Scheduler.start

    def held_start(self: Scheduler) -> Scheduler:
        if threading.current_thread().name != "corticast-model-reload":
            return start(self)
        held.append(self)
        in_window.set()
        assert let_start.wait(60)
        self.predictor.hold.set()  # its first inference does not return until released
        start(self)
        assert self.predictor.inside.wait(60), "no inference reached the gate"
        return self

    monkeypatch.setattr(Scheduler, "start", held_start)
    rig = Rig(source_id).start()
    daemon = Daemon(settings).start()
    stopping = None
    try:
        wait_until(lambda: daemon.scheduler.predictions > 5, 30, "predictions")
        daemon.scheduler.swap_predictor(CrashingPredictor(daemon.predictor.info))
        assert in_window.wait(60), "no reload reached its scheduler's start"
        [new] = held
        stopping = Call(daemon.stop, "test-stop")
        wait_until(lambda: new._stop_requested.is_set(), 30, "stop to stop the scheduler")
        let_start.set()
        assert stopping.done.wait(60) and stopping.error is None
        assert not new.predictor.closed, "closed under an inference in progress"
    finally:
        let_start.set()
        if stopping is not None:
            stopping.done.wait(60)
        for made in loads.made:
            made.release.set()
        rig.kill()
        daemon.stop()
    assert new.stop(timeout=30)  # the inference returned; the thread ends
    new.predictor.close()


def test_a_reload_that_serves_another_backend_says_so_in_the_serving_metrics(settings, monkeypatch):
    """Start and a hot swap name the running predictor's backend and precision in
    ``corticast_serving_info``; a reload after a fault must too: with ``[model] backend =
    "auto"`` a GPU backend that no longer loads fails over to the CPU, and the metric went on
    naming the GPU. Here the start's predictor reports TensorRT in FP16 (real ONNX Runtime CPU
    underneath), the reload's is what ONNX Runtime CPU reports."""
    build = Daemon._build_predictor

    def gpu_at_start(self: Daemon, files):
        predictor = build(self, files)
        if threading.current_thread().name != "corticast-model-reload":
            predictor.info = dataclasses.replace(
                predictor.info, backend="tensorrt", precision="fp16"
            )
        return predictor

    monkeypatch.setattr(Daemon, "_build_predictor", gpu_at_start)
    daemon = Daemon(settings).start()  # no stream: the scheduler waits for its first window
    try:
        assert _serving_labels(daemon)["backend"] == "tensorrt"
        ended = daemon.scheduler
        ended.stop()  # ended: the supervisor reloads the model
        wait_until(
            lambda: daemon.scheduler is not ended and not daemon.supervisor.reloading,
            60,
            "the reload to finish",
        )
        running = daemon.predictor.info
        assert (running.backend, running.precision) == ("onnxruntime-cpu", "fp32")
        labels = _serving_labels(daemon)
        assert (labels["backend"], labels["precision"]) == (running.backend, running.precision)
    finally:
        daemon.stop()


def _serving_labels(daemon: Daemon) -> dict[str, str]:
    """``corticast_serving_info``'s labels, read from the daemon's registry."""
    [family] = [f for f in daemon.registry.collect() if f.name == "corticast_serving"]
    [sample] = family.samples
    return sample.labels


def test_a_wave_stage_that_dies_disarms_at_once_not_at_the_supervisor_s_next_round(
    tmp_path, exported, source_id, monkeypatch
):
    """A fault raised in the wave stage outside the bridge (here its decision itself) ends the
    worker: its own thread disarms as it fails, before anything else, so the bridge is never
    left armed until the supervisor's next round (an hour here) or a backed-off restart. It
    used to wait for that round."""
    _, window, step = exported
    settings = loop_settings(tmp_path, window, step, source_id, loop={"supervise_every_s": 3600.0})
    rig = Rig(settings.stream.source_id).start()
    emulator = Emulator(settings).start()
    try:
        with Daemon(settings) as daemon:
            arm_daemon_when_ready(daemon)
            assert daemon.bridge.armed

            def failing(self, prediction) -> None:
                raise RuntimeError("injected: the decision failed")

            monkeypatch.setattr(ClosedLoop, "_decide", failing)
            wait_until(lambda: not daemon.loop.running, 30, "the wave stage to die")
            wait_until(
                lambda: not daemon.bridge.armed, 30, "the disarm", explain=daemon.bridge.status
            )
            status = daemon.bridge.status()
            assert "injected: the decision failed" in (status.last_disarm_reason or "")
            assert status.last_disarm_cause == "fault"
    finally:
        rig.kill()
        emulator.stop()


def test_a_wave_stage_ended_by_system_exit_is_a_fault_that_disarms(settings, monkeypatch):
    """A ``SystemExit`` (no ``Exception``) ending the wave stage's thread: it is a fault like
    any other, disarming and counted. It used to end the thread as a clean stop did: no
    disarm, no error to report, and the supervisor restarted the stage, armed all along."""
    rig = Rig(settings.stream.source_id).start()
    emulator = Emulator(settings).start()
    try:
        with Daemon(settings) as daemon:
            arm_daemon_when_ready(daemon)

            def exiting(self, prediction) -> None:
                raise SystemExit("injected: a library called sys.exit(2)")

            monkeypatch.setattr(ClosedLoop, "_decide", exiting)
            wait_until(
                lambda: not daemon.bridge.armed, 20, "the disarm", explain=daemon.bridge.status
            )
            status = daemon.bridge.status()
            assert "injected: a library called sys.exit(2)" in (status.last_disarm_reason or "")
            assert status.last_disarm_cause == "fault"
            wait_until(
                lambda: (_sample(daemon, "corticast_daemon_faults_total", stage="waves") or 0) >= 1,
                30,
                "the fault counted",
            )
    finally:
        rig.kill()
        emulator.stop()


def _stuck_while_armed(
    daemon: Daemon, stage: str, problem: str, inside: threading.Event, release: threading.Event
) -> None:
    """Armed, a call of ``stage`` held (it has set ``inside``, and waits for ``release``):
    the supervisor disarms as for a fault of ``stage`` naming ``problem``, counts it, and
    the daemon is not ready, refusing to arm, until the call returns; then it is ready again,
    and still disarmed."""
    assert inside.wait(30), "the held call was never reached"
    wait_until(lambda: not daemon.bridge.armed, 20, "the disarm", explain=daemon.bridge.status)
    status = daemon.bridge.status()
    reason = status.last_disarm_reason or ""
    if problem not in reason and any(fault in reason for fault in LOAD_FAULTS):
        release.set()  # a stall is a fault only while armed: this one can no longer be seen
        pytest.skip(f"disarmed by a load fault before the stall: {reason}")
    assert f"{stage} fault: {problem}" in reason
    assert status.last_disarm_cause == "fault"
    wait_until(
        lambda: _sample(daemon, "corticast_daemon_faults_total", stage=stage) == 1,
        30,
        "the fault counted",
    )
    readiness = daemon.readiness()
    assert not readiness.ready
    assert any(reason.startswith(problem) for reason in readiness.reasons), readiness
    with pytest.raises(DaemonStateError, match=problem):
        daemon.arm()
    release.set()
    wait_until(lambda: daemon.readiness().ready, 30, "ready again", explain=daemon.readiness)
    assert not daemon.bridge.armed  # arming again is the operator's
    assert _sample(daemon, "corticast_daemon_faults_total", stage=stage) == 1


def test_a_predictor_stuck_in_an_inference_while_armed_disarms_and_is_not_ready_till_it_returns(
    settings, source_id, monkeypatch
):
    """An inference that does not return (a GPU call) leaves the scheduler "running" with no
    prediction: it used to be noticed by nothing, the bridge armed and the daemon ready with
    the loop open. Past ``[loop] stall_after_s`` (2 s) it is a predictor fault."""
    loads = ModelLoads(monkeypatch)
    rig = Rig(source_id).start()
    emulator = Emulator(settings).start()
    try:
        with Daemon(settings) as daemon:
            arm_daemon_when_ready(daemon)
            predictor = loads.made[0]  # the model the scheduler runs
            predictor.hold.set()
            _stuck_while_armed(
                daemon, "predictor", "predictor stalled: no prediction for",
                predictor.inside, predictor.release,
            )  # fmt: skip
    finally:
        for made in loads.made:
            made.release.set()
        rig.kill()
        emulator.stop()


def test_a_wave_stage_stuck_on_a_prediction_while_armed_disarms_and_is_not_ready_till_it_returns(
    settings, source_id, monkeypatch
):
    """The wave stage held inside its decision (the real one, once let go): the scheduler
    runs on, the wave stage takes nothing up, and past ``[loop] stall_after_s`` it is a
    ``waves`` fault."""
    hold, inside, release = threading.Event(), threading.Event(), threading.Event()
    decide = ClosedLoop._decide

    def held(self, prediction) -> None:
        if hold.is_set():
            inside.set()
            release.wait(GATE_S)
        decide(self, prediction)

    monkeypatch.setattr(ClosedLoop, "_decide", held)
    rig = Rig(source_id).start()
    emulator = Emulator(settings).start()
    try:
        with Daemon(settings) as daemon:
            arm_daemon_when_ready(daemon)
            hold.set()
            _stuck_while_armed(
                daemon, "waves", "wave stage stalled: no decision for", inside, release
            )
    finally:
        release.set()
        rig.kill()
        emulator.stop()


def _status_every_round(settings: Settings) -> Settings:
    """``settings`` with the ``status`` topic published at every supervisor round (1 s apart by
    default), so that a few rounds show whether rendering its document is held up too."""
    every = settings.loop.supervise_every_s
    return settings.model_copy(
        update={"zmq": settings.zmq.model_copy(update={"status_period_s": every})}
    )


def _records_held(
    monkeypatch: pytest.MonkeyPatch, event: str
) -> tuple[threading.Event, threading.Event, threading.Event]:
    """Fault injection: once the first event returned is set, the audit log's next write of an
    ``event`` record (a request's ``transmit``, a fault's ``disarm``) sets the second and waits
    (under the log's lock, the bridge's exchange lock held by its writer) for the third, as a
    disk whose fsync hangs."""
    hold, inside, release = threading.Event(), threading.Event(), threading.Event()
    write = AuditLog._write
    marker = f'"event":"{event}"'.encode()

    def held(self, data: bytes, *, durable: bool) -> None:
        if hold.is_set() and marker in data:
            inside.set()
            release.wait(GATE_S)
        write(self, data, durable=durable)

    monkeypatch.setattr(AuditLog, "_write", held)
    return hold, inside, release


def _armed_until_a_train_is_held(daemon: Daemon, inside: threading.Event, tries: int = 5) -> None:
    """Arm, and again after a fault a loaded machine causes by itself (:data:`LOAD_FAULTS`),
    until a train admitted has reached the held write (``inside``)."""
    for _ in range(tries):
        arm_daemon_when_ready(daemon)
        wait_until(
            lambda: inside.is_set() or not daemon.bridge.armed, 60, "a train admitted, or a disarm"
        )
        if inside.is_set():
            return
        reason = daemon.bridge.status().last_disarm_reason or ""
        assert any(fault in reason for fault in LOAD_FAULTS), reason
    raise AssertionError(f"disarmed by load faults {tries} times before a train was admitted")


@dataclasses.dataclass(frozen=True)
class _HeldTrain:
    """A daemon armed with a train held in its transmit record's write (:func:`_a_train_held`)."""

    settings: Settings
    daemon: Daemon
    emulator: Emulator
    release: threading.Event
    delivered: int
    """The pulses the device had delivered when the train was held: the held one adds none."""


@contextlib.contextmanager
def _a_train_held(tmp_path, exported, source_id, monkeypatch) -> Iterator[_HeldTrain]:
    """A real daemon, rig and emulator, armed, the wave stage's request held in its transmit
    record's write (a disk whose fsync hangs: the bridge's exchange lock and the log's lock
    held) until ``release`` is set, which leaving the block does in any case."""
    settings = _status_every_round(
        _requesting_settings(tmp_path, exported, source_id, scored_before_proven=20)
    )
    hold, inside, release = _records_held(monkeypatch, "transmit")
    rig = Rig(source_id).start()
    emulator = Emulator(settings).start()
    try:
        with Daemon(settings) as daemon:
            try:
                hold.set()
                _armed_until_a_train_is_held(daemon, inside)
                yield _HeldTrain(settings, daemon, emulator, release, len(emulator.device.pulses))
            finally:
                release.set()
    finally:
        release.set()
        rig.kill()
        emulator.stop()


def test_a_wave_stage_stuck_in_a_transmit_record_s_fsync_disarms_without_stopping_the_supervisor(
    tmp_path, exported, source_id, monkeypatch, notify, udp_write_timeout
):
    """Armed, the wave stage's request held inside the bridge, in the audit log's write of its
    transmit record (a disk whose fsync hangs), with the bridge's exchange lock and the log's
    own lock held: past the stall limit it is a ``waves`` fault naming that write. The
    supervisor disarms without waiting for that lock, so it goes on round (the watchdog pinged,
    the daemon up and not ready, naming it); the train held never leaves, and the device is
    told to disarm once the write returns. The supervisor used to wait in its disarm for the
    lock, its rounds and pings stopped, and only systemd's watchdog ended the daemon."""
    with _a_train_held(tmp_path, exported, source_id, monkeypatch) as held:
        daemon, emulator = held.daemon, held.emulator
        problem = "wave stage stalled: no decision for"
        wait_until(lambda: not daemon.bridge.armed, 20, "the disarm")
        reason = daemon.bridge.status().last_disarm_reason or ""
        if problem not in reason and any(fault in reason for fault in LOAD_FAULTS):
            # A stall is a fault only while armed: this one can no longer be seen.
            pytest.skip(f"disarmed by a load fault before the stall: {reason}")
        wait_until(
            lambda: _sample(daemon, "corticast_daemon_faults_total", stage="waves") == 1,
            30,
            "the fault counted",
        )
        pings = notify.count("WATCHDOG=1")  # each round renders the status topic's document
        wait_until(lambda: notify.count("WATCHDOG=1") > pings + 10, 30, "more supervisor rounds")
        assert not held.release.is_set() and daemon.loop.running  # still stuck
        status = daemon.bridge.status()
        assert f"waves fault: {problem}" in (status.last_disarm_reason or "")
        assert "audit log" in status.last_disarm_reason, status
        readiness = daemon.readiness()
        assert not readiness.ready
        assert any(reason.startswith(problem) for reason in readiness.reasons), readiness
        with pytest.raises(DaemonStateError, match=problem):
            daemon.arm()
        held.release.set()
        wait_until(lambda: not emulator.device.armed, 30, "the device disarmed")
        wait_until(lambda: daemon.readiness().ready, 30, "ready again")
        assert not daemon.bridge.armed
        assert len(emulator.device.pulses) == held.delivered  # the train held never left
    [withdrawn] = [
        r
        for r in read_audit_log(held.settings.bridge.audit_log)
        if r["event"] == "decision" and r["outcome"] == "blocked" and r["sequence"] is not None
    ]
    # Withdrawn by whichever check meets it first once the write returns: its data aged past
    # the staleness limit during the hold, or the disarm's new arm generation.
    assert set(withdrawn["interlocks"]) <= {"stale_data", "armed"}, withdrawn


def test_a_model_slower_than_the_stall_limit_disarms_and_is_named_too_slow_not_stuck(
    tmp_path, exported, source_id, monkeypatch
):
    """The real model made slower than ``[loop] stall_after_s`` per window (0.5 s here; 1 s a
    window): armed, it is a ``predictor`` fault that disarms (it can pass no train: its data
    are older than the staleness limit when its prediction comes), and the daemon is not
    ready, saying the model is too slow for the host, not stuck. Every window of such a model
    used to read as a hang ("stuck in one window"), sending the operator after a call that
    does not return instead of a faster way of serving the model."""
    _, window, step = exported
    settings = loop_settings(tmp_path, window, step, source_id, loop={"stall_after_s": 0.5})
    loads = ModelLoads(monkeypatch)
    rig = Rig(source_id).start()
    emulator = Emulator(settings).start()
    try:
        with Daemon(settings) as daemon:
            arm_daemon_when_ready(daemon)
            loads.made[0].takes_s = 1.0
            wait_until(lambda: not daemon.bridge.armed, 30, "the disarm")
            reason = daemon.bridge.status().last_disarm_reason or ""
            # Or a fault a loaded machine causes by itself first, which disarms as well.
            assert any(f in reason for f in ("predictor fault: predictor stalled", *LOAD_FAULTS))

            def named_too_slow() -> bool:
                return any(
                    "too slow for this host, not stuck" in r for r in daemon.readiness().reasons
                )

            wait_until(named_too_slow, 30, "the model named too slow", explain=daemon.readiness)
            assert daemon.scheduler.running
            assert daemon.scheduler.last_window_s > 0.5
    finally:
        for made in loads.made:
            made.takes_s = 0.0
        rig.kill()
        emulator.stop()


def test_an_operator_s_disarm_answers_while_a_request_is_stuck_in_the_audit_log(
    tmp_path, exported, source_id, monkeypatch, udp_write_timeout
):
    """The operator disarms while the wave stage's request is held in its transmit record's
    write: the disarm answers at once, the host disarmed, saying the device has not confirmed
    yet; the device is told, and the disarm recorded, once the write returns, and the train
    held never leaves. It used to wait for the request (``/control/disarm`` gave no answer,
    each retry taking another of the threads kept for disarms)."""
    with _a_train_held(tmp_path, exported, source_id, monkeypatch) as held:
        disarm = Call(lambda: held.daemon.disarm("operator stop"))
        answered = disarm.done.wait(30)
        assert not held.release.is_set()
        held.release.set()
        assert answered, "the operator's disarm waited for the request held"
        assert disarm.error is None
        assert not disarm.result.device_confirmed
        assert not held.daemon.bridge.armed
        wait_until(lambda: not held.emulator.device.armed, 30, "the device disarmed")
        assert len(held.emulator.device.pulses) == held.delivered
    reasons = [r.get("reason") for r in read_audit_log(held.settings.bridge.audit_log)]
    assert "operator stop" in reasons


def test_a_stop_returns_while_a_request_is_stuck_in_the_audit_log(
    tmp_path, exported, source_id, monkeypatch, udp_write_timeout
):
    """SIGTERM while the wave stage's request is held in its transmit record's write (a disk
    whose fsync hangs): the signal's disarm (:meth:`Daemon.begin_stop`) and the stop itself
    return, the host disarmed and the train held never sent; the device is told, and the
    bridge closed, once the write returns. Both used to wait for the request, so the daemon
    hung until systemd's SIGKILL (from a terminal, for ever: a second Ctrl-C changed nothing)."""
    _stuck_thread_waited_briefly(monkeypatch, ClosedLoop)  # its request is held
    with _a_train_held(tmp_path, exported, source_id, monkeypatch) as held:
        bridge = held.daemon.bridge
        signalled = Call(held.daemon.begin_stop)
        disarmed = signalled.done.wait(30)
        stopping = Call(held.daemon.stop)
        stopped = stopping.done.wait(30)
        assert not held.release.is_set()
        held.release.set()
        assert disarmed, "the stop signal's disarm waited for the request held"
        assert stopped, "the daemon's stop waited for the request held"
        assert signalled.error is None and stopping.error is None
        assert not bridge.armed
        wait_until(lambda: not held.emulator.device.armed, 30, "the device disarmed")
        log = held.settings.bridge.audit_log
        wait_until(lambda: read_audit_log(log)[-1]["event"] == "close", 30, "the close")
        assert len(held.emulator.device.pulses) == held.delivered


def test_a_failed_bridge_whose_close_is_stuck_in_an_audit_log_write_is_not_waited_for(
    settings, monkeypatch, notify, caplog, udp_write_timeout
):
    """The bridge's heartbeat thread dies, and the supervisor's close of it is held in the
    audit log's write of its close record (a disk whose fsync hangs), the bridge's exchange
    lock and the log's lock held, as a request stuck in its transmit record holds them: the
    supervisor closes the bridge once, bounded, and goes on round (the watchdog pinged), the
    daemon up and not ready, naming the old bridge as still closing, stuck in the audit log;
    once the write returns the new bridge is opened, not before (it would be refused: "audit
    log in use by another bridge"). The supervisor's close used to wait for the write: its
    rounds and pings stopped, and systemd's watchdog would have restarted the daemon."""
    settings = _status_every_round(settings)
    hold, inside, release = _records_held(monkeypatch, "close")
    emulator = Emulator(settings).start()
    try:
        with Daemon(settings) as daemon:
            try:
                wait_until(lambda: daemon.bridge is not None, 30, "the bridge")
                failed = daemon.bridge
                wait_until(lambda: failed.status().connected, 30, "the device to answer")
                closes: list[tuple] = []
                close = failed.close_without_waiting

                def counted_close(*args) -> None:
                    closes.append(args)
                    close(*args)

                monkeypatch.setattr(failed, "close_without_waiting", counted_close)
                hold.set()
                _kill_heartbeat(failed)
                assert inside.wait(30), "the failed bridge's close record was never written"
                pings = notify.count("WATCHDOG=1")  # each round renders the status document
                wait_until(
                    lambda: notify.count("WATCHDOG=1") > pings + 10, 30, "more supervisor rounds"
                )
                assert not release.is_set() and not failed.released  # still stuck
                assert daemon.bridge is failed and not failed.armed
                assert daemon.supervisor.fault_counts() == {"bridge": 1}
                assert len(closes) == 1  # closed once, not again every round
                still = (
                    "stimulator bridge failed: RuntimeError: simulated heartbeat failure; not "
                    "reopened yet: BridgeStillClosingError: the old bridge is still closing: "
                    "stuck in an audit log write"
                )
                wait_until(
                    lambda: any(r.startswith(still) for r in daemon.readiness().reasons),
                    30,
                    "the old bridge named as still closing",
                    explain=daemon.readiness,
                )
                with pytest.raises(DaemonStateError, match="the old bridge is still closing"):
                    daemon.arm()
            finally:
                release.set()
            wait_until(lambda: daemon.bridge not in (failed, None), 30, "the bridge reopened")
            assert failed.released
            reopened = daemon.bridge
            wait_until(lambda: reopened.status().connected, 30, "the device to answer again")
            assert len(closes) == 1
            assert "in use by another bridge" not in caplog.text
    finally:
        release.set()
        emulator.stop()


@contextlib.contextmanager
def _a_failed_bridge_held(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    record: str,
    before_failing: Callable[[StimulationBridge], object] = lambda bridge: None,
) -> Iterator[tuple[Daemon, StimulationBridge, threading.Event]]:
    """A real daemon and emulator whose bridge's heartbeat thread has died, the supervisor's
    handling of it held in the audit log's write of a ``record`` record (the old bridge's
    ``close``, the new one's ``start``) until the event yielded is set, which leaving the block
    does in any case. ``before_failing`` is given the bridge before its heartbeat dies. Yields
    the daemon, the failed bridge and that event."""
    hold, inside, release = _records_held(monkeypatch, record)
    emulator = Emulator(settings).start()
    try:
        with Daemon(settings) as daemon:
            try:
                wait_until(lambda: daemon.bridge is not None, 30, "the bridge")
                failed = daemon.bridge
                wait_until(lambda: failed.status().connected, 30, "the device to answer")
                before_failing(failed)
                hold.set()
                _kill_heartbeat(failed)
                assert inside.wait(30), f"the {record} record's write was never reached"
                yield daemon, failed, release
            finally:
                release.set()
    finally:
        release.set()
        emulator.stop()


def test_a_failed_bridge_s_close_at_the_longest_ack_deadline_holds_up_no_supervisor_round(
    tmp_path, exported, source_id, monkeypatch, notify
):
    """At the longest ACK deadline (5 s) a close with a silent device may take 19 s, past the
    unit's ``WatchdogSec=10s``. The bridge's heartbeat thread dies and the supervisor's close
    of it is held in its close record's write: the supervisor goes on round (its watchdog
    pinged, its other steps run), the bridge step coming round too, not failing, well within
    that time; the new bridge is opened once the write returns. The supervisor used to wait
    for the close, bounded, on its own thread: its rounds and pings stopped for those 19 s,
    after which the step failed, naming the close as stuck."""
    _, window, step = exported
    settings = loop_settings(tmp_path, window, step, source_id, bridge={"ack_timeout_s": 5.0})
    with _a_failed_bridge_held(settings, monkeypatch, "close") as (daemon, failed, release):
        pings = notify.count("WATCHDOG=1")
        wait_until(lambda: notify.count("WATCHDOG=1") > pings + 5, 30, "more supervisor rounds")
        assert not failed.released and daemon.bridge is failed  # still held
        assert "bridge" not in _steps_failing(daemon), _steps_failing(daemon)
        release.set()
        wait_until(lambda: daemon.bridge not in (failed, None), 30, "the bridge reopened")
        assert failed.released and not daemon.bridge.armed


def test_a_stop_while_a_failed_bridge_is_still_closing_waits_for_that_close_not_a_second(
    settings, monkeypatch, udp_write_timeout
):
    """The stop comes while the supervisor's close of a failed bridge is held in its close
    record's write: it waits (bounded) for that close, and starts no second one, which queued
    behind the first for the bridge's lock and added up to another close's bound (4.3 s by
    default) to the stop. The close finishes once the write returns."""
    before: set[threading.Thread] = set()
    with _a_failed_bridge_held(
        settings, monkeypatch, "close", lambda bridge: before.update(threading.enumerate())
    ) as (daemon, failed, release):
        stopping = Call(daemon.stop)
        stopped = stopping.done.wait(30)
        closes = [
            t
            for t in threading.enumerate()
            if t.name == "corticast-bridge-close" and t not in before
        ]
        release.set()
        assert stopped, "the stop waited for the close held"
        assert stopping.error is None
        assert len(closes) == 1, closes
        log = settings.bridge.audit_log
        wait_until(lambda: read_audit_log(log)[-1]["event"] == "close", 30, "the close")
        wait_until(lambda: failed.released, 30, "the old bridge released")


def test_a_failed_bridge_s_close_that_fails_once_held_up_is_a_bridge_step_failure_naming_it(
    settings, monkeypatch, caplog, udp_write_timeout
):
    """The supervisor's close of a failed bridge is held in its close record's write past a
    close's bound, then closing its audit log file fails (an I/O error): the failure is the
    bridge step's, logged at error naming the bridge and the cause, and the new bridge is
    opened all the same. The close's thread kept it for a caller that had stopped waiting,
    and no one heard of it."""
    close_file = AuditLog._close_file
    failing: list[AuditLog] = []

    def failed_close_file(self: AuditLog) -> None:
        close_file(self)
        if self in failing:
            raise OSError(5, "Input/output error (closing the audit log)")

    monkeypatch.setattr(AuditLog, "_close_file", failed_close_file)
    with _a_failed_bridge_held(
        settings, monkeypatch, "close", lambda bridge: failing.append(bridge._audit)
    ) as (daemon, failed, release):
        wait_until(lambda: "bridge" in _steps_failing(daemon), 30, "the close held up")
        release.set()
        wait_until(lambda: daemon.bridge not in (failed, None), 30, "the bridge reopened")
        link = f"udp 127.0.0.1:{settings.bridge.port}"

        def failure_logged() -> bool:
            return any(
                r.levelno == logging.ERROR
                and r.getMessage().startswith("supervisor: bridge failed")
                and link in r.getMessage()
                and "Input/output error (closing the audit log)" in r.getMessage()
                for r in caplog.records
            )

        wait_until(failure_logged, 30, "the close's failure logged as the bridge step's")


def test_a_new_bridge_whose_start_record_s_write_hangs_holds_up_no_supervisor_round(
    settings, monkeypatch, notify
):
    """The bridge's heartbeat thread dies, and the write of the new bridge's start record
    hangs (a disk whose fsync hangs): the supervisor goes on round (its watchdog pinged), the
    daemon not ready without a bridge, and the new bridge is in place once the write returns.
    The supervisor opened the new bridge on its own thread: its rounds and pings stopped for
    as long as the write hung, and systemd's watchdog would have restarted the daemon."""
    with _a_failed_bridge_held(settings, monkeypatch, "start") as (daemon, failed, release):
        pings = notify.count("WATCHDOG=1")
        wait_until(lambda: notify.count("WATCHDOG=1") > pings + 5, 30, "more supervisor rounds")
        assert daemon.bridge is None and not daemon.readiness().ready
        release.set()
        wait_until(lambda: daemon.bridge not in (failed, None), 30, "the bridge reopened")
        assert not daemon.bridge.armed


def test_a_stream_fault_s_round_ends_before_a_silent_device_s_disarm_answer_is_due(
    tmp_path, exported, source_id, notify, caplog
):
    """Armed at the longest ACK deadline (5 s), the stream goes stale and the device does not
    answer the supervisor's DISARM (a relay holds it, as a hung firmware or a lost datagram
    would): the supervisor goes on round while that DISARM still waits for its answer, and the
    device, answering once let go, is told and confirms on the bridge's own thread. The
    supervisor used to wait in its round for that answer, one exchange (6 s) per round with
    faults, most of systemd's ``WatchdogSec=10s``."""
    _, window, step = exported
    device_side = loop_settings(tmp_path, window, step, source_id, bridge={"ack_timeout_s": 5.0})
    rig = Rig(source_id).start()
    emulator = Emulator(device_side).start()
    relay = HoldingRelay(device_side.bridge.port)
    bridge = device_side.bridge.model_copy(update={"port": relay.port})
    try:
        with Daemon(device_side.model_copy(update={"bridge": bridge})) as daemon:
            arm_daemon_when_ready(daemon)
            relay.hold_next(MessageType.DISARM)
            rig.kill()
            relay.wait_held(30)
            reason = daemon.bridge.status().last_disarm_reason or ""
            if not reason.startswith("stream fault:") and any(f in reason for f in LOAD_FAULTS):
                pytest.skip(f"the DISARM held is a load fault's, not the supervisor's: {reason}")
            assert reason.startswith("stream fault: data stale or stream lost"), reason
            pings = notify.count("WATCHDOG=1")
            wait_until(lambda: notify.count("WATCHDOG=1") > pings + 1, 30, "the next rounds")
            unconfirmed = [r for r in caplog.records if "did not confirm DISARM" in r.getMessage()]
            assert not unconfirmed, "the rounds waited until the DISARM's answer was due"
            relay.release()
            wait_until(lambda: not emulator.device.armed, 30, "the device disarmed")
            wait_until(lambda: not _disarm_finishing(), 30, "the DISARM's answer")
            assert "did not confirm DISARM" not in caplog.text
    finally:
        rig.kill()
        relay.close()
        emulator.stop()


def _disarm_finishing() -> bool:
    """Whether a bridge's thread finishing disarms is still at it."""
    return any(t.name == "corticast-bridge-disarm" for t in threading.enumerate())


def test_an_ingestor_restart_whose_stream_does_not_answer_its_open_holds_up_no_round(
    settings, source_id, monkeypatch, notify
):
    """The ingest thread fails, and its restart finds the stream but the inlet's open does not
    return (an outlet that answers the resolver, not its inlet), then times out: the supervisor
    goes on round (the watchdog pinged), the ingestor down, the failed restart the ingest
    step's failure, the fault counted once, and the next restart reads the stream again. The
    supervisor restarted the ingestor on its own thread: its rounds and pings stopped for as
    long as the open took, up to three waits of ``[stream] resolve_timeout_s`` (5 s) for the
    inlet's description, clock offset and open."""
    hold, inside, release = threading.Event(), threading.Event(), threading.Event()
    pull, open_stream = Ingestor._pull, pylsl.StreamInlet.open_stream

    def failing_once(self: Ingestor) -> None:
        if hold.is_set() and not inside.is_set():
            raise RuntimeError("simulated ingest failure")
        pull(self)

    def held_open(self: pylsl.StreamInlet, timeout: float = pylsl.FOREVER) -> None:
        if hold.is_set():
            inside.set()
            release.wait(GATE_S)
            hold.clear()
            raise pylsl.util.TimeoutError("simulated: the outlet did not answer the inlet")
        open_stream(self, timeout)

    monkeypatch.setattr(Ingestor, "_pull", failing_once)
    monkeypatch.setattr(pylsl.StreamInlet, "open_stream", held_open)
    rig = Rig(source_id).start()
    try:
        with Daemon(settings) as daemon:
            wait_until(daemon.ingestor.is_fresh, 30, "the stream read")
            hold.set()
            assert inside.wait(30), "the restart's open was never reached"
            pings = notify.count("WATCHDOG=1")
            wait_until(lambda: notify.count("WATCHDOG=1") > pings + 5, 30, "more supervisor rounds")
            assert not daemon.ingestor.running and not daemon.readiness().ready
            release.set()
            wait_until(daemon.ingestor.is_fresh, 30, "the stream read again")
            assert _sample(daemon, "corticast_daemon_faults_total", stage="ingest") == 1
            failures = "corticast_daemon_supervisor_step_failures_total"
            assert _sample(daemon, failures, step="ingest") == 1
    finally:
        release.set()
        rig.kill()
