"""The ingest stage: one thread moves samples from the LSL stream into the ring buffer.

Design choices forced by LSL's behaviour (see DESIGN.md, "Pitfalls"):

- The inlet buffer is kept small and drained on every pull, so the ring always ends at the
  newest sample; a closed loop must never run on data that queued up. Data can queue before
  the inlet too (a link slower than the stream leaves the source's outlet a backlog), and then
  the newest sample arrives long after it was taken: a chunk is available from the earlier of
  its arrival and its newest (clock-corrected) timestamp, and its age counts from there.
- Stream loss is detected here (no data for ``lost_after_s``), not by waiting for pylsl's
  recovery, which makes a dead stream look like a quiet one. The inlet is then dropped and the
  stream re-resolved by the same name/type/source_id until it comes back.
- Samples land in a preallocated buffer (pylsl ``dest_obj``): no Python object per sample.
- The rate a stream declares is checked when it opens; the rate its timestamps keep is measured
  as they come (``service.core.rate_meter``): a stream stamped at 200 Hz that declares 277.78 Hz
  has no gaps, so only its measured rate says that the frames are on the wrong time base.
- A sample cannot arrive before it was taken: one stamped (clock-corrected) more than
  :data:`MAX_STAMP_LEAD_S` after it arrived comes from a source whose clock runs ahead of this
  host's LSL clock. Its age is still counted from its arrival (never below zero), but its
  stamps place no train's artefact: the stream is not ready (:meth:`Ingestor.stamp_lead_problem`)
  until the lead has held within the limit for ``service.core.stamp_lead.HOLD_OFF_S``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pylsl
from prometheus_client import CollectorRegistry
from pylsl.util import LostError

from service.core.channel_map import ChannelMap
from service.core.checks import preview_items
from service.core.gaps import fill_gaps, find_gaps, is_regular, placed_at, timestamp_steps
from service.core.grid import DEFAULT_GRID, ElectrodeGrid
from service.core.non_finite import hold_non_finite
from service.core.rate_limited_log import RateLimitedLog
from service.core.rate_meter import RateMeter
from service.core.stamp_lead import HOLD_OFF_S, MAX_STAMP_LEAD_S, StampLead
from service.core.thread_placement import ThreadPlacement
from service.core.worker import BackgroundWorker
from service.ingest.lsl import (
    AmbiguousStreamError,
    ChunkPuller,
    StreamFormatError,
    StreamNotFoundError,
    check_format,
    describe,
    near_misses,
    resolve,
    wanted,
)
from service.ingest.metrics import IngestMetrics
from service.ingest.ring_buffer import RingBuffer, Window
from service.ingest.settings import IngestSettings, StreamSettings

__all__ = [
    "AmbiguousStreamError",
    "IngestStatus",
    "Ingestor",
    "StreamFormatError",
    "StreamNotFoundError",
]

_log = logging.getLogger("corticast.ingest")

_POLL_S = 0.02
"""Longest the worker blocks waiting for data before re-checking for loss and stop requests."""


@dataclass
class _DeferredOpen:
    """The stream :meth:`Ingestor.start` found, opened by the worker after its placement;
    ``done`` once it tried, with what it refused in ``error``."""

    info: pylsl.StreamInfo
    done: threading.Event = field(default_factory=threading.Event)
    error: Exception | None = None


@dataclass(frozen=True)
class IngestStatus:
    """What a caller (health endpoint, CLI, test) needs to judge the data feed."""

    running: bool
    connected: bool
    fresh: bool
    newest_age_s: float
    frames_written: int
    samples: int
    chunks: int
    missing_frames: int
    blanked_frames: int
    """Measured frames blanked as stimulation artefact (``RingBuffer.blank``)."""
    gaps: int
    reconnects: int
    out_of_order: int
    held_electrodes: tuple[tuple[int, int], ...]
    """Electrodes (row, col) whose newest value was NaN or infinite, held at their last
    finite value (a broken contact)."""
    measured_rate_hz: float
    rate_problem: str | None
    stamp_lead_s: float
    """How far the newest chunk's newest sample was stamped after it arrived (negative: before,
    as a source on the LSL clock stamps); NaN before the first on this connection."""
    stamp_lead_problem: str | None
    stream: str | None
    positions_from_metadata: bool | None
    error: str | None


class Ingestor(BackgroundWorker):
    """Reads the acquisition stream into a :class:`RingBuffer` on a background thread.

    Parameters
    ----------
    stream
        Which stream to read and the rate it must declare.
    ingest
        Buffer sizes and the staleness / loss thresholds.
    grid
        Electrode geometry the stream must fill.
    registry
        Where the ``corticast_ingest_*`` metrics are registered (a fresh one if None).
    cost_history
        How many recent per-chunk costs to keep for :meth:`chunk_costs`.
    placement
        CPUs and real-time priority of the ingest thread (``[realtime]``); None: the
        process's.
    wait_for_stream
        If no stream is found at :meth:`start`, keep looking on the worker thread (the
        daemon, which must come up before the rig) instead of raising.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        stream: StreamSettings | None = None,
        ingest: IngestSettings | None = None,
        *,
        grid: ElectrodeGrid = DEFAULT_GRID,
        registry: CollectorRegistry | None = None,
        cost_history: int = 4096,
        wait_for_stream: bool = False,
        placement: ThreadPlacement | None = None,
    ) -> None:
        super().__init__("corticast-ingest", placement=placement)
        self._wait_for_stream = wait_for_stream
        self.stream_settings = stream or StreamSettings()
        self.settings = ingest or IngestSettings()
        self.grid = grid
        self.period = 1.0 / self.stream_settings.sample_rate_hz
        capacity = max(
            1, math.ceil(self.settings.ring_seconds * self.stream_settings.sample_rate_hz)
        )
        self.ring = RingBuffer(capacity, grid)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = IngestMetrics(self.registry)
        self.metrics.track_staleness(self.newest_age_s)
        self.metrics.track_blanked(lambda: self.ring.blanked_frames)
        self._rate = RateMeter(
            self.stream_settings.sample_rate_hz,
            self.settings.rate_tolerance,
            self.settings.rate_window_s,
        )
        self.metrics.track_rate(lambda: self._rate.measured_hz)

        max_chunk = self.settings.max_chunk_samples
        self._pull_buffer = np.zeros((max_chunk, grid.n_channels), dtype=np.float32)
        self._timestamp_buffer = np.zeros(max_chunk, dtype=np.float64)
        self._step_buffer = np.zeros(max_chunk, dtype=np.float64)
        self._frame_buffer = np.zeros((max_chunk, *grid.shape), dtype=np.float32)
        self._all_valid = np.ones(max_chunk, dtype=np.bool_)
        self._costs = np.full(cost_history, np.nan)
        self._cost_count = 0

        self._inlet: pylsl.StreamInlet | None = None
        self._puller: ChunkPuller | None = None
        self._channel_map: ChannelMap | None = None
        self._stream_description: str | None = None
        self._previous_timestamp: float | None = None
        self._last_data_clock = 0.0
        self._has_connected = False
        self._resumed = False
        self._close_lock = threading.Lock()
        self._non_finite_log = RateLimitedLog(_log)
        self._held_log = RateLimitedLog(_log)
        self._held_electrodes: tuple[tuple[int, int], ...] = ()
        self._untimed_log = RateLimitedLog(_log)
        self._jump_log = RateLimitedLog(_log)
        self._backward_log = RateLimitedLog(_log)
        self._late_log = RateLimitedLog(_log)
        self._rate_log = RateLimitedLog(_log)
        self._rate_was_off = False
        self._stamp_lead = StampLead()
        self.metrics.track_stamp_lead(lambda: self._stamp_lead.newest_s)
        self._ahead_log = RateLimitedLog(_log)
        self._deferred: _DeferredOpen | None = None

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> Ingestor:
        """Find the stream, open it and start the worker thread.

        Raises
        ------
        StreamNotFoundError
            If no matching stream appears within ``stream.resolve_timeout_s``.
        AmbiguousStreamError
            If more than one stream matches (found on a reconnect, it ends the thread).
        StreamFormatError
            If the stream found has the wrong channel count, format or rate, or a channel
            layout that does not fit the grid.
        RuntimeError
            If already running.
        """
        super().start()
        deferred = self._deferred
        if deferred is not None:  # opened on the worker: its refusal is the caller's all the same
            while not deferred.done.wait(_POLL_S) and self.running:
                pass  # until it tried, or ended before it could (reported as any failure)
            if deferred.error is not None:
                self.stop()
                raise deferred.error
        return self

    def _prepare(self) -> None:
        # Waiting for the stream happens on the worker thread, in short attempts, so start()
        # (and a stop() right after it) never blocks for the whole resolve timeout.
        self._deferred = None
        timeout = (
            self.settings.reconnect_timeout_s
            if self._wait_for_stream
            else self.stream_settings.resolve_timeout_s
        )
        info = resolve(self.stream_settings, timeout)
        if info is None and self._wait_for_stream:
            _log.warning(
                "no LSL stream with %s yet; still looking for it: is the rig running "
                "(`corticast rig`) and on this network, and do [stream] name, type and source_id "
                "match it?",
                wanted(self.stream_settings),
            )
            return
        if info is None:
            raise StreamNotFoundError(
                f"no LSL stream with {wanted(self.stream_settings)} appeared within "
                f"{self.stream_settings.resolve_timeout_s:g} s; is the rig running "
                f"(`corticast rig`) and on this network? " + near_misses(self.stream_settings)
            )
        if self._wait_for_stream and self._placement is not None:
            # Refused here as it would be without a placement, but opened on the worker thread,
            # after its placement: the threads liblsl starts for the inlet (the one that
            # receives the data) inherit its CPUs and priority.
            check_format(info, self.stream_settings, self.grid)
            self._deferred = _DeferredOpen(info)
            return
        self._open(info)

    # ----------------------------------------------------------------- readers
    def latest(self, n: int) -> Window:
        """The newest ``n`` frames; re-raises a worker failure instead of serving old data."""
        self.raise_if_failed()
        return self.ring.latest(n)

    def newest_age_s(self) -> float:
        """Seconds since the newest frame arrived, or since its timestamp if that is earlier
        (a backlog before the inlet); NaN before the first; never negative.

        The data time is read before the clock: a frame the ingest thread stamps and writes in
        between then only makes the age a little older than it is, never below zero.
        """
        available = self.ring.newest_available
        return pylsl.local_clock() - available

    def is_fresh(self) -> bool:
        """Connected and the newest frame is at most ``stale_after_frames`` periods old."""
        return (
            self._inlet is not None
            and self.running
            and self.newest_age_s() <= self.settings.stale_after_frames * self.period
        )

    def rate_problem(self) -> str | None:
        """Why the stream's rate is not known to be ``[stream] sample_rate_hz`` (not measured
        yet on this connection, or measured outside ``[ingest] rate_tolerance``), naming both
        rates; None when it is. A lost stream keeps its last judgement until the next one
        opens."""
        return self._rate.problem()

    def stamp_lead_problem(self) -> str | None:
        """Why the stream's stamps cannot be placed on this host's LSL clock (a chunk stamped
        more than :data:`MAX_STAMP_LEAD_S` after it arrived, and the lead not within it for
        ``HOLD_OFF_S`` since), naming the last such lead and what to check; None when they
        can. A lost stream keeps its last judgement until the next one opens."""
        beyond = self._stamp_lead.beyond_s()
        return None if beyond is None else _ahead(beyond)

    def chunk_costs(self) -> np.ndarray:
        """Recent per-chunk costs in seconds (drain + map + gap check + ring write), oldest
        first; the wait for data is not included."""
        kept = min(self._cost_count, self._costs.shape[0])
        start = self._cost_count - kept
        index = np.arange(start, self._cost_count) % self._costs.shape[0]
        return self._costs[index].copy()

    def status(self) -> IngestStatus:
        def total(name: str) -> int:
            return int(self.registry.get_sample_value(f"corticast_ingest_{name}_total") or 0)

        return IngestStatus(
            running=self.running,
            connected=self._inlet is not None,
            fresh=self.is_fresh(),
            newest_age_s=self.newest_age_s(),
            frames_written=self.ring.next_seq,
            samples=total("samples"),
            chunks=int(
                self.registry.get_sample_value("corticast_ingest_chunk_cost_seconds_count") or 0
            ),
            missing_frames=total("missing_frames"),
            blanked_frames=self.ring.blanked_frames,
            gaps=total("gaps"),
            reconnects=total("reconnects"),
            out_of_order=total("out_of_order"),
            held_electrodes=self._held_electrodes,
            measured_rate_hz=self._rate.measured_hz,
            rate_problem=self._rate.problem(),
            stamp_lead_s=self._stamp_lead.newest_s,
            stamp_lead_problem=self.stamp_lead_problem(),
            stream=self._stream_description,
            positions_from_metadata=(
                None if self._channel_map is None else self._channel_map.from_metadata
            ),
            error=None if self._error is None else f"{type(self._error).__name__}: {self._error}",
        )

    # ----------------------------------------------------------------- worker
    def _work(self) -> None:
        deferred = self._deferred
        if deferred is not None:
            try:
                self._open(deferred.info)
            except Exception as err:  # start() raises it and stops this thread
                deferred.error = err
                return
            finally:
                deferred.done.set()
        while not self._stop_requested.is_set():
            if self._inlet is None:
                self._reconnect()
            else:
                self._pull()

    def _finished(self) -> None:
        self._close()

    def _release(self) -> None:
        self._close()

    def _pull(self) -> None:
        puller = self._puller
        max_chunk = self._pull_buffer.shape[0]
        try:
            if puller.pull(0, 1, _POLL_S) == 0:
                if pylsl.local_clock() - self._last_data_clock > self.settings.lost_after_s:
                    self._lose(f"no data for {self.settings.lost_after_s:g} s")
                return
            started = time.perf_counter()
            n = 1 if max_chunk == 1 else 1 + puller.pull(1, max_chunk - 1, 0.0)  # drain the rest
        except LostError:
            self._lose("LSL reports the source lost")
            return
        self._last_data_clock = arrival = pylsl.local_clock()
        self._write(self._pull_buffer[:n], self._timestamp_buffer[:n], arrival)
        cost = time.perf_counter() - started
        self._costs[self._cost_count % self._costs.shape[0]] = cost
        self._cost_count += 1
        self.metrics.chunk_cost.observe(cost)

    def _write(self, samples: np.ndarray, timestamps: np.ndarray, arrival: float) -> None:
        n = samples.shape[0]
        frames = self._channel_map.to_frames(samples, out=self._frame_buffer[:n])
        stamps = timestamps.tolist()
        if not all(map(math.isfinite, stamps)):  # before the holds: none lends a channel a value
            frames, timestamps = self._drop_untimed(frames, timestamps, np.isfinite(timestamps))
            if timestamps.shape[0] == 0:
                self.metrics.samples.inc(n)
                return
            stamps = timestamps.tolist()
        lead = stamps[-1] - arrival
        self._stamp_lead.add(lead, arrival)
        if lead > MAX_STAMP_LEAD_S:
            self._ahead_log.log(
                logging.WARNING, "stream %s: %s", self._stream_description, _ahead(lead)
            )
        elif -lead > self.settings.stale_after_frames * self.period:
            self._late_log.log(
                logging.WARNING,
                "stream %s: newest sample stamped %.3f s before it arrived (data queued before "
                "the inlet, or a source not stamping on the LSL clock); its age counts from "
                "its timestamp",
                self._stream_description, -lead,
            )  # fmt: skip
        if self.ring.blanking and len(stamps) > 1:
            # A NaN held, or a gap's placeholder, takes the frame before it: one by one, that
            # is the ring's, held where the ring blanked it, never a blanked frame's artefact.
            for k in range(len(stamps)):
                self._store(frames[k : k + 1], timestamps[k : k + 1], stamps[k : k + 1], arrival)
        else:
            self._store(frames, timestamps, stamps, arrival)
        # Counted last: a status that counts a sample has its frame, gap and counts in place.
        self.metrics.samples.inc(n)

    def _store(
        self, frames: np.ndarray, timestamps: np.ndarray, stamps: list[float], arrival: float
    ) -> None:
        """Hold the frames' non-finite values, fill their gaps and write them to the ring."""
        n = frames.shape[0]
        # Read before the frame the holds take values from: a blank landing between that read
        # and the append has the ring take them again (``RingBuffer.append``).
        rewrites = self.ring.rewrites
        valid, held = self._hold_non_finite(frames)
        # A sample is no newer than its own time: one that queued before the inlet is old
        # (the ring keeps the earlier of its stamp and the arrival as the data time).
        newest_stamp = stamps[-1]
        previous = self._previous_timestamp
        if self._resumed and previous is not None:
            previous = min(previous, self._before_outage(float(timestamps[0]), arrival))
        if is_regular(previous, stamps, self.period):
            self.ring.append(frames, timestamps, valid, arrival, newest_stamp, held, rewrites)
            # The first step after a (re)connect has no predecessor here, or one that spans it.
            if previous is None or self._resumed:
                judged = self._rate.add_run(n - 1, stamps[-1] - stamps[0])
            else:
                judged = self._rate.add_run(n, stamps[-1] - previous)
            if judged:
                self._report_rate()
        else:
            self._append_irregular(
                frames, timestamps, valid, held, previous, arrival, newest_stamp, rewrites
            )
        self._resumed = False
        self._previous_timestamp = float(timestamps[-1])

    def _before_outage(self, first: float, arrival: float) -> float:
        """Where the frames before a reconnect end, at the latest, on the clock of the frames
        after it: the outage, timed on the local clock from the last frame before it to this
        chunk, before ``first``. A source that came back stamping from an earlier time (a
        restarted source on a new clock), straight on from its last frame (stamps counted
        from its samples) or from less after it than the outage lasted (a new clock offset)
        would otherwise show no gap, or too short a one: the outage is a gap filled as on the
        same clock, with placeholders stamped on the new one, and no window splices the two
        connections' frames as if they were one run."""
        outage = max(0.0, arrival - self.ring.newest_arrival)
        return first - max(2, round(outage / self.period)) * self.period

    def _drop_untimed(
        self, frames: np.ndarray, timestamps: np.ndarray, timed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The samples of a chunk whose timestamp is finite. LSL carries a NaN or infinite
        timestamp as sent; such a sample cannot be placed in time (an infinite one would count
        2**63 missing frames and flush the ring with placeholders), so it is dropped, counted
        with the non-finite frames and logged, and the slot it leaves is filled as any gap's."""
        dropped = int(timestamps.shape[0] - np.count_nonzero(timed))
        self.metrics.non_finite_frames.inc(dropped)
        self._untimed_log.log(
            logging.WARNING,
            "stream %s: %d sample(s) with a non-finite timestamp (first %r), dropped as missing",
            self._stream_description, dropped, float(timestamps[~timed][0]),
        )  # fmt: skip
        return frames[timed], timestamps[timed]

    def _hold_non_finite(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The validity of ``frames``, their NaN and infinite values (an amplifier fault)
        replaced as ``service.core.non_finite`` rules: held at the channel's last finite value
        in a frame that stays data, the frame before held over in one with more than
        ``[ingest] max_non_finite_fraction`` of its channels non-finite, kept as missing (the
        model refuses a non-finite window, and every stage after it would see it); and which
        values were held (None: none), which the ring re-holds where a later blank takes the
        value they held. Counted, the electrodes held now kept for :meth:`status`, and each
        kind logged at most every 10 s with the electrodes."""
        n = frames.shape[0]
        if np.isfinite(frames).all():
            if self._held_electrodes:
                self._held_electrodes = ()
                self.metrics.held_channels.set(0)
            return self._all_valid[:n], None
        non_finite = ~np.isfinite(frames)
        previous = self.ring.latest(1).frames[0] if self.ring.next_seq else None
        fraction = self.settings.max_non_finite_fraction
        result = hold_non_finite(frames, previous, fraction)
        self._held_electrodes = _cells(result.newest)
        self.metrics.held_channels.set(len(self._held_electrodes))
        held = int(result.held.sum())
        if held:
            self.metrics.held_values.inc(held)
            self._held_log.log(
                logging.WARNING,
                "stream %s: %s sent NaN or infinite values, held at their last finite value "
                "(the frames stay data)",
                self._stream_description, self._describe(result.held > 0),
            )  # fmt: skip
        missing = n - int(np.count_nonzero(result.valid))
        if missing:
            self.metrics.non_finite_frames.inc(missing)
            self._non_finite_log.log(
                logging.WARNING,
                "stream %s: %d frame(s) with more than %g of their electrodes NaN or infinite "
                "([ingest] max_non_finite_fraction), kept as missing",
                self._stream_description, missing, fraction,
            )  # fmt: skip
        return result.valid, non_finite | ~result.valid[:, None, None]

    def _describe(self, cells: np.ndarray) -> str:
        """Electrodes marked in ``cells`` (rows, cols), by grid position and stream channel."""
        where = np.argwhere(cells)
        channels = self._channel_map.source_of_cell[where[:, 0] * cells.shape[1] + where[:, 1]]
        return (
            f"electrodes (row, col) [{preview_items(_cells(cells))}] "
            f"(stream channels [{preview_items(channels.tolist())}])"
        )

    def _append_irregular(
        self,
        frames: np.ndarray,
        timestamps: np.ndarray,
        valid: np.ndarray,
        held: np.ndarray | None,
        previous: float | None,
        arrival: float,
        newest_stamp: float,
        rewrites: int,
    ) -> None:
        """Count and log backward steps, fill gaps with invalid placeholder frames, then
        append (arrived at ``arrival``, its newest sample stamped ``newest_stamp``, the values
        ``held`` as :meth:`_hold_non_finite` held them, the ring's ``rewrites`` as read before
        them)."""
        n = frames.shape[0]
        steps = timestamp_steps(previous, timestamps, self.period, self._step_buffer[:n])
        if self._rate.add_steps(steps if previous is not None and not self._resumed else steps[1:]):
            self._report_rate()
        backward = int(np.count_nonzero(steps <= 0))
        if backward:
            self.metrics.out_of_order.inc(backward)
            self._backward_log.log(
                logging.WARNING,
                "stream %s: %d sample(s) stamped at or before the sample before (repeated or "
                "backward timestamps, first step %.6f s), kept in the order they came",
                self._stream_description, backward, float(steps[steps <= 0][0]),
            )  # fmt: skip
        positions, missing = find_gaps(steps, self.period)
        if positions.shape[0] == 0:
            self.ring.append(frames, timestamps, valid, arrival, newest_stamp, held, rewrites)
            return
        missing = self._at_most_possible(missing, steps[positions], arrival)
        filled = fill_gaps(
            frames,
            timestamps,
            positions,
            missing,
            previous_frame=self.ring.latest(1).frames[0] if previous is not None else frames[0],
            previous_timestamp=previous,
            period=self.period,
            max_fill=self.ring.capacity,
            valid=valid,
        )
        # A placeholder's every value is held (the frame before), the frames' as they were.
        spread = np.ones((filled[0].shape[0], *frames.shape[1:]), dtype=np.bool_)
        placed = placed_at(n, positions, missing, self.ring.capacity)
        spread[placed] = False if held is None else held
        held = spread
        self.ring.append(*filled, arrival, newest_stamp, held, rewrites)
        self.metrics.gaps.inc(positions.shape[0])
        self.metrics.missing_frames.inc(int(missing.sum()))

    def _at_most_possible(
        self, missing: np.ndarray, steps: np.ndarray, arrival: float
    ) -> np.ndarray:
        """The frames missing in each gap, at most as many as the source could have made since
        the chunk before arrived (the local clock's time since, plus the inlet's buffer): a
        step further is a clock step or a bad timestamp, not samples lost, and filled as it
        was it overwrote the ring's whole history of real frames with placeholders. Such a
        step is still a gap (no window runs across it as one run), and logged."""
        previous = self.ring.newest_arrival
        since = 0.0 if math.isnan(previous) else arrival - previous
        limit = max(1, round((since + self.settings.inlet_buffer_s) / self.period))
        over = missing > limit
        if not over.any():
            return missing
        self._jump_log.log(
            logging.WARNING,
            "stream %s: timestamps step %.3f s from one sample to the next, %.3f s after the "
            "chunk before arrived: a clock step or a bad timestamp, not %d lost samples; "
            "marked %d missing",
            self._stream_description, float(steps[over][0]), since, int(missing[over][0]),
            limit,
        )  # fmt: skip
        return np.minimum(missing, limit)

    def _report_rate(self) -> None:
        """After each new judgement of the rate: a warning while it is out of tolerance (at
        most every 10 s), a line when it is back within it."""
        problem = self._rate.problem()
        if problem is not None:
            self._rate_log.log(logging.WARNING, "stream %s: %s", self._stream_description, problem)
        elif self._rate_was_off:
            _log.warning(
                "stream %s: rate %.2f Hz, back within [ingest] rate_tolerance of %g Hz",
                self._stream_description, self._rate.measured_hz, self._rate.expected_hz,
            )  # fmt: skip
        self._rate_was_off = problem is not None

    def _reconnect(self) -> None:
        info = resolve(self.stream_settings, self.settings.reconnect_timeout_s)
        if info is None or self._stop_requested.is_set():
            return
        try:
            self._open(info)
        except (LostError, pylsl.util.TimeoutError) as err:
            # Found, then gone before it opened (a rig that died again just after it started):
            # looked for again, as any lost stream, instead of ending the thread.
            _log.warning(
                "stream %s went before it could be opened (%s); still looking for it",
                describe(info), err,
            )  # fmt: skip

    def _open(self, info: pylsl.StreamInfo) -> None:
        check_format(info, self.stream_settings, self.grid)
        inlet = pylsl.StreamInlet(
            info,
            max_buflen=self.settings.inlet_buffer_s,
            recover=False,
            processing_flags=pylsl.proc_clocksync,
        )
        timeout = self.stream_settings.resolve_timeout_s
        full_info = inlet.info(timeout)  # resolve results lack desc; the channel layout is there
        try:
            channel_map = ChannelMap.from_stream_xml(full_info.as_xml(), self.grid)
        except ValueError as err:
            raise StreamFormatError(f"stream {describe(info)}: {err}") from None
        # The first clock-offset estimate blocks for ~0.6 s; taken inside the first pull, it
        # would let the small inlet buffer overflow. Take it before data starts flowing.
        inlet.time_correction(timeout)
        inlet.open_stream(timeout)
        if not channel_map.from_metadata:
            _log.warning("stream %s has no electrode positions; assuming row-major", describe(info))
        if channel_map.uv_per_unit != 1.0:
            _log.info(
                "stream %s: samples x %g to microvolts", describe(info), channel_map.uv_per_unit
            )
        self._channel_map = channel_map
        self._stream_description = describe(info)
        self._rate.reset()  # this connection's stream is measured afresh
        self._rate_was_off = False
        self._stamp_lead.reset()
        self._last_data_clock = pylsl.local_clock()
        if self._has_connected:
            self.metrics.reconnects.inc()
            self._resumed = True
        self._has_connected = True
        self._puller = ChunkPuller(inlet, self._pull_buffer, self._timestamp_buffer)
        self._inlet = inlet
        self.metrics.connected.set(1)
        _log.info("reading %s", self._stream_description)

    def _lose(self, why: str) -> None:
        _log.warning("lost stream %s: %s; reconnecting", self._stream_description, why)
        self._close()

    def _close(self) -> None:
        with self._close_lock:
            inlet, self._inlet = self._inlet, None
            self._puller = None
            self.metrics.connected.set(0)
            if inlet is not None:
                inlet.close_stream()


def _ahead(lead: float) -> str:
    """The stamp-lead problem, for readiness, the fault that disarms and the log."""
    return (
        f"stream stamped {lead:.3f} s ahead of this host's LSL clock (a chunk's newest "
        f"sample's timestamp, clock-corrected, after its arrival; clock sync errs by under "
        f"{MAX_STAMP_LEAD_S * 1e3:g} ms; trusted again once within that for "
        f"{HOLD_OFF_S:g} s): check the rig's clock, that its source stamps with "
        f"pylsl.local_clock(), and the LSL clock offset to this host; a train's artefact "
        f"cannot be placed on these stamps"
    )


def _cells(mask: np.ndarray) -> tuple[tuple[int, int], ...]:
    """The (row, col) of each electrode marked in ``mask``, row-major."""
    return tuple((row, col) for row, col in np.argwhere(mask).tolist())
