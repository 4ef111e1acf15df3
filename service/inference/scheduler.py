"""The scheduler: runs the predictor on the newest window every ``stride`` frames.

It never queues. It sleeps on the ring buffer until the frame that makes the next prediction
due arrives, then takes the newest window there is, which after a slow inference is later
than the one that was due: the windows passed over are counted as skipped, never run late.
A window with missing frames is held, interpolated or refused, or, for a model that takes
irregular input, replaced by the last frames actually received with their times
(``service.inference.missing_frames``).

A prediction holding any NaN or inf is never handed on: the scheduler counts it and raises
:class:`~service.inference.predictor.NonFiniteOutputError` naming the model and how many values,
a predictor fault as a crash is (the daemon's supervisor disarms first, then reports).

Each prediction is handed to ``on_prediction`` as a :class:`Prediction` that says exactly
which input it came from (sequence number and LSL time of the newest frame), when that frame
became available, when inference started and ended, and how old it was when handed on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pylsl
from prometheus_client import CollectorRegistry

from service.core.grid import NOMINAL_RATE_HZ
from service.core.realtime_rest import Rests
from service.core.thread_placement import ThreadPlacement
from service.core.worker import BackgroundWorker
from service.inference.metrics import InferenceMetrics
from service.inference.missing_frames import (
    IRREGULAR,
    MISSING_FRAME_POLICIES,
    MissingFramePolicy,
    prepare_window,
    received_frames,
)
from service.inference.predictor import (
    ModelMismatchError,
    NonFiniteOutputError,
    NotReadyError,
    Predictor,
    PredictorInfo,
)
from service.ingest.ring_buffer import RingBuffer

_log = logging.getLogger("corticast.scheduler")

_WAIT_S = 0.05
"""Longest the loop blocks on the ring before re-checking for a stop request."""


@dataclass(frozen=True, eq=False)
class Prediction:
    """One prediction and where it came from.

    Attributes
    ----------
    future
        (future_frames, rows, cols) float32 µV.
    past
        The (past_frames, rows, cols) window it was predicted from, as fed (after the
        missing-frame policy), µV; under ``irregular``, the frames received, at ``past_times``.
    input_seq
        Ring sequence number of the newest input frame.
    first_input_seq
        Ring sequence number of the oldest frame the input reached back to:
        ``input_seq - past_frames + 1``, or earlier under ``irregular`` when frames were
        missing. With ``input_seq`` it bounds the measured frames a decision on this
        prediction rests on, whose missing frames the interlocks count.
    input_timestamp
        LSL timestamp of the newest input frame (the predicted frames follow it at the
        nominal period).
    available_at, started_at, finished_at, handed_at
        Local clock (``pylsl.local_clock``) times: the newest input frame's data time (its
        arrival, or its timestamp where earlier: ``Window.newest_available``), from which its
        age counts; inference start and end; hand-off to ``on_prediction``.
    missing_frames
        Frames of the nominal window that the stream never delivered (held, interpolated,
        or, under ``irregular``, left out).
    past_times
        (past_frames,) float32 times of ``past`` in frame periods relative to the newest
        nominal frame, fed to an irregular model; None under the other policies.
    skipped_before
        Due windows passed over since the previous prediction.
    predictor
        What made it (across a model hot swap, the info of the model that actually ran).
    normalisation
        (centre, scale) the model's input and output went through: its fixed normalisation,
        or the robust-online statistics in use then; the units live accuracy scores it in.
    arrived_at
        Local clock time the newest input frame arrived in the ring (``Window.newest_arrival``;
        None where not known: ``available_at`` then stands for it). Only the latency breakdown
        reads it.
    """

    future: np.ndarray
    past: np.ndarray
    input_seq: int
    first_input_seq: int
    input_timestamp: float
    available_at: float
    started_at: float
    finished_at: float
    handed_at: float
    missing_frames: int
    skipped_before: int
    predictor: PredictorInfo | None = None
    past_times: np.ndarray | None = None
    normalisation: tuple[np.ndarray, np.ndarray] | None = None
    arrived_at: float | None = None

    @property
    def inference_s(self) -> float:
        return self.finished_at - self.started_at

    @property
    def age_s(self) -> float:
        """Newest input frame's data time to hand-off: what the loop's latency budget counts."""
        return self.handed_at - self.available_at


@dataclass(frozen=True)
class Refusal:
    """A due window that was not run, and why."""

    input_seq: int
    reason: str


class Scheduler(BackgroundWorker):
    """Background thread: ring buffer -> predictor -> ``on_prediction``.

    Parameters
    ----------
    ring
        Where the ingestor writes frames.
    predictor
        Any backend (``service.inference.predictor.Predictor``).
    on_prediction
        Called in the scheduler thread with each :class:`Prediction`; keep it quick (it
        delays the next inference) or hand the work on.
    stride
        Frames between predictions (1: after every frame).
    missing_frames, max_missing_frames
        The missing-frame policy, named as its ``[scheduler]`` key (``"hold"``,
        ``"interpolate"``, ``"refuse"``, or ``"irregular"`` for a predictor whose
        ``info.irregular`` is set), and the most missing frames any policy accepts.
    sample_rate_hz
        Nominal frame rate: turns LSL timestamps into the frame periods of ``past_times``.
    on_refusal
        Called with a :class:`Refusal` for every due window not run.
    before_inference
        Called with the frames about to be fed, the newest slot and the frames' times (under
        ``irregular``; else None), in this thread, just before each inference: work that
        needs only the input can start then and run beside the model, which holds no GIL (the
        loop's AR forecast). Must return at once.
    registry
        Prometheus registry of the instruments (ignored when ``metrics`` is given).
    metrics
        Instruments to update instead of registering new ones (a restarted scheduler keeps
        reporting on the same series).
    clock
        Local clock, the same one the ingestor stamps arrivals with.
    placement
        CPUs and real-time priority of the scheduler thread (``[realtime]``); None: the
        process's.
    idle_share
        Under a real-time policy (``placement``'s, the process's under the unit's drop-in,
        or one given to the running thread), the least share of its time the thread leaves
        its CPU idle when windows come faster than it runs them (``[realtime] idle_share``):
        after a window whose end finds the next already due it rests
        (``service.core.realtime_rest``). 0: never.
    """

    def __init__(
        self,
        ring: RingBuffer,
        predictor: Predictor,
        on_prediction: Callable[[Prediction], None],
        *,
        stride: int = 1,
        past_frames: int = 16,
        missing_frames: MissingFramePolicy = "hold",
        max_missing_frames: int = 4,
        sample_rate_hz: float = NOMINAL_RATE_HZ,
        on_refusal: Callable[[Refusal], None] | None = None,
        before_inference: Callable[[np.ndarray, int, np.ndarray | None], None] | None = None,
        registry: CollectorRegistry | None = None,
        metrics: InferenceMetrics | None = None,
        clock: Callable[[], float] = pylsl.local_clock,
        placement: ThreadPlacement | None = None,
        idle_share: float = 0.0,
    ) -> None:
        super().__init__("corticast-scheduler", placement=placement)
        if not isinstance(stride, int) or stride < 1:
            raise ValueError(f"'stride' must be an int >= 1, got {stride!r}")
        if missing_frames not in MISSING_FRAME_POLICIES:
            raise ValueError(
                f"'missing_frames' must be one of {MISSING_FRAME_POLICIES}, got {missing_frames!r}"
            )
        self._missing_frame_policy = missing_frames
        check_missing_frame_policy_fits(predictor, missing_frames)
        self._ring = ring
        self.predictor = predictor
        self._rate = float(sample_rate_hz)
        self._on_prediction = on_prediction
        self._on_refusal = on_refusal
        self._before_inference = before_inference
        self._stride = stride
        """Frames from the last window run or refused to the next due: the stride of the
        predictor it was for (only the scheduler's thread sets it, between windows)."""
        self._predictor_stride = stride
        """The stride of ``predictor`` (a swap's), in force from its first window on."""
        self._past_frames = past_frames
        self._max_missing = max_missing_frames
        self._clock = clock
        self.metrics = metrics or InferenceMetrics(registry or CollectorRegistry())
        self._last_seq: int | None = None
        self._rewrites_seen: int | None = None
        """The ring's ``rewrites`` as read before the last window run (None: none run yet)."""
        self._fed: tuple[int, np.ndarray] | None = None
        """The newest sequence number and the frames of the last window run (None: none
        since the state was last reset)."""
        self._skipped_since_prediction = 0
        self._predict_lock = threading.Lock()
        self.predictions = 0
        self.skipped = 0
        self.refused = 0
        self._rests = Rests(idle_share, self.metrics.rested)
        self.last_window_s: float | None = None
        """How long the model took on the last window it ran (None before the first): a
        stage taken as stuck tells a model too slow for the host from a call that does not
        return by it (``service.daemon.stalls``)."""
        self.progressed_at = time.monotonic()
        """Monotonic time the thread last came round its loop: between two windows, and every
        ``_WAIT_S`` while it waits for the next; its age is how long it has been inside one
        (``service.daemon.stalls``). Written on the hot path without a lock: rebinding one
        attribute to a new float is a single store under the GIL, so another thread reads the
        old value or the new one, never half of either."""

    @property
    def rested_s(self) -> float:
        """Time the thread has rested after back-to-back windows (``idle_share``)."""
        return self._rests.total_s

    @property
    def stride(self) -> int:
        """Frames between predictions of the current predictor (a swap's stride is in force
        from the new predictor's first window on)."""
        return self._predictor_stride

    def swap_predictor(self, predictor: Predictor, *, stride: int | None = None) -> Predictor:
        """Use ``predictor`` from the next window on, every ``stride`` frames (None: the
        stride in force); returns the previous one, which is no longer running (it waits out
        an inference in flight), so the caller may close it.

        The window the new predictor runs first is the one due under the old stride (windows
        passed over before it are counted at that stride); the next is due ``stride`` frames
        after it.
        """
        check_missing_frame_policy_fits(predictor, self._missing_frame_policy)
        if stride is not None and (not isinstance(stride, int) or stride < 1):
            raise ValueError(f"'stride' must be an int >= 1, got {stride!r}")
        with self._predict_lock:
            previous, self.predictor = self.predictor, predictor
            if stride is not None:
                self._predictor_stride = stride
        return previous

    def next_due(self) -> int:
        """Sequence number of the frame whose arrival makes the next window due."""
        return self._next_due()

    def run_due(self) -> None:
        """Run the newest window now, in the caller's thread, as the worker does when the
        frame :meth:`next_due` names has arrived.

        For replays that drive the loop without threads or waits (``bench.replay.fast``):
        write frames up to :meth:`next_due`, call this, repeat. Never while the worker runs.
        """
        if self.running:
            raise RuntimeError("Scheduler.run_due() drives a stopped scheduler; call stop() first")
        self._run_newest()

    def _prepare(self) -> None:
        self.progressed_at = time.monotonic()  # a restart is not inside a window

    def _work(self) -> None:
        while not self._stop_requested.is_set():
            self.progressed_at = time.monotonic()
            due = self._next_due()
            if not self._ring.wait_for(due, timeout=_WAIT_S):
                continue
            began = time.thread_time()
            self._run_newest()
            if self._ring.next_seq > self._next_due():  # the next window is due already
                self._rests.after(began, self._stop_requested)

    def _next_due(self) -> int:
        """Sequence number of the frame that makes the next window due."""
        if self._last_seq is None:
            # The first window: as soon as a full window exists.
            return max(self._past_frames - 1, self._ring.next_seq - 1)
        return self._last_seq + self._stride

    def _run_newest(self) -> None:
        span = frames_read(self._past_frames, self._missing_frame_policy, self._max_missing)
        if self._missing_frame_policy == IRREGULAR:  # the reach back, once that much has come
            span = min(span, self._ring.next_seq)
        # Read before the window: a blank of frames already fed (a late marker's) is seen
        # here or at the next window, never lost between the two reads.
        rewrites = self._ring.rewrites
        window = self._ring.latest(span)
        newest = int(window.seq[-1])
        # Due points passed over while busy: the newest window is run, the others skipped.
        passed = 0 if self._last_seq is None else (newest - self._last_seq) // self._stride - 1
        if passed > 0:
            self.skipped += passed
            self._skipped_since_prediction += passed  # a refusal below does not reset it
            self.metrics.skipped.inc(passed)
        self._last_seq = newest
        past_times = None
        first = int(window.seq[0])
        if self._missing_frame_policy == IRREGULAR:
            frames, past_times, reason = received_frames(
                window.frames, window.valid, window.timestamps, self._past_frames, self._rate
            )
            nominal = window.valid[-self._past_frames :]
            if frames is not None:  # the oldest of the frames fed: the past_frames-th received
                first = int(window.seq[np.flatnonzero(window.valid)[-self._past_frames]])
        else:
            frames, reason = prepare_window(
                window.frames, window.valid, self._missing_frame_policy, self._max_missing
            )
            nominal = window.valid
        if frames is None:
            # Refused on behalf of the predictor in force: a swap's stride paces from it on,
            # and its state is reset before a swap can hand it back to be closed.
            with self._predict_lock:
                self._stride = self._predictor_stride
                self._refuse(self.predictor, newest, reason)
            return
        # Frames the state was fed may have been blanked since (an artefact it must not carry
        # on), fed otherwise now, or the state is from before this scheduler: it starts over.
        stale = rewrites != self._rewrites_seen or (
            past_times is None and self._fed_otherwise(newest, frames)
        )
        missing = int(nominal.size - np.count_nonzero(nominal))
        if self._before_inference is not None:
            self._before_inference(frames, newest, past_times)
        with self._predict_lock:  # the predictor and its stride, taken together
            predictor, self._stride = self.predictor, self._predictor_stride
            if stale:  # under the lock: never once a swap has handed the predictor back
                _forget_state(predictor)
            self._rewrites_seen = rewrites
            started = self._clock()
            try:
                future = predictor.predict(frames, newest, past_times)
            except NotReadyError as err:  # robust-online statistics not there yet
                self._refuse(predictor, newest, str(err))
                return
            finished = self._clock()
            self.last_window_s = finished - started
            self._fed = (newest, frames)
            normaliser = getattr(predictor, "normaliser", None)  # test doubles may have none
            units = None if normaliser is None else normaliser.last_used
        if not np.isfinite(future).all():  # ~3 µs on 16 x 18 x 20 floats
            self._fault_on_non_finite(predictor, future, newest)
        if missing:
            self.metrics.interpolated.inc()
        prediction = Prediction(
            future=future,
            past=frames,
            input_seq=newest,
            first_input_seq=first,
            input_timestamp=float(window.timestamps[-1]),
            available_at=window.newest_available,
            started_at=started,
            finished_at=finished,
            handed_at=self._clock(),
            missing_frames=missing,
            skipped_before=self._skipped_since_prediction,
            predictor=predictor.info,
            past_times=past_times,
            normalisation=units,
            arrived_at=window.newest_arrival,
        )
        self._skipped_since_prediction = 0
        self.predictions += 1
        self.metrics.predictions.inc()
        self.metrics.latency.observe(prediction.inference_s)
        self.metrics.age.observe(prediction.age_s)
        self.metrics.newest_input_seq.set(newest)
        self._on_prediction(prediction)

    def _fault_on_non_finite(self, predictor: Predictor, future: np.ndarray, newest: int) -> None:
        """Count a prediction with NaN or inf values and raise: it must reach no one (the
        wave estimate and the policy would take it as valid), and a model that emits it is
        faulty as one that crashes is."""
        self.metrics.non_finite.inc()
        bad = int(future.size - np.count_nonzero(np.isfinite(future)))
        info = predictor.info
        raise NonFiniteOutputError(
            f"model {info.model!r} ({info.model_path}, {info.backend}) output {bad} non-finite "
            f"values (NaN or inf) of {future.size} in its prediction from frame {newest}; it "
            "was not handed on"
        )

    def _fed_otherwise(self, newest: int, frames: np.ndarray) -> bool:
        """Whether frames the last window run fed are fed otherwise now. Only ``interpolate``
        does that (blanks aside): a missing newest frame fed held is interpolated once a later
        one comes, and a run of missing frames whose frame before has left the window copies
        the frame after it. A state fed the earlier version (stream mode) starts over, or it
        predicts on frames window mode never sees: one re-prime per run of missing frames."""
        if self._fed is None:
            return False
        fed_newest, fed = self._fed
        overlap = min(fed_newest - (newest - frames.shape[0] + 1) + 1, frames.shape[0])
        if overlap <= 0:
            return False
        return not np.array_equal(fed[fed.shape[0] - overlap :], frames[:overlap])

    def _refuse(self, predictor: Predictor, newest: int, reason: str) -> None:
        """Count and report a window not run. Its frames are never fed to ``predictor``: one
        that carries state from call to call (stream mode) is reset, so the next window run
        starts it over rather than continuing it over the frames refused (a run of more
        missing frames than ``max_missing_frames`` would otherwise reach the state)."""
        _forget_state(predictor)
        self._fed = None
        self.refused += 1
        self.metrics.refused.inc()
        if self._on_refusal is not None:
            self._on_refusal(Refusal(newest, reason))


def _forget_state(predictor: Predictor) -> None:
    """Reset a predictor that carries state from call to call (stream mode): its next call
    re-primes from the window it is given, as window mode predicts."""
    reset = getattr(predictor, "reset", None)
    if reset is not None:
        reset()


def frames_read(past_frames: int, policy: MissingFramePolicy, max_missing: int) -> int:
    """Most frames one window reads from the ring: the model's ``past_frames``, and under
    ``irregular`` ``max_missing`` more, reaching back past frames that never came."""
    return past_frames + (max_missing if policy == IRREGULAR else 0)


def check_missing_frame_policy_fits(predictor: Predictor, policy: MissingFramePolicy) -> None:
    """Refuse ``irregular`` for a model that cannot take the frames' times.

    Raises ModelMismatchError (a ValueError): the model does not fit how it would be fed.
    """
    if policy == IRREGULAR and not predictor.info.irregular:
        raise ModelMismatchError(
            f"missing-frame policy 'irregular' ([scheduler] missing_frames) needs a model that "
            f"takes irregular input; {predictor.info.model!r} ({predictor.info.model_path}) "
            f"does not (its metadata has irregular = false)"
        )
