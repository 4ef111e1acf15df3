"""``--fast``: the daemon's own stages, driven in-process as fast as the machine allows.

Per model, exactly what ``service.daemon.daemon`` wires, minus threads and sockets: a ring buffer
(written as the ingestor writes it, placeholders and all, a recorded train's frames blanked as
the daemon's ring blanked them), the scheduler with the configured
predictor backend, and the closed loop (publish, live scoring, wave estimate, policy, bridge).
Instead of waiting for frames, the replay writes the ring up to the frame that makes the next
window due (a gap's placeholders with the frame after them, as the ingestor writes them, so a
window due on one runs at that frame, as in the daemon) and runs that window at once
(``Scheduler.run_due``), then the loop's two stages in the same thread
(``ClosedLoop.process``): nothing is skipped for lack of time or superseded, so which windows
run does not depend on the machine's speed. The publisher is replaced by one that hands each message
to a :class:`~bench.replay.record.ReplayRecord` in the wire's own form.

Time: the bridge judges refractory periods and budgets on the session's clock (the time of
the newest frame written), so they mean what they would in a live run. The data's age at a
request is the prediction's own (frame written -> inference done, real compute time), the
same for every policy variant of a window: timing the wave stage too would charge the later
variants of a sweep for the earlier ones' work. The policy judges its lead window on the lead
left after that age, so a wave at the window's edge can be decided differently on a faster
machine, as on a faster rig.
The bridge is a dry run, armed from the start: every request is judged by every interlock and
nothing is sent.

Policy sweeps share one predictor and one wave estimate per window between variants: only
the policy and the bridge differ, so each variant costs a policy decision, not an inference.

Batched (the default, ``batch=True``): on ONNX Runtime CPU, window and stream mode, the
predictions are computed ahead in batches by a worker thread (``bench.replay._lookahead``),
each checked to be the call the scheduler makes, so they are the per-window replay's bitwise;
the loop's stages still run one window at a time, in order, and while the loop would wait for
the next batch it scores queued predictions for the report
(``PredictionScorer.score_in_caller``). A window's inference time (and so
its data age) is then its share of its batch's compute, in CPU time of the worker thread, which
a busy machine does not inflate. Other backends and modes, and graphs ``models.batch_graph``
cannot batch (one that fixes batch 1 in a shape), replay one window at a time.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pylsl
from prometheus_client import CollectorRegistry
from threadpoolctl import threadpool_limits

from bench.replay._audit_log import fresh_audit_log
from bench.replay._lookahead import LookaheadPredictor
from bench.replay._models import ModelChoice, timeline_stats
from bench.replay.record import ReplayRecord
from bench.replay.timeline import Timeline, ring_capacity, written_with
from firmware_bridge import BridgeSettings, StimulationBridge
from models.batch_graph import BatchGraphError
from service.config import PolicySettings, Settings
from service.inference.backends import predictor_from_settings
from service.inference.batch_runner import BATCHED_BACKEND, BATCHED_MODES, BatchRunner
from service.inference.predictor import Predictor, PredictorInfo, StreamSpec
from service.inference.scheduler import Prediction, Scheduler
from service.ingest.ring_buffer import RingBuffer
from service.loop.ar_baseline import SessionRefits
from service.loop.blend import Blend
from service.loop.closed_loop import ClosedLoop
from service.loop.live_accuracy import LiveAccuracy
from service.loop.model_health import ModelHealth
from service.loop.settings import LoopSettings
from service.policy.stimulation_policy import StimulationPolicy
from service.waves.estimator import WaveEstimate, WaveEstimator
from service.waves.settings import WaveSettings
from service.zmq_api.publisher import prediction_message
from service.zmq_api.wire import encode_header

DEFAULT_STRIDE = 32
"""Frames between predictions in ``--fast`` unless ``--stride`` says otherwise.

At 277.78 Hz, 20x real time leaves 0.18 ms per frame. A window costs the 2-core VM about
4.2 ms of batched inference (default model, stream mode, one thread: 16 step-graph rows, as
every window re-primes at this stride) and about as much of the loop's other stages (wave
estimate, live scores, policy) and the report's scoring, on the other core: about one window in
30 frames. 32 frames (115 ms) still sees every wave of a seizure several times (measured from
cold: 21.6-22.1x real time for a 10 min session, 19.9-21.5x for 120 s, 19.1-19.6x for 60 s;
README); ``--stride 1`` runs every window, as the daemon does on a GPU, at well under real time
on 2 CPU cores."""

_log = logging.getLogger("corticast.replay")

_CHATTY_LOGGERS = ("corticast.bridge", "corticast.loop")
"""Loggers that note every request, arm and disarm: the audit log and the report have them
all, and a replay makes thousands in seconds."""


class FastReplay:
    """Runs each model over the session; see the module docstring.

    Parameters
    ----------
    settings
        The daemon's configuration (model backend, scheduler, waves, loop, interlocks).
    stride
        Frames between predictions.
    policies
        Policy variants; the first is the configured one, the rest a sweep's.
    audit_dir
        Where each dry-run bridge writes its audit log.
    progress
        Called with the number of slots processed since the previous call.
    batch
        Compute the predictions ahead in batches where the backend allows (module docstring).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        stride: int,
        policies: Sequence[PolicySettings],
        audit_dir: Path,
        progress: Callable[[int], None] = lambda _: None,
        batch: bool = True,
    ) -> None:
        if not isinstance(stride, int) or stride < 1:
            raise ValueError(f"'stride' must be an int >= 1, got {stride!r}")
        if not policies:
            raise ValueError("'policies' must hold at least the configured policy")
        self.settings = settings
        self.stride = stride
        self.policies = list(policies)
        self.audit_dir = Path(audit_dir)
        self._progress = progress
        self.batch = batch
        rate = settings.stream.sample_rate_hz
        self.stream = StreamSpec(sample_rate_hz=rate)

    def run(self, timeline: Timeline, model: ModelChoice, record: ReplayRecord) -> None:
        """Replay ``timeline`` through ``model``'s loop into ``record``."""
        # BLAS on one thread as in the daemon: threads fighting the model's cost ms.
        with threadpool_limits(1), _quiet(_CHATTY_LOGGERS), ExitStack() as closing:
            # The model's worker starts first and computes while the daemon's predictor is
            # built (see bench.replay._lookahead).
            lookahead = (
                self._lookahead(timeline, model, while_waiting=record.scorer.score_queued)
                if self.batch
                else None
            )
            if lookahead is not None:
                closing.callback(lookahead.close)
            predictor = self._predictor(model)
            closing.callback(predictor.close)
            serving = self._serving(predictor, lookahead)
            if serving is lookahead:  # the loop scores while it would wait for the model
                record.scorer.score_in_caller()
            self._run(timeline, model, serving, record)
            # The scoring thread's last batches belong to the run (and to its time).
            record.scorer.wait()

    def _predictor(self, model: ModelChoice) -> Predictor:
        """The daemon's predictor for ``model``, cold: a batched replay reads only its info
        and normaliser, so warming it (50 runs) would only delay the loop; :meth:`_serving`
        warms one that runs."""
        return predictor_from_settings(
            self.settings.model, model.path, model.step_path, self.stream, warm=False
        )

    def _lookahead(
        self,
        timeline: Timeline,
        model: ModelChoice,
        *,
        while_waiting: Callable[[], bool] = lambda: False,
    ) -> LookaheadPredictor | None:
        """The configured model run ahead in batches, its worker started; None where the
        configuration cannot be batched exactly (another backend or mode, or a graph
        ``models.batch_graph`` refuses). With ``[model] backend = "auto"`` it is made before
        the backend is known: :meth:`_serving` drops it if the daemon would run another.
        ``while_waiting`` is the loop's other work (``LookaheadPredictor``)."""
        s = self.settings
        path = model.step_path if s.model.mode == "stream" else model.path
        if s.model.backend not in ("auto", BATCHED_BACKEND) or s.model.mode not in BATCHED_MODES:
            _log.info("batched inference reproduces %s only; %s (%s mode) replays one window "
                      "at a time", BATCHED_BACKEND, s.model.backend, s.model.mode)  # fmt: skip
            return None
        if path is None:  # refused, naming what is missing, as the predictor is built
            return None
        try:
            runner = BatchRunner(
                path, s.model.mode, self.stream, threads=s.model.threads,
                reprime_every_frames=s.model.reprime_every_frames,
            )  # fmt: skip
        except BatchGraphError as err:  # a graph the daemon runs, only not batched
            _log.warning("%s: replaying one window at a time", err)
            return None
        return LookaheadPredictor(
            runner,
            timeline,
            stream=self.stream,
            make_scheduler=lambda ring, shadow: self._scheduler(ring, shadow, lambda _: None),
            stats_feed=lambda shadow: _stats_feed(timeline, model, shadow),
            capacity=ring_capacity(s.ingest.ring_seconds, self.stream.sample_rate_hz),
            while_waiting=while_waiting,
        )

    def _serving(self, predictor: Predictor, lookahead: LookaheadPredictor | None) -> Predictor:
        """What the replay's scheduler calls: ``lookahead`` standing in for ``predictor``,
        or ``predictor`` itself, warmed, where there is no lookahead or it batches another
        graph than ``predictor`` runs (``auto`` chose a GPU backend)."""
        if lookahead is not None:
            try:
                lookahead.serve_as(predictor)
                return lookahead
            except ValueError as err:
                _log.info("%s: replaying one window at a time", err)
                lookahead.close()  # its worker stops; closing it again at the end is harmless
        predictor.warmup()
        return predictor

    def _scheduler(
        self, ring: RingBuffer, predictor: Predictor, on_prediction: Callable[[Prediction], None]
    ) -> Scheduler:
        """The daemon's scheduler as configured, on ``ring``, at the replay's stride."""
        s = self.settings
        return Scheduler(
            ring,
            predictor,
            on_prediction,
            stride=self.stride,
            past_frames=self.stream.past_frames,
            missing_frames=s.scheduler.missing_frames,
            max_missing_frames=s.scheduler.max_missing_frames,
            sample_rate_hz=self.stream.sample_rate_hz,
            registry=CollectorRegistry(),
        )

    def _run(
        self, timeline: Timeline, model: ModelChoice, predictor: Predictor, record: ReplayRecord
    ) -> None:
        s = self.settings
        rate = self.stream.sample_rate_hz
        ring = RingBuffer(ring_capacity(s.ingest.ring_seconds, rate), self.stream.grid)

        def session_clock() -> float:
            return float(timeline.times_s[max(ring.next_seq - 1, 0)])

        handed = {"at": float("nan")}

        def loop_clock() -> float:
            """Stopped at the hand-off of the prediction being decided on: the data's age at
            a request is the prediction's own (see the module docstring)."""
            return handed["at"]

        def fan_out(prediction: Prediction) -> None:
            if isinstance(predictor, LookaheadPredictor):
                prediction = _batched_timing(prediction, predictor.last_share_s)
            handed["at"] = prediction.handed_at
            if refits is not None:  # the AR the blend serves (the live AR scores are not replayed)
                accuracy = shared.accuracy
                refits.at(
                    prediction.input_seq, accuracy.ar is not None,
                    lambda: accuracy.refit_ar(ring, refits.history_frames),
                )  # fmt: skip
            for variant in variants:
                variant.loop.process(prediction)

        # Served as the daemon serves: the model blended with persistence, fitted on the
        # first variant's live scores.
        blend = Blend(s.loop, registry=CollectorRegistry())
        shared = _Shared(
            ring=ring,
            estimator=_SharedEstimator(
                WaveEstimator(s.waves, grid=self.stream.grid, sample_rate_hz=rate)
            ),
            accuracy=_FirstScores(
                *model.normalisation,
                registry=CollectorRegistry(),
                blend=blend,
                settle_frames=s.marker_settle_frames,
            ),
            blend=blend,
            record=record,
            settings=s,
            session_clock=session_clock,
            loop_clock=loop_clock,
            audit_prefix=self.audit_dir / f"audit-{model.name}",
        )
        refits = SessionRefits(s.loop, rate) if blend.wants_ar else None
        variants = [_Variant(index, policy, shared) for index, policy in enumerate(self.policies)]
        scheduler = self._scheduler(ring, predictor, fan_out)
        try:
            self._drive(timeline, ring, scheduler, _stats_feed(timeline, model, predictor))
        finally:
            for variant in variants:
                variant.close()
        record.counters.update(
            predictions=scheduler.predictions,
            skipped_windows=scheduler.skipped,
            refused_windows=scheduler.refused,
            superseded_predictions=0,
            held_values_not_scored=shared.accuracy.held_values_not_scored,
        )
        record.dead_electrodes = [list(cell) for cell in variants[0].loop.dead_electrodes]
        record.noisy_electrodes = [list(cell) for cell in variants[0].loop.noisy_electrodes]

    def _drive(
        self,
        timeline: Timeline,
        ring: RingBuffer,
        scheduler: Scheduler,
        feed_stats: Callable[[int], None],
    ) -> None:
        """Write up to each due frame, run that window; no waiting, nothing skipped."""
        frames, times, valid = timeline.frames, timeline.times_s, timeline.valid
        n, written = len(timeline), 0
        while (due := scheduler.next_due()) < n:
            stop = written_with(timeline, due)
            _blank_artefact(ring, timeline, written, stop)
            ring.append(
                frames[written:stop], times[written:stop], valid[written:stop],
                pylsl.local_clock(), held=_held(timeline, written, stop),
            )  # fmt: skip
            self._progress(stop - written)
            written = stop
            feed_stats(stop - 1)
            scheduler.run_due()
        self._progress(n - written)


def _held(timeline: Timeline, first: int, stop: int) -> np.ndarray | None:
    """The values of slots ``first``..``stop - 1`` the session held (NaN or infinite), marked
    in the ring as the ingestor marks them: the live scores the replay's health and blend are
    judged on leave them out of the truth (``service.loop.live_accuracy``), as the daemon's
    do. None where the session held none."""
    held = timeline.held_values
    return None if held is None else held[first:stop]


def _blank_artefact(ring: RingBuffer, timeline: Timeline, first: int, stop: int) -> None:
    """Blank in ``ring`` the slots ``first``..``stop - 1`` that ``timeline`` blanked as a
    train's artefact, as the daemon's ring blanks them (``RingBuffer.blank``): written as
    missing frames only, the live scores would score a prediction on them and the
    ``artefact`` interlock count them missing, where the daemon's leave out and refuse
    (``RingBuffer.blanked_among``). Called before the slots are written, as the daemon opens
    its train's blank before the train's frames arrive: the ring blanks them as it writes
    them, so no frame already written changes (``RingBuffer.rewrites``), which would start
    stream mode's state over here where the daemon carries it on, and where the batched
    lookahead's shadow ring (no blanks) does too."""
    blanked = timeline.blanked[first:stop]
    if not blanked.any():
        return
    edges = np.flatnonzero(np.diff(blanked.astype(np.int8), prepend=0, append=0))
    for start, end in edges.reshape(-1, 2) + first:  # each run [start, end)
        ring.blank(float(timeline.times_s[start]), float(timeline.times_s[end - 1]))


@dataclass(frozen=True)
class _Shared:
    """What every policy variant of one model's run shares."""

    ring: RingBuffer
    estimator: _SharedEstimator
    accuracy: _FirstScores
    blend: Blend
    record: ReplayRecord
    settings: Settings
    session_clock: Callable[[], float]
    loop_clock: Callable[[], float]
    audit_prefix: Path


class _Variant:
    """One policy variant's half of the loop: the closed loop and its dry-run bridge.

    The first variant (the configured policy) scores predictions live, as the daemon does, for
    the bridge's model-health interlock; the others see the same predictions, so they read
    its verdict instead of scoring each prediction again.
    """

    def __init__(self, index: int, policy: PolicySettings, shared: _Shared) -> None:
        settings = shared.settings
        rate = settings.stream.sample_rate_hz
        self.registry = CollectorRegistry()
        self._record = shared.record
        self._index = index
        suffix = "" if index == 0 else f"-sweep{index}"
        audit_log = fresh_audit_log(Path(f"{shared.audit_prefix}{suffix}.jsonl"))
        bridge_settings = BridgeSettings.model_validate(
            settings.bridge.model_dump() | {"dry_run": True, "audit_log": audit_log}
        )
        self.bridge = StimulationBridge(
            bridge_settings,
            settings.interlocks,
            registry=self.registry,
            clock=shared.session_clock,
            heartbeat_thread=False,
        ).start()
        self.bridge.arm()
        self.loop = ClosedLoop(
            shared.ring,
            shared.estimator,  # type: ignore[arg-type]  # a WaveEstimator with a one-entry memo
            StimulationPolicy(policy, grid=shared.ring.grid, sample_rate_hz=rate),
            lambda: self.bridge,
            _RecordingPublisher(shared.record, index),  # type: ignore[arg-type]
            shared.accuracy if index == 0 else _ScoredElsewhere(shared.accuracy),  # type: ignore[arg-type]
            settings.loop,
            sample_rate_hz=rate,
            model_healthy=lambda: _model_healthy(shared.accuracy, settings.loop),
            registry=self.registry,
            clock=shared.loop_clock,
            blend=shared.blend,
            # As the daemon's: its baseline reads no frame a marker may still blank.
            late_after_frames=settings.late_artefact_after_frames,
        )

    def close(self) -> None:
        """Close the bridge (flushing its audit log) and note the policy's decisions."""
        self.bridge.close()
        self._record.policy_checks[self._index] = {
            sample.labels["check"]: int(sample.value)
            for metric in self.registry.collect()
            if metric.name == "corticast_policy_decisions"
            for sample in metric.samples
            if sample.name.endswith("_total")
        }


class _RecordingPublisher:
    """Stands in for ``ZmqPublisher``: each message goes to the record, as the wire has it.

    Predictions and waves are the same for every policy variant, so only the first variant's
    are kept; stimulation requests are kept per variant.
    """

    def __init__(self, record: ReplayRecord, variant: int) -> None:
        self._record = record
        self._variant = variant

    def publish_prediction(
        self,
        prediction: Prediction,
        info: PredictorInfo,
        sample_rate_hz: float,
        *,
        blend_weights: np.ndarray | None = None,
        blend_ar_weights: np.ndarray | None = None,
    ) -> bool:
        if self._variant == 0:
            header, future = prediction_message(
                prediction, info, sample_rate_hz,
                blend_weights=blend_weights, blend_ar_weights=blend_ar_weights,
            )  # fmt: skip
            self._record.on_message("prediction", header, future)
        return True

    def publish(self, topic: str, header: dict[str, Any], payload: np.ndarray | None) -> bool:
        if topic == "stim":
            # Through the wire's JSON encoding: NaN -> null, numpy -> plain, as a subscriber sees.
            plain = json.loads(encode_header(header))
            self._record.on_message("stim", plain, None, variant=self._variant)
        elif self._variant == 0:
            self._record.on_message(topic, header, payload)
        return True


class _FirstScores(LiveAccuracy):
    """The first variant's live scores, which also remember the AR forecast they made last:
    every variant serves the same prediction, so the others take it instead of repeating it."""

    _last: tuple[np.ndarray, np.ndarray | None] | None = None

    def ar_forecast(
        self, past: np.ndarray, past_times: np.ndarray | None = None
    ) -> np.ndarray | None:
        forecast = super().ar_forecast(past, past_times)
        self._last = (past, forecast)
        return forecast

    def forecast_made_for(
        self, past: np.ndarray, past_times: np.ndarray | None = None
    ) -> np.ndarray | None:
        """The forecast of this very ``past`` (the same array) if it was the last one made."""
        if self._last is not None and self._last[0] is past:
            return self._last[1]
        return self.ar_forecast(past, past_times)


class _ScoredElsewhere:
    """Stands in for ``LiveAccuracy`` in the sweep's variants (the first variant scores); the
    AR forecast the blend serves is the first variant's, so every variant judges one served
    prediction."""

    def __init__(self, accuracy: _FirstScores) -> None:
        self._accuracy = accuracy

    def ar_forecast(
        self, past: np.ndarray, past_times: np.ndarray | None = None
    ) -> np.ndarray | None:
        return self._accuracy.forecast_made_for(past, past_times)

    def add(
        self,
        prediction: Prediction,
        served: np.ndarray | None = None,
        ar: np.ndarray | None = None,
    ) -> None:
        pass

    def update(self, ring: RingBuffer) -> int:
        return 0

    def score_channels(self, live: np.ndarray | None) -> None:
        pass

    def scores(self, model: PredictorInfo) -> bool:
        return self._accuracy.scores(model)


class _SharedEstimator:
    """A ``WaveEstimator`` that remembers its last answer: policy variants judge one window
    after another with the same frames, so only the first pays for the estimate."""

    def __init__(self, estimator: WaveEstimator) -> None:
        self._estimator = estimator
        self._last: dict[str, tuple[np.ndarray, np.ndarray | None, Any]] = {}

    @property
    def settings(self) -> WaveSettings:
        return self._estimator.settings

    @property
    def live_needed(self) -> int:
        return self._estimator.live_needed

    def estimate(self, frames: np.ndarray, channel_valid: np.ndarray | None = None) -> WaveEstimate:
        return self._memo("estimate", frames, channel_valid)

    def robust_sd(self, frames: np.ndarray, channel_valid: np.ndarray | None = None) -> float:
        return self._memo("robust_sd", frames, channel_valid)

    def _memo(self, method: str, frames: np.ndarray, live: np.ndarray | None) -> Any:
        cached = self._last.get(method)
        if (
            cached is not None
            and np.array_equal(cached[0], frames)
            and (cached[1] is live or (live is not None and np.array_equal(cached[1], live)))
        ):
            return cached[2]
        result = getattr(self._estimator, method)(frames, live)
        self._last[method] = (frames, None if live is None else live.copy(), result)
        return result


def _batched_timing(prediction: Prediction, inference_s: float) -> Prediction:
    """``prediction`` as if its inference had taken ``inference_s`` (its share of its batch's
    compute) instead of the lookup that returned it (and any wait for the batch): its newest
    frame's arrival (and data time) and the inference start move back by the difference, so
    its data age counts the compute that produced it, as the per-window replay's does."""
    shift = inference_s - prediction.inference_s
    arrived = prediction.arrived_at
    return dataclasses.replace(
        prediction,
        available_at=prediction.available_at - shift,
        started_at=prediction.started_at - shift,
        arrived_at=None if arrived is None else arrived - shift,
    )


def _model_healthy(accuracy: LiveAccuracy, loop: LoopSettings) -> bool:
    """What the daemon tells the model interlock: unproven (blocked) until
    ``health_min_scored`` predictions are scored, then not worse than persistence."""
    return ModelHealth.judge(accuracy, loop, running=True).healthy


def _stats_feed(
    timeline: Timeline, model: ModelChoice, predictor: Predictor
) -> Callable[[int], None]:
    """What hands a robust-online model the statistics a daemon's
    :class:`~service.inference.scale_updater.ScaleUpdater` would have given it by each slot,
    computed from the timeline on the same schedule; nothing for a fixed model."""
    online = model.online
    if online is None:
        return lambda _: None
    stats = timeline_stats(timeline, online)
    normaliser = predictor.normaliser
    current = {"k": -1}

    def feed(slot: int) -> None:
        k = int(stats.index[slot])
        if k != current["k"] and k >= 0:
            normaliser.set_stats(stats.centre[k], stats.scale[k])
            current["k"] = k

    return feed


@contextmanager
def _quiet(names: Sequence[str]) -> Iterator[None]:
    """Raise ``names`` to ERROR for the block (a fault still shows), then restore them."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
