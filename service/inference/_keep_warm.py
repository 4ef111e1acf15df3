"""Keep a model warm: run it at load, and on a GPU whenever nobody has for a while.

A model's first runs are orders of magnitude slower than its steady state (allocations, kernel
selection), and a GPU that has idled drops its clocks, so a session's first call after a pause
is slow too; in a closed loop the first prediction after a quiet spell is exactly the one that
matters. :class:`WarmPredictor` is what every backend shares about this: one lock around the
model, :data:`WARMUP_RUNS` runs at load, and a :class:`KeepWarm` worker that runs a dummy
prediction whenever the predictor has been idle for ``keep_warm_s``.

A keep-warm run that raises ends that thread: the model failed a run (a GPU fault, a session
gone bad), and the next real one would meet the same fault, or, on a healthy model, run cold
after every quiet spell with nothing said. Either way the next real prediction raises it
(:meth:`WarmPredictor._check_kept_warm`), so it is the predictor's fault like any failed run:
the scheduler ends, the supervisor disarms, counts a ``predictor`` fault and reloads the model,
whose new predictor keeps itself warm again. No supervisor step of its own is needed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from service.core.worker import BackgroundWorker

WARMUP_RUNS = 50
"""Model runs at load, after which a call has its steady-state latency."""


class KeepWarm(BackgroundWorker):
    """Calls ``run_once`` (under ``lock``) after every ``idle_s`` without a real call.

    The owner calls :meth:`touch` after each real prediction, under the same lock, so a warm-up
    run never delays a real one by more than one inference.
    """

    def __init__(self, run_once: Callable[[], object], lock: threading.Lock, idle_s: float) -> None:
        super().__init__("corticast-keep-warm")
        if not idle_s > 0:
            raise ValueError(f"'idle_s' must be > 0, got {idle_s!r}")
        self._run_once = run_once
        self._lock = lock
        self._idle_s = idle_s
        self._last_use = time.monotonic()
        self.runs = 0

    def touch(self) -> None:
        self._last_use = time.monotonic()

    def _work(self) -> None:
        while not self._stop_requested.wait(self._idle_s / 4):
            if time.monotonic() - self._last_use < self._idle_s:
                continue
            with self._lock:
                self._run_once()
                self.touch()
                self.runs += 1


class WarmPredictor:
    """Base of every predictor: the lock its model runs under, warm-up and keep-warm.

    A subclass implements :meth:`_warm_once` (one run of the model on whatever its input
    buffers hold), calls :meth:`_warm` once it can run, holds ``self._lock`` around every real
    run, calls :meth:`_check_kept_warm` before each and :meth:`_used` after each.
    """

    warmup_runs = WARMUP_RUNS
    """Runs of :meth:`_warm_once` in :meth:`warmup`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keep_warm: KeepWarm | None = None

    def warmup(self) -> None:
        """Run the model enough times that the next call has its steady-state latency."""
        with self._lock:
            for _ in range(self.warmup_runs):
                self._warm_once()

    def close(self) -> None:
        """Stop the keep-warm thread, if one runs; idempotent."""
        if self._keep_warm is not None:
            self._keep_warm.stop()
            self._keep_warm = None

    def _warm(self, keep_warm_s: float | None, *, at_load: bool = True) -> None:
        """Warm up now and, unless ``keep_warm_s`` is None, run the model whenever it has been
        idle that long; neither unless ``at_load`` (the owner calls :meth:`warmup` itself before
        the calls it times, or never runs the model: a batched replay only reads its ``info``)."""
        if not at_load:
            return
        self.warmup()
        if keep_warm_s is not None:
            self._keep_warm = KeepWarm(self._warm_once, self._lock, keep_warm_s).start()

    def _check_kept_warm(self) -> None:
        """Raise what ended the keep-warm thread, if anything did (see the module docstring);
        called under the lock before each real run."""
        if self._keep_warm is not None:
            self._keep_warm.raise_if_failed()

    def _used(self) -> None:
        """Note a real run (under the lock): the keep-warm thread waits a whole idle spell."""
        if self._keep_warm is not None:
            self._keep_warm.touch()

    def _warm_once(self) -> None:
        raise NotImplementedError
