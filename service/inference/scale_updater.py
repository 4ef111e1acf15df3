"""Keeps a robust-online model's input statistics current, from the ring, off the hot path.

A median and MAD over 30 s x 360 electrodes cost tens of milliseconds, more than a frame
period, so they are never computed in the scheduler thread. This worker sleeps on the ring
until the next refresh boundary (a multiple of ``update`` frames, as in
:func:`service.core.robust_scale.causal_stats`), takes the statistics of the ``window`` frames
before it (missing frames ignored) and hands them to the predictor's
:class:`~service.inference.predictor.Normaliser` in one assignment. So the daemon uses the same
statistics as the fast replay and training for every window, a few milliseconds (one
computation) later than they do.

The window (30 s by default) is longer than the ring needs to be (``[ingest] ring_seconds``,
10 s by default), so the worker keeps its own copy of it, filled from the ring at each refresh
(which only needs the last ``update`` frames to still be there). A model attached mid-stream
(started, swapped in, reloaded) starts from what the ring holds; frames the ring no longer had
count as missing until the window has turned over once.

Not frozen while stimulation is armed: the stimulation policy reads the prediction in µV,
which the model's output is mapped back to with the same statistics its input was scaled by,
so a seizure that inflates the MAD shrinks what the model sees without changing what the
policy sees; frozen statistics would instead push a seizure's large inputs past the tanh range
the model can express, and an armed session lasting hours would lose the tracking of gain drift
the scheme exists for. The median / MAD ignore a burst shorter than half the window.
"""

from __future__ import annotations

import threading

import numpy as np

from service.core.robust_scale import refresh_boundary, robust_stats
from service.core.worker import BackgroundWorker
from service.inference.predictor import Normaliser
from service.ingest.ring_buffer import RingBuffer

_WAIT_S = 0.1
"""Longest the loop blocks on the ring before re-checking for a stop request."""


class ScaleUpdater(BackgroundWorker):
    """Background thread: ring -> robust statistics -> the attached model's normaliser.

    Parameters
    ----------
    ring
        Where the ingestor writes frames.
    sample_rate_hz
        Nominal frame rate: turns the model's seconds into frames.
    niceness
        Raised nice value of the thread: the statistics can wait, the scheduler cannot.
    """

    def __init__(self, ring: RingBuffer, sample_rate_hz: float, *, niceness: int = 5) -> None:
        super().__init__("corticast-scale-updater", niceness=niceness)
        self._ring = ring
        self._rate = sample_rate_hz
        self._lock = threading.Lock()
        self._target: Normaliser | None = None
        self._window = self._update = self._least = 0
        self._frames = np.zeros((0, 0, 0), dtype=np.float32)
        """The last ``window`` frames up to the latest boundary, at slot ``seq % window``."""
        self._valid = np.zeros(0, dtype=np.bool_)
        self._boundary = 0
        self.refreshes = 0
        """Refreshes that produced statistics, since the last :meth:`attach`."""

    def attach(self, normaliser: Normaliser) -> None:
        """Feed ``normaliser`` from now on (nothing for a fixed model), refreshing it at once
        in the caller's thread, so a model swapped in is ready as soon as the ring allows."""
        with self._lock:
            self._target = None
            if normaliser.online is None:
                return
            window, update, least = normaliser.online.frames(self._rate)
            self._window, self._update, self._least = window, update, least
            self._frames = np.zeros((window, *normaliser.shape), dtype=np.float32)
            self._valid = np.zeros(window, dtype=np.bool_)
            self._boundary = 0
            self.refreshes = 0
            self._target = normaliser
            self._refresh()

    def not_ready_reason(self) -> str | None:
        """Why the attached model cannot predict (yet), or None (ready, or fixed)."""
        if self._error is not None:
            return f"model input statistics updater failed: {self._error}"
        target = self._target
        if target is None or target.stats is not None:
            return None
        return (
            f"model input statistics not there yet: robust-online normalisation needs "
            f"{target.online.min_s:g} s of valid frames"
        )

    def _work(self) -> None:
        while not self._stop_requested.is_set():
            with self._lock:
                due = self._boundary + self._update if self._target is not None else None
            if due is None or not self._ring.wait_for(due - 1, timeout=_WAIT_S):
                if due is None:
                    self._stop_requested.wait(_WAIT_S)
                continue
            with self._lock:
                self._refresh()

    def _refresh(self) -> None:
        """Statistics at the newest boundary, if it is new; the caller holds the lock."""
        newest = self._ring.next_seq - 1
        if self._target is None or newest < 0:
            return
        boundary = refresh_boundary(newest, self._update)
        if boundary <= self._boundary:
            return
        first = max(0, boundary - self._window)
        start = max(self._boundary, first)  # what the copy lacks
        self._boundary = boundary
        slots = np.arange(start, boundary) % self._window
        self._valid[slots] = False  # until read: frames the ring no longer holds stay missing
        new = self._ring.read_since(start, max_frames=boundary - start)
        before = new.seq < boundary
        slots = new.seq[before] % self._window
        self._frames[slots] = new.frames[before]
        self._valid[slots] = new.valid[before]
        order = np.arange(first, boundary) % self._window
        stats = robust_stats(self._frames[order], self._valid[order], self._least)
        if stats is not None:
            self._target.set_stats(*stats)
            self.refreshes += 1
