"""What happens to each prediction: publish it, score it, estimate its waves, decide, request.

Two stages, so the slow part never delays the next inference. In the scheduler's thread,
right after inference: the prediction to serve is made (the model blended with persistence and
the live AR baseline per horizon, ``service.loop.blend``), goes out on ZeroMQ with its blend
weights, and is queued for live scoring beside the model's own. The AR forecast needs only the
input, so it is started just before inference (:meth:`ClosedLoop.ahead`, the scheduler's
``before_inference``) on a thread of its own and runs beside the model, which holds no GIL:
it is ready when the prediction is; one that is not is never waited for (that prediction is
served without the AR, which is still fitted on it once done). Everything after works on the
served prediction. On this worker's own thread: the wave estimate over the measured past plus
the predicted future, the policy's decision and, when it asks, the firmware bridge's verdict
(which applies every interlock); both are published and counted. After a train the
stimulator may have delivered, the ring blanks the frames its artefact may be on (from the
moment its STIMULATE leaves, as they arrive, to ``[loop] blank_after_train_ms`` after the
train: ``RingBuffer.blank``), and the train goes out as an LSL stimulation marker. The wave
stage always takes the newest prediction (a one-slot mailbox, never a queue): one it had no
time for is superseded and counted, exactly as the scheduler skips windows.

What the interlocks are told (``LoopHealth``) is about the data the decision rests on, not the
stream: the age is that of the prediction's newest input frame (``Prediction.available_at``,
on the local clock) at the moment of the request, so every lag after it (inference, the
mailbox, a starved wave stage, the estimate itself) counts; the missing frames are those of
every measured frame the decision used, the wave estimate's window and the predictor's input,
whichever reaches further back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, get_args

import numpy as np
import pylsl
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from firmware_bridge import (
    BridgeClosedError,
    Decision,
    LoopHealth,
    Outcome,
    StimulationBridge,
    StimulationRequest,
)
from service.core.live_channels import BLOCK_NOISY_FACTOR, noisy_channels
from service.core.realtime_rest import Rests
from service.core.stamp_lead import MAX_STAMP_LEAD_S
from service.core.stimulation_markers import StimulationMarker
from service.core.worker import BackgroundWorker
from service.inference.scheduler import Prediction
from service.ingest.ring_buffer import RingBuffer, Window
from service.loop.blend import Blend
from service.loop.late_artefact import LateArtefactCheck
from service.loop.live_accuracy import LiveAccuracy
from service.loop.marker_outlet import MarkerOutlet
from service.loop.settings import LoopSettings
from service.policy.stimulation_policy import CHECKS, StimulationDecision, StimulationPolicy
from service.waves.baseline import Baseline, QuietBackground
from service.waves.estimator import PATTERNS, WaveEstimate, WaveEstimator
from service.waves.settings import MIN_PAST_FRAMES
from service.waves.summary import SUMMARY_FIELDS, wave_summary
from service.zmq_api.publisher import ZmqPublisher

_log = logging.getLogger("corticast.loop")

_MAY_HAVE_DELIVERED = ("sent", "failed")
"""Verdicts after which the stimulator may have delivered the train (``failed``: sent, with
no valid answer): its frames are blanked."""
_DECISION_AGE_BUCKETS = (
    2e-3, 3.6e-3, 5e-3, 7.5e-3, 10e-3, 15e-3, 20e-3, 30e-3, 40e-3, 50e-3, 75e-3, 0.1, 0.25,
)  # fmt: skip
"""From a frame period to the default ``max_lead_ms``: the range in which the decision's age
eats into the lead window."""
WAVE_FIELDS = ("speed_mps", "direction_deg", "pgd", "amplitude_uv", "frequency_hz", "pattern")
"""Columns of the ``wave`` topic's payload, (frames, 6) float32, past then predicted frames."""


def wave_table(estimate: WaveEstimate) -> np.ndarray:
    """The ``wave`` topic's payload: :data:`WAVE_FIELDS` as float32 columns. A direction just
    under 180 degrees rounds to 180.0 in float32, outside the [-180, 180) the topic promises:
    it is sent as -180, the same direction."""
    table = np.stack([getattr(estimate, name).astype(np.float32) for name in WAVE_FIELDS], axis=1)
    direction = table[:, WAVE_FIELDS.index("direction_deg")]
    direction[direction >= 180.0] -= 360.0
    return np.ascontiguousarray(table)


class ClosedLoop(BackgroundWorker):
    """The per-prediction pipeline (see the module docstring); start it before the scheduler.

    Parameters
    ----------
    ring
        The ingestor's ring buffer (measured frames for the wave estimate and the scoring).
    estimator, policy
        Wave estimator and stimulation policy; ``policy`` may be replaced between predictions.
    bridge_ref
        Returns the current firmware bridge (the daemon replaces it after a link loss).
    publisher
        The ZeroMQ publisher.
    accuracy
        Live scoring of predictions against the frames that follow.
    blend
        Makes the prediction served from the model's; None serves the model's as it is and
        publishes no weights.
    sample_rate_hz
        Nominal rate (frame times of the predicted frames).
    model_healthy
        Whether the model may be trusted, read with every request for the interlocks: the
        one ``accuracy`` scores, so a request on a prediction of any other (one a swap or a
        reload replaced) is told unhealthy.
    registry
        Prometheus registry of the loop's instruments.
    clock
        The local clock the ingestor stamps data times on (``Prediction.available_at``); the
        data's age at a request is measured on it.
    idle_share
        Under a real-time policy (the process's under the unit's drop-in, or one given to
        the running thread), the least share of its time the wave stage leaves its CPU idle
        when predictions come faster than it decides on them (``[realtime] idle_share``):
        after a decision that finds a newer prediction waiting it rests
        (``service.core.realtime_rest``). 0: never.
    markers
        Where each train the stimulator may have delivered is also pushed as an LSL marker
        (``service.loop.marker_outlet``), stamped when its STIMULATE left; None: nowhere.
    late_after_frames
        Frames after a delivered train's decision at which its frames are checked for blanks
        that came later (``service.loop.late_artefact``; the live scores' settle; 0: at the
        next decision), and that the baseline's refreshes leave unread; None: never, and the
        baseline reads up to the decision's newest frame (no other tool's marker stream is
        read).
    """

    def __init__(
        self,
        ring: RingBuffer,
        estimator: WaveEstimator,
        policy: StimulationPolicy,
        bridge_ref: Callable[[], StimulationBridge | None],
        publisher: ZmqPublisher,
        accuracy: LiveAccuracy,
        settings: LoopSettings,
        *,
        sample_rate_hz: float,
        model_healthy: Callable[[], bool],
        registry: CollectorRegistry,
        clock: Callable[[], float] = pylsl.local_clock,
        blend: Blend | None = None,
        idle_share: float = 0.0,
        markers: MarkerOutlet | None = None,
        late_after_frames: int | None = None,
    ) -> None:
        super().__init__("corticast-waves", niceness=settings.wave_niceness)
        self.blend = blend
        self._ring = ring
        self._estimator = estimator
        self.policy = policy
        self._bridge_ref = bridge_ref
        self._publisher = publisher
        self._accuracy = accuracy
        self._rate = sample_rate_hz
        self._clock = clock
        self._model_healthy = model_healthy
        self._blank_after_train_s = settings.blank_after_train_ms / 1000
        self._markers = markers
        self._all_live = np.ones(ring.grid.shape, dtype=np.bool_)
        self._baseline = Baseline(
            ring,
            estimator,
            sample_rate_hz=sample_rate_hz,
            window_s=settings.robust_sd_seconds,
            every_s=settings.robust_sd_every_s,
            history_s=settings.baseline_history_s,
            settle_frames=late_after_frames or 0,
        )
        self.latest_decision: dict[str, Any] | None = None
        self.latest_wave: dict[str, float] | None = None
        self.recent_latency = deque(maxlen=2000)
        self.recent_decision_age = deque(maxlen=2000)
        """The data's age (s) at each recent policy decision: what the lead window is judged
        on, so the first thing to read when decisions stop at ``lead_time``."""
        self._metrics = _LoopMetrics(registry)
        self._late_artefact = LateArtefactCheck(ring, late_after_frames, registry)
        self._mailbox: Prediction | None = None
        self._mailbox_lock = threading.Lock()
        self._delivered = threading.Event()
        self.superseded = 0
        self._rests = Rests(idle_share, self._metrics.rested)
        self.progressed_at = time.monotonic()
        """Monotonic time the thread last came round its loop: between two predictions, and
        every 50 ms while it waits for the next; its age is how long it has been on one
        (``service.daemon.stalls``). Written without a lock: rebinding one attribute to a new
        float is a single store under the GIL, so another thread reads the old value or the
        new one, never half of either."""
        # AR forecasts started before inference, by input slot; scheduler thread only.
        self._ar_pool: ThreadPoolExecutor | None = None
        self._ar_started: dict[int, Future[np.ndarray | None]] = {}

    @property
    def trains_decided_on_late_artefact(self) -> int:
        """Delivered trains whose frames were blanked only after the decision
        (``service.loop.late_artefact``)."""
        return self._late_artefact.trains

    @property
    def dead_electrodes(self) -> tuple[tuple[int, int], ...]:
        """Electrodes (row, col) the wave estimate leaves out: found dead (flat: a broken
        contact, or one whose NaNs the ingestor holds) at the baseline's latest refresh."""
        return self._baseline.dead_electrodes

    @property
    def noisy_electrodes(self) -> tuple[tuple[int, int], ...]:
        """Electrodes (row, col) the wave estimate leaves out: found noisy (loud and unlike
        their neighbours: a contact picking up noise) at the baseline's latest refresh."""
        return self._baseline.noisy_electrodes

    @property
    def rested_s(self) -> float:
        """Time the stage has rested after decisions that found a newer one waiting
        (``idle_share``)."""
        return self._rests.total_s

    def ahead(self, past: np.ndarray, input_seq: int, past_times: np.ndarray | None = None) -> None:
        """The scheduler's ``before_inference``: start the AR forecast of ``past`` (the
        window about to be fed, at ``past_times`` under ``irregular``) on the loop's AR thread,
        to run beside the model. Without that thread (a loop neither started nor given one by
        :meth:`open_ar_thread`) nothing is started, and the forecast is computed when the
        prediction is served."""
        if self._ar_pool is None or self._accuracy.ar is None:
            return
        self._ar_started[input_seq] = self._ar_pool.submit(
            self._accuracy.ar_forecast, past, past_times
        )

    def open_ar_thread(self) -> None:
        """Start the AR thread now, in the calling thread, if the blend uses the AR and there
        is none; :meth:`stop` ends it. :meth:`start` calls it; a driver of :meth:`process`
        that wants forecasts started ahead to run beside it calls it itself.

        Never made by the scheduler's first call: it would inherit that thread's real-time
        policy and pinned CPUs, and wait behind every inference on the same CPU instead of
        running beside it."""
        if self.blend is not None and self.blend.wants_ar and self._ar_pool is None:
            self._ar_pool = _ar_thread()

    def _prepare(self) -> None:
        self.progressed_at = time.monotonic()  # a restart is not on a prediction
        self.open_ar_thread()

    def handle(self, prediction: Prediction) -> None:
        """The scheduler thread's part: serve, publish, score, and hand the served prediction
        on to the wave stage."""
        served = self._publish_and_score(prediction)
        with self._mailbox_lock:
            if self._mailbox is not None:
                self.superseded += 1
                self._metrics.superseded.inc()
            self._mailbox = served
        self._delivered.set()

    def process(self, prediction: Prediction) -> None:
        """Both stages, one after the other, in the caller's thread: no mailbox, so nothing is
        superseded. For replays that drive the loop without threads (``bench.replay.fast``);
        never while the worker runs."""
        if self.running:
            raise RuntimeError("ClosedLoop.process() drives a stopped loop; call stop() first")
        self._decide(self._publish_and_score(prediction))

    def _publish_and_score(self, prediction: Prediction) -> Prediction:
        """Publish the prediction to serve and queue it, beside the model's, for scoring;
        returns it."""
        if self.blend is None:
            self._publisher.publish_prediction(prediction, prediction.predictor, self._rate)
            served, fit_ar = prediction, None
        else:
            ar, fit_ar = self._ar_for(prediction)
            served, shares = self.blend.serve(prediction, ar)
            self._publisher.publish_prediction(
                served, prediction.predictor, self._rate,
                blend_weights=shares.model, blend_ar_weights=shares.ar,
            )  # fmt: skip
        self.recent_latency.append((prediction.inference_s, prediction.age_s))
        self._accuracy.add(prediction, served.future, fit_ar)
        self._accuracy.update(self._ring)
        return served

    def _ar_for(
        self, prediction: Prediction
    ) -> tuple[np.ndarray | None, np.ndarray | Future[np.ndarray | None] | None]:
        """The AR forecast to serve beside ``prediction``, and the one to fit the blend on:
        the same, or, where the one started ahead is still running, nothing to serve (it is
        never waited for) and that one to fit on once done. Computed here when none was
        started (a replay, or the AR was fitted during the inference)."""
        assert self.blend is not None
        if not self.blend.wants_ar:
            return None, None
        started = self._ar_started.pop(prediction.input_seq, None)
        for seq in [s for s in self._ar_started if s < prediction.input_seq]:
            del self._ar_started[seq]  # started for a window that was refused or failed
        if started is None:
            ar = self._accuracy.ar_forecast(prediction.past, prediction.past_times)
            return ar, ar
        if not started.done():
            return None, started
        return started.result(), started.result()

    def _release(self) -> None:
        # The trains delivered too recently to have been checked yet: none will be later.
        self._late_artefact.check(unsettled_too=True)
        # Forecasts not begun are dropped; one running (well under a millisecond) finishes.
        if self._ar_pool is not None:
            self._ar_pool.shutdown(wait=True, cancel_futures=True)
            self._ar_pool = None
        self._ar_started.clear()

    def _work(self) -> None:
        while not self._stop_requested.is_set():
            self.progressed_at = time.monotonic()
            if not self._delivered.wait(0.05):
                continue
            with self._mailbox_lock:
                prediction, self._mailbox = self._mailbox, None
                self._delivered.clear()
            if prediction is None:
                continue
            began = time.thread_time()
            self._decide(prediction)
            if self._delivered.is_set():  # the next one is already waiting
                self._rests.after(began, self._stop_requested)

    def _decide(self, prediction: Prediction) -> None:
        """The wave stage: estimate, decide, request, publish."""
        self._late_artefact.check()
        measured = self._measured(prediction)
        if measured is None:
            return
        background = self._baseline.at(prediction.input_seq)
        self._metrics.dead_channels.set(self._baseline.dead_channels)
        self._metrics.noisy_channels.set(self._baseline.noisy_channels)
        if self._baseline.too_few_live:
            return  # no wave estimate is trusted on so few live channels: nothing to decide on
        live = self._live(measured, background)
        self._accuracy.score_channels(live)
        if np.count_nonzero(live) < self._estimator.live_needed:
            return  # the same, for channels gone noisy since the baseline's refresh
        estimate = self._estimate(prediction, measured, live)
        if background is None:
            return
        # The lead window is judged on the lead left now, on data this old (the bridge
        # measures the age again, just before it judges the request).
        age = float(self._clock() - prediction.available_at)
        decision = self.policy.decide(estimate, background.robust_sd_uv, data_age_s=age)
        self._metrics.decision_age.observe(age)
        self.recent_decision_age.append(age)
        self._metrics.decisions.labels(decision.check).inc()
        if decision.request:
            missing = int(measured.valid.size - np.count_nonzero(measured.valid))
            health, verdict, blanked = self._request(
                decision, prediction, missing, int(measured.seq[0])
            )
            self._publish_stim(prediction, decision, health, verdict, blanked)

    def _measured(self, prediction: Prediction) -> Window | None:
        """Every measured frame the decision rests on, oldest first: the wave estimate's past
        frames up to the prediction's input and the predictor's own input, whichever reaches
        further back. None while the stream is shorter, or once the ring has overwritten them
        (the loop is far behind: no decision)."""
        past = self._estimator.settings.past_frames
        first = min(prediction.input_seq - past + 1, prediction.first_input_seq)
        if first < 0:
            return None
        count = prediction.input_seq - first + 1
        window = self._ring.read_since(first, max_frames=count)
        if len(window) != count or window.seq[0] != first:
            return None
        return window

    def _live(self, measured: Window, background: QuietBackground | None) -> np.ndarray:
        """The channels this decision's wave estimate uses: the baseline's live ones (all
        until there is a baseline), less those noisy in the block's own measured frames.

        A contact that goes bad is left out at once: the baseline's refresh sees it only once
        its robust spread over the refresh window (2 s) has risen, i.e. once over half that
        window is bad. On 48 frames the rule masked no clean channel of the generator mixture
        (965,302 channel-blocks of 20 sessions; ``service.core.live_channels``)."""
        live = self._all_live if background is None else background.live
        past = self._estimator.settings.past_frames
        frames = measured.frames[-past:][measured.valid[-past:]]
        if len(frames) < MIN_PAST_FRAMES:
            return live
        noisy = noisy_channels(frames, live, BLOCK_NOISY_FACTOR)
        if not noisy.any():
            return live
        self._metrics.noisy_blocks.inc()
        return live & ~noisy

    def _estimate(self, prediction: Prediction, measured: Window, live: np.ndarray) -> WaveEstimate:
        """Waves over the measured frames up to the prediction's input, then its future, on
        the ``live`` channels."""
        past = self._estimator.settings.past_frames
        frames = np.concatenate([measured.frames[-past:], prediction.future])
        estimate = self._estimator.estimate(frames, live)
        self._publish_wave(prediction, estimate)
        return estimate

    def _request(
        self,
        decision: StimulationDecision,
        prediction: Prediction,
        missing_frames: int,
        first_seq: int,
    ) -> tuple[LoopHealth, Decision | None, tuple[float, float] | None]:
        """Ask the bridge about a decision on the measured frames ``first_seq`` up to the
        prediction's input; returns the health it was told, its verdict (None: no bridge, or
        one closed since it was read) and the stamps between which frames were blanked for it
        (None: nothing delivered)."""
        request = decision.parameters.to_request(self._ring.grid.cols)
        bridge = self._bridge_ref()
        # The verdict is on the scores of the model scored now: a swap or reload since this
        # prediction was made put another model's there, its verdict not this one's. Read
        # after the verdict, the check holds for it too: the scores move to a new model
        # before that model's first prediction (Daemon.swap_model) and never move back.
        healthy = bool(self._model_healthy()) and self._accuracy.scores(prediction.predictor)
        # Counted now, not when read: another tool's marker may have blanked them since.
        artefact_frames = self._ring.blanked_among(first_seq, prediction.input_seq)
        health = LoopHealth(
            # Measured last, just before the bridge judges it: every lag so far counts.
            newest_sample_age_s=float(self._clock() - prediction.available_at),
            missing_frames=missing_frames,
            model_healthy=healthy,
            artefact_frames=artefact_frames,
            input_seq=int(prediction.input_seq),
            input_timestamp=float(prediction.input_timestamp),
        )
        if bridge is None:
            return health, None, None
        sent_at: list[float] = []
        own_blanked: list[int] = []

        def open_blank() -> None:  # the bridge's on_send: the STIMULATE is about to leave
            self._check_stamped_on_the_lsl_clock()
            sent_at.append(self._clock())
            # Frames it rested on stamped after the sending (a source stamping a little
            # after arrival) are blanked by this train's own blank: no other tool's artefact.
            # Only those it blanks: one another tool's late marker blanked while the request
            # waited for the bridge is no part of it, and must still be found late.
            before = self._ring.blanked_held_among(first_seq, prediction.input_seq)[0]
            self._ring.blank(sent_at[0])
            after = self._ring.blanked_held_among(first_seq, prediction.input_seq)[0]
            own_blanked.append(after - before)

        try:
            verdict = bridge.request_stimulation(request, health, on_send=open_blank)
        except BridgeClosedError:
            # Closed since it was read (the supervisor replacing it after a fault, which it
            # reports; the daemon stopping): nothing was recorded or sent, as with no bridge.
            return health, None, None
        except BaseException:
            if sent_at:  # sent, no verdict: the device may have delivered it
                self._end_blank_unjudged(request, sent_at[0])
                # (own_blanked is empty where on_send raised after the sending was stamped)
                own = own_blanked[0] if own_blanked else 0
                self._late_artefact.delivered(
                    None, first_seq, prediction.input_seq, own_blanked=own
                )
            raise
        if not sent_at:
            return health, verdict, None
        blanked = self._end_blank(verdict, sent_at[0])
        if blanked is not None:  # it may have been delivered
            self._late_artefact.delivered(
                verdict.sequence, first_seq, prediction.input_seq, own_blanked=own_blanked[0]
            )
        return health, verdict, blanked

    def _check_stamped_on_the_lsl_clock(self) -> None:
        """Raise (in the bridge's ``on_send``: a fault, nothing sent) if the stream's newest
        frame was stamped after it arrived: its source stamps on a clock of its own, and a
        train's artefact, blanked by the frames' stamps from its sending on this clock, would
        be on frames stamped outside the blank, all measured as cortex."""
        newest = self._ring.latest(1)
        lead = float(newest.timestamps[0]) - newest.newest_arrival
        if lead > MAX_STAMP_LEAD_S:  # the ingestor's allowance: not ready beyond it
            raise RuntimeError(
                f"the stream's newest frame is stamped {lead:.3f} s after it arrived: its "
                f"source does not stamp on the LSL clock, so the frames a train's artefact "
                f"would be on cannot be blanked by their stamps; nothing sent"
            )

    def _end_blank_unjudged(self, request: StimulationRequest, sent: float) -> None:
        """End the blanking opened at ``sent`` for a request the bridge raised on after its
        STIMULATE left (it has disarmed): as for a train the device may have delivered, to
        ``[loop] blank_after_train_ms`` after it, with a marker of it (``failed``: no verdict
        to number it), so that a recording says where its artefact may be. Left open, the
        blank would cover every frame to come, and the stream would look dead to every stage
        until the daemon restarts."""
        end = self._end_blank_after_train(sent, request.train_duration_ms)
        if self._markers is not None:
            marker = _marker(request, end - sent, outcome="failed")
            self._markers.push(marker, sent)
        _log.error(
            "a request raised after its STIMULATE left: frames stamped from its sending to "
            "%.0f ms from now blanked as the artefact of a train that may have been delivered",
            1e3 * (end - self._clock()),
        )

    def _end_blank(self, verdict: Decision, sent: float) -> tuple[float, float] | None:
        """End the blanking opened when the STIMULATE left at ``sent``: every frame stamped
        since then was blanked as it arrived. A train the stimulator may have delivered keeps
        it to ``[loop] blank_after_train_ms`` after the train's end, timed from the verdict
        (the train starts no later than the device's answer), and goes out as a marker;
        otherwise it ends now (the few frames of the wait stay blanked). Returns the interval
        blanked for a delivered train, None otherwise."""
        if verdict.outcome not in _MAY_HAVE_DELIVERED:
            self._ring.end_blank(sent, self._clock())
            return None
        end = self._end_blank_after_train(sent, verdict.request.train_duration_ms)
        if self._markers is not None:
            marker = _marker(
                verdict.request, end - sent, verdict.outcome, verdict.request_id, verdict.sequence
            )
            self._markers.push(marker, sent)
        _log.info(
            "train #%s (%s): frames stamped from its sending to %.0f ms from now blanked as "
            "stimulation artefact",
            verdict.sequence, verdict.outcome, 1e3 * (end - self._clock()),
        )  # fmt: skip
        return sent, end

    def _end_blank_after_train(self, sent: float, train_duration_ms: int) -> float:
        """End the blank opened at ``sent`` where a train starting now (the device starts it no
        later than its answer) and ``[loop] blank_after_train_ms`` after it end; returns that
        end."""
        end = self._clock() + train_duration_ms / 1000 + self._blank_after_train_s
        self._ring.end_blank(sent, end)
        return end

    def _publish_wave(self, prediction: Prediction, estimate: WaveEstimate) -> None:
        table = wave_table(estimate)
        header = {
            "input_seq": prediction.input_seq,
            "input_timestamp": prediction.input_timestamp,
            "fields": list(WAVE_FIELDS),
            "patterns": list(PATTERNS),
            "n_predicted": estimate.n_predicted,
        }
        self._publisher.publish("wave", header, table)
        predicted = estimate.predicted
        summary = wave_summary(*(getattr(estimate, name)[predicted] for name in SUMMARY_FIELDS))
        self.latest_wave = summary
        for name, value in summary.items():
            self._metrics.wave.labels(name).set(value)

    def _publish_stim(
        self,
        prediction: Prediction,
        decision: StimulationDecision,
        health: LoopHealth,
        verdict: Decision | None,
        blanked: tuple[float, float] | None,
    ) -> None:
        age = health.newest_sample_age_s
        record = {
            "input_seq": prediction.input_seq,
            "policy": {
                "check": decision.check,
                "reason": decision.reason,
                "lead_time_s": decision.lead_time_s,
                # Lead time left once the data's age at the request is counted.
                "lead_time_left_s": None
                if decision.lead_time_s is None
                else decision.lead_time_s - age,
                "parameters": decision.parameters.model_dump(mode="json"),
            },
            "bridge": None if verdict is None else verdict.to_record(),
            # The frames stamped in this interval (local clock) are blanked as the train's
            # artefact: none measured; null where nothing was delivered.
            "blanked": None
            if blanked is None
            else {"from_timestamp": blanked[0], "to_timestamp": blanked[1]},
        }
        outcome = "no bridge" if verdict is None else str(verdict.outcome)
        self._metrics.stim.labels(outcome).inc()
        self.latest_decision = record
        self._publisher.publish("stim", record, None)
        _log.info("stimulation request at seq %d: %s", prediction.input_seq, outcome)


class _LoopMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.decisions = Counter(
            "corticast_policy_decisions",
            "Policy decisions by what decided them (ok = request)",
            ["check"],
            registry=registry,
        )
        for check in ("ok", "target", *CHECKS, "persistence"):  # series exist from the start
            self.decisions.labels(check)
        self.decision_age = Histogram(
            "corticast_decision_data_age_seconds",
            "Age of the newest measured frame when the policy decided on its prediction "
            "(inference and the wave stage included): the lead window is judged on what is "
            "left of the lead after it",
            buckets=_DECISION_AGE_BUCKETS,
            registry=registry,
        )
        self.stim = Counter(
            "corticast_loop_stimulation_requests",
            "Requests the policy made, by the bridge's outcome",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("no bridge", *get_args(Outcome)):
            self.stim.labels(outcome)
        self.wave = Gauge(
            "corticast_waves_predicted",
            "The newest wave estimate's predicted frames (service.waves.summary): median "
            "speed and mean direction of the frames that carry a wave, their count "
            "(wave_frames), median PGD and amplitude of all",
            ["quantity"],
            registry=registry,
        )
        self.superseded = Counter(
            "corticast_waves_superseded_predictions",
            "Predictions the wave stage skipped because a newer one arrived first",
            registry=registry,
        )
        self.rested = Counter(
            "corticast_waves_rested_seconds",
            "Time the wave stage, running under a real-time policy, left its CPU idle after "
            "decisions that found a newer prediction waiting ([realtime] idle_share)",
            registry=registry,
        )
        self.dead_channels = Gauge(
            "corticast_waves_dead_channels",
            "Channels masked as dead (flat) in the wave estimate",
            registry=registry,
        )
        self.noisy_channels = Gauge(
            "corticast_waves_noisy_channels",
            "Channels masked as noisy (loud and unlike their neighbours) in the wave estimate",
            registry=registry,
        )
        self.noisy_blocks = Counter(
            "corticast_waves_noisy_blocks",
            "Wave estimates that left out a channel noisy in their own measured frames, one "
            "the baseline's latest refresh kept (a contact gone bad since)",
            registry=registry,
        )


def _marker(
    request: StimulationRequest,
    blank_s: float,
    outcome: str,
    request_id: int | None = None,
    sequence: int | None = None,
) -> StimulationMarker:
    """The stimulation marker of a train the stimulator may have delivered (the bridge's
    number for its request and the device's for the train, where it gave a verdict)."""
    return StimulationMarker(
        request_id=request_id,
        sequence=sequence,
        outcome=outcome,
        blank_s=blank_s,
        channels=request.channels,
        amplitude_ua=request.amplitude_ua,
        phase_width_us=request.phase_width_us,
        frequency_hz=request.frequency_hz,
        train_duration_ms=request.train_duration_ms,
    )


def _ar_thread() -> ThreadPoolExecutor:
    """The loop's one AR thread, started now in the calling thread (a pool starts its thread
    at the first task), so it runs under the caller's scheduling policy and CPUs."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="corticast-ar-ahead")
    pool.submit(lambda: None).result()
    return pool
