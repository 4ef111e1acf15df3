"""Batched inference for ``--fast``: every window's prediction computed ahead, in batches.

A fast replay knows the whole session, so the windows its scheduler will run are known before
it runs them. :class:`LookaheadPredictor` is the predictor that scheduler calls: a *shadow* of
the same scheduler (the daemon's own ``Scheduler`` on its own ring, fed the same timeline and,
for a robust-online model, the same statistics) runs ahead with a recorder in place of the
model, so the windows, sequence numbers, times and statistics of the next calls are exactly
those the real scheduler will make, missing-frame policy and refusals included. A
:class:`~service.inference.batch_runner.BatchRunner` computes their predictions in batches, in a
worker thread, up to :data:`AHEAD` chunks ahead of the loop, so on two cores the model runs
while the loop's other stages (publish, scoring, waves, policy, bridge) work through an earlier
chunk, still one window at a time and in order.

Each call checks that it is the call the shadow recorded (sequence number, window, times and
statistics all equal) before it returns the precomputed future, so a batched replay either
reproduces the per-window replay's predictions exactly or stops saying where it diverged.
A window's inference time is its share of its chunk's compute (:attr:`last_share_s`): CPU time of
the worker thread, so a busy machine does not age the data as it would a live loop's (the
per-window replay measures wall time, as the daemon does).

The worker starts as the lookahead is made, before the daemon's predictor for the model is built
(:meth:`LookaheadPredictor.serve_as` hands it over): the loop and the model run at about the same
pace per window on two cores, so the worker's lead is the time it starts before the loop. Either
that waits for the other does the loop's other work meanwhile (``while_waiting``: the report's
scoring), so two threads keep two cores busy without a third preempting them.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pylsl

from bench.replay.timeline import Timeline, written_with
from service.inference.batch_runner import BatchRequest, BatchRunner
from service.inference.onnx_predictor import session_info
from service.inference.predictor import (
    Normaliser,
    Predictor,
    StreamSpec,
    check_window,
)
from service.inference.scheduler import Scheduler
from service.ingest.ring_buffer import RingBuffer

CHUNK_FRAMES = 1024
"""Most session frames per chunk: 32 windows at stride 32, 1024 at stride 1; ``AHEAD + 1``
chunks are held at a time (~140 MB at stride 1). The model runs each chunk in calls of
``models.batch_graph.BATCH_SIZES`` windows, so a larger chunk would not mean fewer calls."""
MIN_CHUNKS = 8
"""Chunks a session is cut into at least (down to ``FIRST_CHUNK_FRAMES`` each): a session in
one chunk would have nothing to overlap."""
FIRST_CHUNK_FRAMES = 256
"""Frames of the first chunk, which the loop waits for with nothing else to do (8 windows at
stride 32); later chunks grow by ``CHUNK_GROWTH`` up to the full size. Measured on a 60 s
session at stride 32 (2-core VM): a first chunk of 2048 frames kept the loop waiting 0.43 s."""
CHUNK_GROWTH = 1.5
"""Each chunk's frames over the previous one's, until the full size."""
AHEAD = 2
"""Chunks the worker computes ahead of the one the loop is working through: with one, the
worker idled whenever a chunk finished before the loop reached it, and fell behind on the next
while the 2 cores were shared."""
SWITCH_INTERVAL_S = 0.0005
"""Python's GIL switch interval while a lookahead runs (default 5 ms): the worker returns from
each model call needing the GIL, held by the loop's thread in pure-Python stages; at 5 ms a
call waits up to 5 ms for it (measured: 1.05x -> 1.30x over per-window on a loaded host)."""

_Chunk = tuple[list[BatchRequest], list[np.ndarray], float]


class LookaheadPredictor:
    """The scheduler's predictor in a batched fast replay; see the module docstring.

    Parameters
    ----------
    runner
        Runs the daemon's graph for the model in batches.
    timeline
        The session as the ring holds it.
    make_scheduler
        ``make_scheduler(ring, predictor)``: a scheduler configured as the replay's own.
    stats_feed
        ``stats_feed(predictor)``: what hands a predictor's normaliser the statistics a daemon
        would have had by each slot (``bench.replay.fast``).
    stream
        What the daemon feeds the model.
    capacity
        Ring slots (as the replay's ring).
    while_waiting
        Other work of the loop's (scoring queued predictions), called for as long as it
        returns True instead of waiting: by the loop while the chunk it needs is not computed
        yet, by the worker while every chunk asked of it is (thread-safe).
    """

    def __init__(
        self,
        runner: BatchRunner,
        timeline: Timeline,
        *,
        stream: StreamSpec,
        make_scheduler: Callable[[RingBuffer, Predictor], Scheduler],
        stats_feed: Callable[[Predictor], Callable[[int], None]],
        capacity: int,
        while_waiting: Callable[[], bool] = lambda: False,
    ) -> None:
        self._runner = runner
        self._while_waiting = while_waiting
        recorder = _Recorder(runner, stream)
        self._batched = recorder.info
        """What the daemon's predictor of the graph batched here reports (:meth:`serve_as`)."""
        ring = RingBuffer(capacity, stream.grid)
        self._shadow = _Shadow(timeline, ring, make_scheduler(ring, recorder), recorder,
                               stats_feed(recorder))  # fmt: skip
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="corticast-lookahead")
        self._full_chunk = int(
            np.clip(len(timeline) // MIN_CHUNKS, FIRST_CHUNK_FRAMES, CHUNK_FRAMES)
        )
        self._chunk_frames = FIRST_CHUNK_FRAMES
        self._closed = False
        self._ahead: deque[Future[_Chunk]] = deque()
        for _ in range(AHEAD):
            self._ask_ahead()
        self._current: Iterator[tuple[BatchRequest, np.ndarray]] = iter(())
        self._share_s = 0.0
        self._reprime = False
        self.last_share_s = 0.0
        """Inference time of the latest prediction: its share of its chunk's compute."""

    def serve_as(self, predictor: Predictor) -> None:
        """Stand in for ``predictor``, the daemon's for the model (built while the worker
        started): its ``info`` and ``normaliser`` are this one's (its owner closes it).

        Raises
        ------
        ValueError
            If ``predictor`` does not run the graph the worker batches (another backend, mode
            or file): its predictions would not be these.
        """
        info, batched = predictor.info, self._batched
        graph = (info.backend, info.mode, info.model_path)
        if graph != (batched.backend, batched.mode, batched.model_path):
            raise ValueError(
                f"the lookahead batches {batched.model_path} ({batched.mode} mode, "
                f"{batched.backend}); the predictor runs {info.model_path} ({info.mode} mode, "
                f"{info.backend})"
            )
        self.info = info
        self.normaliser = predictor.normaliser

    def predict(
        self,
        window: np.ndarray,
        newest_seq: int | None = None,
        past_times: np.ndarray | None = None,
    ) -> np.ndarray:
        """The precomputed future of this call (checked to be the call recorded)."""
        stats = self.normaliser.stats_for_prediction()  # refuses as the model would
        request, future = self._take()
        same = (
            request.newest_seq == newest_seq
            and request.reprime == self._reprime
            and np.array_equal(request.window, window)
            and _same_optional(request.past_times, past_times)
            and all(np.array_equal(a, b) for a, b in zip(request.stats, stats, strict=True))
        )
        if not same:
            raise RuntimeError(
                f"batched replay diverged: the scheduler asked for the window ending at "
                f"{newest_seq}, the lookahead had {request.newest_seq} (or its frames, times, "
                "statistics or whether it starts stream mode's state over differ); replay with "
                "--no-batch"
            )
        self._reprime = False
        self.last_share_s = self._share_s
        return future

    def reset(self) -> None:
        """The scheduler starts the state over (a refusal, a blank of frames already written,
        frames fed otherwise): the next call must be one the shadow recorded re-priming, or
        the precomputed future is not the one the daemon's predictor would return."""
        self._reprime = True

    def warmup(self) -> None:
        """Nothing: the batched session warms up on its first chunk."""

    def close(self) -> None:
        """Stop the worker (dropping chunks not yet taken) and restore the switch interval;
        idempotent."""
        self._closed = True
        self._worker.shutdown(wait=True, cancel_futures=True)
        sys.setswitchinterval(self._switch_interval)

    def _take(self) -> tuple[BatchRequest, np.ndarray]:
        for item in self._current:
            return item
        while not self._ahead[0].done() and self._while_waiting():
            pass
        requests, futures, compute_s = self._ahead.popleft().result()  # worker errors surface
        if not requests:
            raise RuntimeError("batched replay: the scheduler asked for more windows than the "
                               "session has")  # fmt: skip
        self._ask_ahead()
        self._share_s = compute_s / len(requests)
        self._current = iter(zip(requests, futures, strict=True))
        return next(self._current)

    def _ask_ahead(self) -> None:
        """Have the worker compute the next chunk, then do the loop's other work until asked
        for another (it runs its tasks in order, so that one waits at most one piece of it)."""
        self._ahead.append(self._worker.submit(self._compute))
        self._worker.submit(self._while_idle)

    def _while_idle(self) -> None:
        while (not self._closed and all(chunk.done() for chunk in list(self._ahead))
               and self._while_waiting()):  # fmt: skip
            pass

    def _compute(self) -> _Chunk:
        """The next chunk's requests (from the shadow) and their futures, in the worker, with
        the compute they took: the worker thread's CPU time when the model runs on it (one
        intra-op thread), which neither the loop's thread nor other processes inflate; else
        the wall time."""
        requests = self._shadow.advance(self._chunk_frames)
        self._chunk_frames = min(round(self._chunk_frames * CHUNK_GROWTH), self._full_chunk)
        clock = time.thread_time if self._runner.threads == 1 else time.perf_counter
        began = clock()
        futures = self._runner.run(requests) if requests else []
        return requests, futures, clock() - began


class _Recorder:
    """The shadow scheduler's predictor: notes each call and returns zeros."""

    def __init__(self, runner: BatchRunner, stream: StreamSpec) -> None:
        metadata = runner.metadata
        self.info = session_info(runner.path, metadata, "cpu", 0, metadata.precision, runner.mode)
        """What the daemon's ONNX Runtime CPU predictor of the graph reports (its scheduler
        checks its missing-frame policy against ``irregular``)."""
        self.normaliser = Normaliser(metadata)
        self._stream = stream
        self._zeros = np.zeros(
            (self._stream.future_frames, *self._stream.grid.shape), dtype=np.float32
        )
        self.requests: list[BatchRequest] = []
        self._reset = False

    def reset(self) -> None:
        """The scheduler starts the state over (a refusal, a blank of frames already written,
        frames fed otherwise): the next request re-primes stream mode's state, as the daemon's
        predictor does after the same reset."""
        self._reset = True

    def predict(
        self,
        window: np.ndarray,
        newest_seq: int | None = None,
        past_times: np.ndarray | None = None,
    ) -> np.ndarray:
        check_window(window, self._stream)  # what the model would refuse, refused here too
        stats = self.normaliser.stats_for_prediction()
        times = None if past_times is None else past_times.copy()
        request = BatchRequest(window.copy(), int(newest_seq), times, stats, self._reset)
        self.requests.append(request)
        self._reset = False
        return self._zeros


class _Shadow:
    """The scheduler run ahead on its own ring, as ``FastReplay._drive`` runs the real one."""

    def __init__(
        self,
        timeline: Timeline,
        ring: RingBuffer,
        scheduler: Scheduler,
        recorder: _Recorder,
        feed_stats: Callable[[int], None],
    ) -> None:
        self._timeline = timeline
        self._ring = ring
        self._scheduler = scheduler
        self._recorder = recorder
        self._feed_stats = feed_stats
        self._written = 0

    def advance(self, frames: int) -> list[BatchRequest]:
        """The calls the scheduler makes while the next ``frames`` frames are written (at
        least one call unless the session ends first)."""
        timeline, n = self._timeline, len(self._timeline)
        stop_at = self._written + frames
        while (due := self._scheduler.next_due()) < n:
            if self._written >= stop_at and self._recorder.requests:
                break
            stop = written_with(timeline, due)
            self._ring.append(
                timeline.frames[self._written : stop],
                timeline.times_s[self._written : stop],
                timeline.valid[self._written : stop],
                pylsl.local_clock(),
            )
            self._written = stop
            self._feed_stats(stop - 1)
            self._scheduler.run_due()
        requests, self._recorder.requests = self._recorder.requests, []
        return requests


def _same_optional(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return np.array_equal(a, b)
