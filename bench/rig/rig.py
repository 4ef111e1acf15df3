"""A simulated acquisition rig: an LSL outlet that behaves like the µECoG amplifier.

It pushes chunks of float32 µV samples, paced against the wall clock (each chunk is sent when
its last sample is due, as an amplifier sends a block once acquired), with a real LSL timestamp
per sample. It can run faster than real time, drop samples and stall, to exercise the ingestor.

Timestamps follow the source's own timeline: sample ``i`` is stamped ``t0 + t_i`` where ``t_i``
is its time in the session, and sent at wall time ``t0 + t_i / speed``. At ``speed=1`` the two
coincide; faster, the timestamps keep the nominal spacing, so gap detection downstream works the
same at any speed.

Given a :class:`~bench.rig.stimulation_artefact.StimulationArtefact`, it adds the artefact of
the trains the stimulator delivered to the frames it pushes, as a real amplifier records them.
"""

from __future__ import annotations

import threading
from collections.abc import Collection

import numpy as np
import pylsl

from bench.rig.frame_source import FrameSource
from bench.rig.stimulation_artefact import StimulationArtefact
from service.core.checks import check_positive
from service.core.worker import BackgroundWorker

STREAM_TYPE = "ECoG"
_START_LEAD_S = 0.02


class SimulatedRig(BackgroundWorker):
    """Plays a :class:`~bench.rig.frame_source.FrameSource` to an LSL outlet on a thread.

    Parameters
    ----------
    source
        What to play.
    name, source_id
        LSL stream name and the stable source id the ingestor resolves (and re-resolves after a
        restart) by.
    chunk_size
        Samples per pushed chunk, like an amplifier's block size.
    speed
        Multiple of real time.
    drop_indices
        Global sample indices never sent.
    drop_probability
        Chance that any other sample is not sent (seeded by ``seed``).
    stall_at_s, stall_s
        Once the session time passes ``stall_at_s``, send nothing for ``stall_s`` wall seconds,
        then send the backlog at once (a network or driver hiccup).
    scramble_channels
        Send channels in a seeded random order, with each channel's row/col in the metadata, to
        prove consumers place channels by metadata rather than by position.
    max_samples
        Stop after this many samples (sent or dropped); None plays until stopped or the source
        ends.
    wait_for_consumer
        Hold the first sample until an inlet has connected, so a replay or test loses nothing
        to start-up order. A real amplifier does not wait; leave False to behave like one.
    push_log
        Keep the local-clock time each of the first ``push_log`` chunks was handed to liblsl,
        for :meth:`pushed_at`. A chunk goes out a little after its last sample's timestamp (the
        sender's sleep overshoots); a latency measured from the push must not count that.
    artefact
        The stimulation artefact to add to every frame by its timestamp; None adds nothing.
        Real time only (``speed=1``): faster, frames are stamped ahead of the clock the trains
        are delivered on. It is read just before each push, so a train shows on the frames
        pushed after its delivery, as on a rig, where each goes out at about its timestamp.
    """

    def __init__(
        self,
        source: FrameSource,
        *,
        name: str = "corticast-rig",
        source_id: str = "corticast-sim-rig",
        chunk_size: int = 4,
        speed: float = 1.0,
        drop_indices: Collection[int] = (),
        drop_probability: float = 0.0,
        stall_at_s: float | None = None,
        stall_s: float = 0.0,
        scramble_channels: bool = False,
        max_samples: int | None = None,
        wait_for_consumer: bool = False,
        push_log: int = 0,
        artefact: StimulationArtefact | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__("corticast-rig")
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"'chunk_size' must be an integer >= 1, got {chunk_size!r}")
        check_positive("speed", speed)
        if not 0.0 <= drop_probability < 1.0:
            raise ValueError(f"'drop_probability' must be in [0, 1), got {drop_probability!r}")
        if stall_s < 0:
            raise ValueError(f"'stall_s' must be >= 0, got {stall_s!r}")
        if artefact is not None:
            if speed != 1.0:
                raise ValueError(
                    f"'artefact' needs a real-time rig (speed 1): faster, frames are stamped "
                    f"ahead of the clock trains are delivered on, got speed {speed!r}"
                )
            if not artefact.grid.same_array(source.grid):
                raise ValueError(
                    f"'artefact' is for a {artefact.grid.rows}x{artefact.grid.cols} grid, the "
                    f"source plays {source.grid.rows}x{source.grid.cols}"
                )
        self.artefact = artefact
        self.source = source
        self.name = name
        self.source_id = source_id
        self.chunk_size = chunk_size
        self.speed = speed
        self.drop_probability = drop_probability
        self.stall_at_s = stall_at_s
        self.stall_s = stall_s
        self.max_samples = max_samples
        self.wait_for_consumer = wait_for_consumer
        self._drop_indices = np.array(sorted(drop_indices), dtype=np.int64)
        self._rng = np.random.default_rng(seed)
        grid = source.grid
        self.cell_of_channel = (
            self._rng.permutation(grid.n_channels)
            if scramble_channels
            else np.arange(grid.n_channels)
        )

        self.samples_sent = 0
        self.samples_played = 0
        self.dropped: list[int] = []
        self.finished = threading.Event()
        self.playing = threading.Event()
        """Set once the first sample's time is fixed: :attr:`played_from` is known."""
        self.played_from: float | None = None
        """The LSL time the source's time 0 is stamped at (samples at ``speed``)."""
        self._outlet: pylsl.StreamOutlet | None = None
        if not isinstance(push_log, int) or push_log < 0:
            raise ValueError(f"'push_log' must be an integer >= 0, got {push_log!r}")
        self._log_stamps = np.full(push_log, np.nan)
        self._log_pushed = np.full(push_log, np.nan)
        self._logged = 0

    # ----------------------------------------------------------------- lifecycle
    def _prepare(self) -> None:
        self._outlet = pylsl.StreamOutlet(self.stream_info())
        self.finished.clear()
        self.playing.clear()

    def _finished(self) -> None:
        self.finished.set()

    def _release(self) -> None:
        self._outlet = None  # destroying the outlet takes the stream off the network

    def pushed_at(self, timestamps: np.ndarray) -> np.ndarray:
        """Local-clock times at which the samples stamped ``timestamps`` (as an inlet received
        them: within half a sample period of the stamp sent) were pushed; NaN for a sample not
        the newest of its chunk, or not logged (``push_log``)."""
        stamps, pushed = self._log_stamps[: self._logged], self._log_pushed[: self._logged]
        wanted = np.asarray(timestamps, dtype=np.float64)
        if stamps.size == 0:
            return np.full(wanted.shape, np.nan)
        right = np.searchsorted(stamps, wanted).clip(0, stamps.size - 1)
        left = (right - 1).clip(0)
        closer_left = np.abs(stamps[left] - wanted) < np.abs(stamps[right] - wanted)
        nearest = np.where(closer_left, left, right)
        close = np.abs(stamps[nearest] - wanted) <= 0.5 / self.source.sample_rate_hz
        return np.where(close, pushed[nearest], np.nan)

    def push_stalls(self, start: float, end: float, longer_than_s: float) -> int:
        """How many times, between local-clock times ``start`` and ``end``, the sender pushed
        nothing for longer than ``longer_than_s`` (logged pushes only, ``push_log``): the
        instrument's own stalls, which a consumer sees as a stream gone quiet."""
        pushed = self._log_pushed[: self._logged]
        gaps = np.diff(pushed)
        ends = pushed[1:]
        return int(np.count_nonzero((ends >= start) & (ends < end) & (gaps > longer_than_s)))

    def wait_finished(self, timeout: float | None) -> bool:
        """Wait until the source or ``max_samples`` is exhausted (``timeout=None``: however long
        that takes); re-raises a sender failure."""
        done = self.finished.wait(timeout)
        self.raise_if_failed()
        return done

    # ----------------------------------------------------------------- stream metadata
    def stream_info(self) -> pylsl.StreamInfo:
        """The outlet's description: channel labels, units and grid positions in ``desc``."""
        grid = self.source.grid
        info = pylsl.StreamInfo(
            self.name,
            STREAM_TYPE,
            grid.n_channels,
            self.source.sample_rate_hz,
            pylsl.cf_float32,
            self.source_id,
        )
        desc = info.desc()
        desc.append_child_value("manufacturer", "corticast simulated rig")
        channels = desc.append_child("channels")
        rows, cols = grid.row_col()
        for cell in self.cell_of_channel:
            channel = channels.append_child("channel")
            channel.append_child_value("label", grid.label(int(rows[cell]), int(cols[cell])))
            channel.append_child_value("unit", "microvolts")
            channel.append_child_value("type", STREAM_TYPE)
            channel.append_child_value("row", str(int(rows[cell])))
            channel.append_child_value("col", str(int(cols[cell])))
        layout = desc.append_child("grid")
        layout.append_child_value("rows", str(grid.rows))
        layout.append_child_value("cols", str(grid.cols))
        layout.append_child_value("pitch_mm", repr(grid.pitch_m * 1e3))  # every digit
        return info

    # ----------------------------------------------------------------- sender
    def _work(self) -> None:
        if self.wait_for_consumer:
            while not self._outlet.wait_for_consumers(0.05):
                if self._stop_requested.is_set():
                    return
        start = pylsl.local_clock() + _START_LEAD_S
        self.played_from = start
        self.playing.set()
        stall_pending = self.stall_at_s is not None and self.stall_s > 0
        index = 0
        while not self._stop_requested.is_set():
            count = self.chunk_size
            if self.max_samples is not None:
                count = min(count, self.max_samples - index)
            if count <= 0:
                return
            frames, times = self.source.read(index, count)
            if times.shape[0] == 0:
                return
            if stall_pending and times[-1] >= self.stall_at_s:
                stall_pending = False
                if self._stop_requested.wait(self.stall_s):
                    return
            delay = start + times[-1] / self.speed - pylsl.local_clock()
            if delay > 0 and self._stop_requested.wait(delay):
                return
            keep = self._keep_mask(index, times.shape[0])
            if keep.any():
                flat = frames.reshape(frames.shape[0], -1)[keep]
                if self.artefact is not None:
                    flat = flat + self.artefact.at(start + times[keep]).reshape(flat.shape)
                flat = flat[:, self.cell_of_channel]
                stamps = (start + times[keep]).tolist()
                if self._logged < self._log_stamps.shape[0]:
                    self._log_stamps[self._logged] = stamps[-1]
                    self._log_pushed[self._logged] = pylsl.local_clock()
                    self._logged += 1
                self._outlet.push_chunk(flat, stamps)
            self.samples_sent += int(keep.sum())
            index += times.shape[0]
            self.samples_played = index

    def _keep_mask(self, first: int, count: int) -> np.ndarray:
        index = np.arange(first, first + count)
        drop = np.isin(index, self._drop_indices)
        if self.drop_probability > 0:
            drop |= self._rng.random(count) < self.drop_probability
        self.dropped.extend(int(i) for i in index[drop])
        return ~drop
