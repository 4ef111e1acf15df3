"""Many predictions per model call, each equal to the daemon predictor's for its window.

Offline consumers (``replay --fast``, the accuracy benchmarks) know their windows in advance,
so they need not pay the per-call cost of running windows one by one. A :class:`BatchRunner`
takes the calls the daemon's predictor would get, in order (:class:`BatchRequest`: the window as
the scheduler fed it, its newest sequence number, times, and the normalisation the predictor
had then), and returns the futures that predictor would have returned:

- window mode: the window graph, batched (``models.batch_graph``), one row per window;
- stream mode: the step graph, batched across independent encoder states
  (``service.inference._batch_stream``), the state carried from one :meth:`BatchRunner.run` to
  the next as the predictor carries it between calls.

Normalisation is the predictor's own arithmetic (:class:`~service.inference.predictor.
Normaliser`), so the outputs are bitwise the batch-1 predictor's. CPU only (ONNX Runtime's CPU
execution provider): a GPU backend's batched kernels may round differently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.batch_graph import BATCH_SIZES, batched_session
from models.metadata import PAST_TIMES_INPUT, read_model_metadata
from service.core.robust_scale import Stats
from service.inference._batch_stream import StreamPlan
from service.inference.onnx_predictor import check_graph_io, output_names
from service.inference.predictor import (
    ModelMismatchError,
    Normaliser,
    StreamSpec,
    check_model_fits,
    past_times_input,
)

BATCHED_MODES = ("window", "stream")
BATCHED_BACKEND = "onnxruntime-cpu"
"""The daemon's backend whose predictions a :class:`BatchRunner` reproduces bitwise."""
MAX_BATCH = 256
"""Most windows normalised into one array before they are run: it bounds the memory a long
session's requests take at once. The batched session cuts each array into calls of
``models.batch_graph.BATCH_SIZES`` windows."""


@dataclass(frozen=True)
class BatchRequest:
    """One ``Predictor.predict`` call: its arguments and the statistics it normalised with."""

    window: np.ndarray
    newest_seq: int
    past_times: np.ndarray | None
    stats: Stats
    reprime: bool = False
    """The predictor was reset before this call (the scheduler refused a window since the
    call before): stream mode starts its state over from this window."""


class BatchRunner:
    """Runs a model's requests in batches; see the module docstring.

    Parameters
    ----------
    path
        The graph the daemon's predictor runs: the window graph (mode ``"window"``) or the
        step graph (``"stream"``), batch 1 as exported.
    mode
        ``"window"`` or ``"stream"``.
    stream
        What the daemon feeds the model; a model that does not fit is refused.
    threads
        Intra-op threads of the session.
    reprime_every_frames
        Stream mode's rebuild schedule, as configured for the predictor.

    Raises
    ------
    ModelMismatchError
        A graph of the wrong kind for ``mode``, or one that does not fit ``stream``.
    models.batch_graph.BatchGraphError
        A graph that cannot be batched exactly.
    """

    def __init__(
        self,
        path: str | Path,
        mode: str,
        stream: StreamSpec,
        *,
        threads: int = 1,
        reprime_every_frames: int | None = None,
    ) -> None:
        if mode not in BATCHED_MODES:
            raise ValueError(f"'mode' must be one of {BATCHED_MODES}, got {mode!r}")
        self.metadata = read_model_metadata(path)
        graph = "step" if mode == "stream" else "window"
        if self.metadata.graph != graph:
            raise ModelMismatchError(
                f"{str(path)!r} is a {self.metadata.graph!r} graph; {mode} mode runs the "
                f"{graph} graph"
            )
        check_model_fits(self.metadata, stream, path)
        Normaliser(self.metadata)  # an unusable normalisation is refused here, as at load
        self.mode = mode
        self.path = Path(path)
        self.threads = threads
        self._session = batched_session(path, threads=threads)
        check_graph_io(self._session, self.metadata, path)
        self.plan = StreamPlan(stream.past_frames, reprime_every_frames)
        """Stream mode's states (``reprimes`` and ``handovers`` count as the predictor's do)."""
        self._state_names = [f"state_in_{k}" for k in range(len(self.metadata.state_shapes))]
        self._outputs = output_names(self.metadata)

    def run(self, requests: Sequence[BatchRequest]) -> list[np.ndarray]:
        """The futures (future_frames, rows, cols) float32 µV of ``requests``, in order."""
        if self.mode == "window":
            normalised = [self._window_batch(requests[i : i + MAX_BATCH])
                          for i in range(0, len(requests), MAX_BATCH)]  # fmt: skip
            futures = [row for batch in normalised for row in batch]
        else:
            futures = [None] * len(requests)
            for index, request in enumerate(requests):
                if request.reprime:
                    self.plan.reset()
                frames = np.empty_like(request.window)
                Normaliser.normalise_into(request.window, frames, request.stats)
                self.plan.add(frames, request.newest_seq, index)
            self.plan.execute(self._step, futures, max_batch=max(BATCH_SIZES))
        return [
            Normaliser.denormalise(future[:, 0], request.stats)
            for future, request in zip(futures, requests, strict=True)
        ]

    def _window_batch(self, requests: Sequence[BatchRequest]) -> np.ndarray:
        """(B, future_frames, 1, rows, cols) normalised futures of up to MAX_BATCH windows."""
        first = requests[0].window
        past = np.empty((len(requests), first.shape[0], 1, *first.shape[1:]), dtype=np.float32)
        for row, request in zip(past, requests, strict=True):
            Normaliser.normalise_into(request.window, row[:, 0], request.stats)
        feeds = {self.metadata.input_name: past}
        if self.metadata.irregular:
            feeds[PAST_TIMES_INPUT] = np.stack(
                [past_times_input(r.past_times, self.metadata) for r in requests]
            )
        return self._session.run(self._outputs, feeds)[0]

    def _step(self, frames, states, upper_due: bool, rollout: bool):
        """One batched call of the step graph (see ``StreamPlan.execute``)."""
        count = len(frames)
        if states is None:
            states = [
                np.zeros((count, *shape[1:]), dtype=np.float32)
                for shape in self.metadata.state_shapes
            ]
        feeds = {
            self.metadata.input_name: frames[:, None],
            "upper_due": np.array([1.0 if upper_due else 0.0], dtype=np.float32),
            "rollout": np.array([1.0 if rollout else 0.0], dtype=np.float32),
            **dict(zip(self._state_names, states, strict=True)),
        }
        future, *new_states = self._session.run(self._outputs, feeds)
        return future, new_states
