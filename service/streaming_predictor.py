"""ONNX Runtime backend, streaming mode: carry the encoder state, feed only new frames.

Window mode re-encodes all 16 past frames on every call; streaming mode runs the exported step
graph once per new frame and keeps the encoder state between calls: the encoder step for each
frame, and the 16-frame rollout for the newest only (frames the scheduler skipped, or a window
it re-primes from, cost an encoder step each). At stride 1 it does about half the work. The
state then summarises the whole stream, not just the last 16 frames as in training:
``bench/streaming_accuracy.py`` measures what that costs in accuracy.

Whenever the predictor cannot continue its state (first call, frames it has not seen are more
than a window apart, or sequence numbers go backwards after a reconnect) it re-primes from zeros
on the window it is given, which reproduces window mode exactly. With ``reprime_every_frames``
it also re-primes once the state has carried that many frames past its last re-prime, which
bounds how far the state strays from the 16-frame windows the model was trained on.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from service._keep_warm import KeepWarm
from service.onnx_predictor import WARMUP_RUNS, open_session, session_info
from service.predictor import (
    DEFAULT_STREAM,
    ModelMismatchError,
    Normaliser,
    StreamSpec,
    check_model_fits,
    check_window,
)

_log = logging.getLogger("corticast.inference")


class StreamingPredictor:
    """A step-graph model on ONNX Runtime; see the module docstring.

    Parameters are those of :class:`service.onnx_predictor.OnnxPredictor`; ``path`` is the
    step graph (``corticast export RUN OUT --step STEP``); ``reprime_every_frames`` bounds how
    long the state is carried (module docstring; None: until the stream forces a re-prime).
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
    ) -> None:
        if device not in ("cpu", "cuda"):
            raise ValueError(f"'device' must be 'cpu' or 'cuda' in stream mode, got {device!r}")
        if reprime_every_frames is not None and reprime_every_frames < 1:
            raise ValueError(
                f"'reprime_every_frames' must be >= 1 or None, got {reprime_every_frames}"
            )
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
        self._stream = stream
        self._normaliser = Normaliser(self.metadata)
        self._frame = np.zeros((1, 1, *stream.grid.shape), dtype=np.float32)
        self._due = np.ones(1, dtype=np.float32)
        self._rollout = np.ones(1, dtype=np.float32)
        self._flags = {"upper_due": self._due, "rollout": self._rollout}
        self._zero_state = [np.zeros(s, dtype=np.float32) for s in self.metadata.state_shapes]
        self._state = [s.copy() for s in self._zero_state]
        self._state_names = [f"state_in_{k}" for k in range(len(self._state))]
        self._reprime_every = reprime_every_frames
        self._last_seq: int | None = None
        self._anchor = 0
        self.reprimes = 0
        """Times the state was rebuilt from a whole window (first call, gaps, resets)."""
        self._lock = threading.Lock()
        self.info = session_info(path, self.metadata, device, device_id, "fp32", "stream")
        self.warmup()
        self._keep_warm = None
        if device != "cpu" and keep_warm_s is not None:
            self._keep_warm = KeepWarm(self._warm_once, self._lock, keep_warm_s).start()
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
            new = None if self._last_seq is None else newest_seq - self._last_seq
            scheduled = self._reprime_every is not None and (
                newest_seq - self._anchor >= self._reprime_every
            )
            if new is None or not 0 < new <= len(window) or scheduled:
                self._reprime(newest_seq)
                new = len(window)
            future = None
            for offset in range(len(window) - new, len(window)):
                seq = newest_seq - (len(window) - 1 - offset)
                # Frames before the newest only advance the state (no rollout): catching up
                # costs encoder steps, not predictions.
                future = self._step(window[offset], seq, rollout=seq == newest_seq)
            self._last_seq = newest_seq
            if self._keep_warm is not None:
                self._keep_warm.touch()
        return self._normaliser.denormalise(future[0, :, 0])

    def reset(self) -> None:
        """Forget the state; the next call re-primes from its window."""
        with self._lock:
            self._last_seq = None

    def warmup(self) -> None:
        with self._lock:
            for _ in range(WARMUP_RUNS):
                self._warm_once()
            self._last_seq = None

    def close(self) -> None:
        if self._keep_warm is not None:
            self._keep_warm.stop()
            self._keep_warm = None

    def _reprime(self, newest_seq: int) -> None:
        """Zero state, and the temporal-skip phase of window mode: the upper layer updates at
        the window's even (1-based) frames, i.e. at sequence numbers of the newest's parity."""
        for state, zero in zip(self._state, self._zero_state, strict=True):
            state[...] = zero
        self._anchor = newest_seq
        self.reprimes += 1

    def _step(self, frame: np.ndarray, seq: int, rollout: bool) -> np.ndarray:
        self._normaliser.normalise_into(frame, self._frame[0, 0])
        self._due[0] = 1.0 if (seq - self._anchor) % 2 == 0 else 0.0
        self._rollout[0] = 1.0 if rollout else 0.0
        feeds = {self.metadata.input_name: self._frame, **self._flags}
        feeds.update(zip(self._state_names, self._state, strict=True))
        future, *state = self._session.run(None, feeds)
        self._state = state
        return future

    def _warm_once(self) -> None:
        self._rollout[0] = 1.0
        feeds = {self.metadata.input_name: self._frame, **self._flags}
        feeds.update(zip(self._state_names, self._zero_state, strict=True))
        self._session.run(None, feeds)
