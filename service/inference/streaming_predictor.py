"""ONNX Runtime backend, streaming mode: carry the encoder state, feed only new frames.

Window mode re-encodes all 16 past frames on every call; streaming mode runs the exported step
graph once per new frame and keeps the encoder state between calls: the encoder step for each
frame, and the 16-frame rollout for the newest only (frames the scheduler skipped cost an encoder
step each). At stride 1 it does about half the work. A state carried forever summarises the whole
stream, not the last 16 frames the model was trained on: ``bench/benchmarks/streaming_accuracy.py``
measures what that costs in accuracy.

With ``reprime_every_frames = N`` the state is rebuilt on a schedule fixed to sequence numbers,
not to when the predictor happened to be called: a fresh state starts from zeros at every
frame whose sequence number is a multiple of N, is advanced beside the carried one (encoder
steps only), and replaces it once it has seen a whole window. So the state behind a prediction
has seen between one window and one window + N - 1 frames, the prediction at a handover frame is
window mode's exactly, and which frames the scheduler skipped changes nothing: the replay in
``bench/`` and the daemon predict the same numbers for the same frames. The rebuild's cost is
spread over the frames (about one extra encoder step each at N = 16) instead of falling on one.

Whenever the predictor cannot continue its state (first call, frames it has not seen are more
than a window apart, sequence numbers go backwards after a reconnect, or the scheduler reset
it: it refused a window since the last call, whose frames the state must not be fed, or frames
the state was fed have changed since, blanked by a late marker or interpolated) it re-primes
from zeros on the window it is given, which reproduces window mode exactly; from the first
handover after that on, its predictions depend only on the frames.

These decisions (which states exist, which frames each is fed, which step is the prediction)
are :class:`~service.inference._stream_schedule.StreamSchedule`'s; the batched replay
(``service.inference._batch_stream``) follows the same schedule, and this class only runs its
steps, one at a time.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from service.inference._keep_warm import WarmPredictor
from service.inference._stream_schedule import StreamSchedule
from service.inference.onnx_predictor import (
    check_graph_io,
    open_session,
    output_names,
    session_info,
)
from service.inference.predictor import (
    DEFAULT_STREAM,
    ModelMismatchError,
    StreamSpec,
    check_future,
    check_model_fits,
    check_window,
    normaliser_of,
)

_log = logging.getLogger("corticast.inference")


class StreamingPredictor(WarmPredictor):
    """A step-graph model on ONNX Runtime; see the module docstring.

    Parameters are those of :class:`service.inference.onnx_predictor.OnnxPredictor`; ``path`` is the
    step graph (``corticast export RUN OUT --step STEP``); ``reprime_every_frames`` is the
    rebuild schedule (module docstring; None: the state is carried until the stream forces a
    re-prime).
    """

    def __init__(
        self,
        path: str | Path,
        stream: StreamSpec = DEFAULT_STREAM,
        *,
        device: str = "cpu",
        threads: int = 2,
        device_id: int = 0,
        keep_warm_s: float | None = 1.0,
        reprime_every_frames: int | None = None,
        warm: bool = True,
    ) -> None:
        if device not in ("cpu", "cuda"):
            raise ValueError(f"'device' must be 'cpu' or 'cuda' in stream mode, got {device!r}")
        self._schedule: StreamSchedule[list[np.ndarray]] = StreamSchedule(
            stream.past_frames, reprime_every_frames, self._fresh
        )
        """Which states each call feeds which frames; this class only runs the steps."""
        self._session, self.metadata = open_session(
            path, device, threads=threads, device_id=device_id
        )
        if self.metadata.graph != "step":
            raise ModelMismatchError(
                f"{str(path)!r} is a {self.metadata.graph!r} graph; stream mode needs the step "
                "graph (corticast export RUN OUT --step STEP)"
            )
        check_model_fits(self.metadata, stream, path)
        if "rollout" not in {i.name for i in self._session.get_inputs()}:
            raise ModelMismatchError(
                f"{str(path)!r} is a step graph from before the 'rollout' input, which lets "
                "stream mode catch up on frames without predicting at each; re-export it "
                "(corticast export RUN OUT --step STEP)"
            )
        check_graph_io(self._session, self.metadata, path)
        self._stream = stream
        self.normaliser = normaliser_of(self.metadata, path)
        self._frame = np.zeros((1, 1, *stream.grid.shape), dtype=np.float32)
        self._due = np.ones(1, dtype=np.float32)
        self._rollout = np.ones(1, dtype=np.float32)
        self._flags = {"upper_due": self._due, "rollout": self._rollout}
        self._zero_state = [np.zeros(s, dtype=np.float32) for s in self.metadata.state_shapes]
        self._state_names = [f"state_in_{k}" for k in range(len(self._zero_state))]
        self._outputs = output_names(self.metadata)
        super().__init__()
        self.info = session_info(
            path, self.metadata, device, device_id, self.metadata.precision, "stream"
        )
        self._warm(keep_warm_s if device != "cpu" else None, at_load=warm)
        _log.info("loaded %s on %s, stream mode (%s)", self.info.model, self.info.backend, path)

    def predict(
        self,
        window: np.ndarray,
        newest_seq: int | None = None,
        past_times: np.ndarray | None = None,
    ) -> np.ndarray:
        """The future after ``window``'s newest frame, whose sequence number is ``newest_seq``.

        Only frames newer than the previous call's are fed; ``newest_seq`` is required. Step
        graphs are never irregular, so ``past_times`` is ignored.
        """
        check_window(window, self._stream)
        if newest_seq is None or isinstance(newest_seq, bool) or not isinstance(newest_seq, int):
            raise TypeError(
                f"'newest_seq' must be the int sequence number of the window's newest frame in "
                f"stream mode, got {newest_seq!r}"
            )
        with self._lock:
            self._check_kept_warm()
            stats = self.normaliser.stats_for_prediction()
            future = None
            for frame in self._schedule.feed(newest_seq):
                # Under robust-online statistics a state keeps what it saw in the units of
                # earlier refreshes, which differ little from the current ones (each refresh
                # moves the window by ``update_s`` of ``window_s``).
                self.normaliser.normalise_into(window[frame.offset], self._frame[0, 0], stats)
                for step in frame.steps:
                    # Steps before the newest frame only advance their state (no rollout):
                    # catching up costs encoder steps, not predictions.
                    out = self._step(step.state, step.upper_due, step.rollout)
                    if step.rollout:
                        future = out
            self._used()
        future = check_future(future, self._stream, self.info.model_path)
        return self.normaliser.denormalise(future[0, :, 0], stats)

    @property
    def reprimes(self) -> int:
        """Times the state was rebuilt from the window given (first call, gaps, resets)."""
        return self._schedule.reprimes

    @property
    def handovers(self) -> int:
        """Times a state built on schedule replaced the carried one."""
        return self._schedule.handovers

    def reset(self) -> None:
        """Forget the state; the next call re-primes from its window."""
        with self._lock:
            self._schedule.reset()

    def warmup(self) -> None:
        """Warm up on the zero state, then forget the carried one (the next call re-primes)."""
        super().warmup()
        self.reset()

    def _fresh(self) -> list[np.ndarray]:
        return [zero.copy() for zero in self._zero_state]

    def _step(self, state: list[np.ndarray], upper_due: bool, rollout: bool) -> np.ndarray:
        """Feed the frame in ``self._frame`` to ``state`` (updated in place); its future."""
        self._due[0] = 1.0 if upper_due else 0.0
        self._rollout[0] = 1.0 if rollout else 0.0
        feeds = {self.metadata.input_name: self._frame, **self._flags}
        feeds.update(zip(self._state_names, state, strict=True))
        future, *state[:] = self._session.run(self._outputs, feeds)
        return future

    def _warm_once(self) -> None:
        self._rollout[0] = 1.0
        feeds = {self.metadata.input_name: self._frame, **self._flags}
        feeds.update(zip(self._state_names, self._zero_state, strict=True))
        future = self._session.run(self._outputs, feeds)[0]
        check_future(future, self._stream, self.info.model_path)


def steps_per_prediction(window_frames: int, reprime_every_frames: int | None) -> dict[bool, float]:
    """Step-graph calls per prediction at stride 1, once the stream runs (the first call's
    priming left out), by ``rollout`` flag: True the carried state's step that predicts (1),
    False the encoder-only steps of states being rebuilt. What a prediction costs in stream
    mode, for benchmarks that count its work (the schedule is :class:`StreamSchedule`'s)."""
    schedule = StreamSchedule(window_frames, reprime_every_frames, fresh=object)
    schedule.feed(window_frames - 1)
    calls = 2 * window_frames * (reprime_every_frames or 1)  # whole periods of every rule
    counts = {True: 0, False: 0}
    for seq in range(window_frames, window_frames + calls):
        for frame in schedule.feed(seq):
            for step in frame.steps:
                counts[step.rollout] += 1
    return {rollout: n / calls for rollout, n in counts.items()}
