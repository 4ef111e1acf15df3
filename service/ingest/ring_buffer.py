"""Fixed-size store of the newest frames: one writer (the ingest thread), many readers.

Every slot is preallocated; a write copies into it under a short lock, and a reader copies the
frames it asks for under the same lock, so a reader never sees a half-written chunk and the
writer never waits on a slow consumer for longer than one copy.

Frames can be *blanked*: marked missing, as a dropped sample is, for an interval of time
(:meth:`RingBuffer.blank`). The loop blanks the stimulator's trains: their artefact is no
measurement of cortex, and every stage already leaves missing frames out. The ring, not its
writer, applies it, under the same lock as the writes: frames already written and frames still
to come are blanked alike, with no chunk slipping between the two.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from service.core.checks import check_array
from service.core.errors import CorticastError
from service.core.gaps import hold_before
from service.core.grid import DEFAULT_GRID, ElectrodeGrid


class NotEnoughFramesError(CorticastError, RuntimeError):
    """Fewer frames have been written than a reader asked for."""


@dataclass(frozen=True, eq=False)
class Window:
    """A consistent copy of consecutive frames, oldest first.

    Attributes
    ----------
    frames
        (n, rows, cols) float32 µV. Missing frames (and blanked ones) hold the last received
        values.
    timestamps
        (n,) float64 LSL time of each frame (nominal time for missing frames).
    valid
        (n,) bool, False where the frame was missing from the stream or blanked.
    seq
        (n,) int64 sequence numbers: one per frame slot since the buffer was created,
        missing frames included, so consecutive frames differ by exactly 1.
    newest_arrival
        Local clock time (``pylsl.local_clock``) of the ring's latest write when the copy was
        taken: when the chunk arrived. For a window from :meth:`RingBuffer.latest` that is
        when its own newest frame arrived; a window from :meth:`RingBuffer.read_since` may end
        before the ring's newest frame.
    newest_available
        The same write's data time, from which the age of anything computed from the window
        is measured: its arrival, or the newest frame's timestamp where that is earlier (the
        ingestor's: data that queued before the inlet is as old as it is).
    held
        (n, rows, cols) bool, True for the values carried over from an earlier frame (a NaN
        held at its channel's last value, every value of a missing frame): no measurement of
        that moment. Only where asked for (:meth:`RingBuffer.read_since`'s ``held``): None
        otherwise, so the loop's reads on its hot path do not unpack them.
    """

    frames: np.ndarray
    timestamps: np.ndarray
    valid: np.ndarray
    seq: np.ndarray
    newest_arrival: float
    newest_available: float
    held: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.seq.shape[0])


class RingBuffer:
    """Preallocated circular buffer of frames, timestamps, validity and sequence numbers.

    Parameters
    ----------
    capacity
        Number of frames kept; older frames are overwritten.
    grid
        Frame geometry.
    """

    ceiling_backlog = 4096
    """The most frames a write leaves for a blank to extend the stamps' running maximum over
    (:meth:`blank`): a write reaching it extends it itself, once in that many frames (15 s at
    the nominal rate), so no blank holds the lock to read an hour of stamps."""

    def __init__(self, capacity: int, grid: ElectrodeGrid = DEFAULT_GRID) -> None:
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"'capacity' must be an integer >= 1, got {capacity!r}")
        self.grid = grid
        self._capacity = capacity
        self._frames = np.zeros((capacity, *grid.shape), dtype=np.float32)
        self._timestamps = np.zeros(capacity, dtype=np.float64)
        self._valid = np.zeros(capacity, dtype=np.bool_)
        # The latest stamp among each slot's frame and every frame held before it: rising
        # along the sequence numbers however the stamps step, so that a blank finds the first
        # frame it may cover by bisection instead of reading every stamp of the ring. Kept for
        # the frames before _ceiling_seq, extended by the blanks (and by a write every
        # ceiling_backlog frames), not every write.
        self._stamp_ceiling = np.full(capacity, -np.inf, dtype=np.float64)
        self._ceiling_seq = 0
        self._next_seq = 0
        self._newest_arrival = float("nan")
        self._newest_available = float("nan")
        # The sequence number each slot's frame had when it was blanked: a slot is blanked
        # while that is its frame's, so writes never need to clear it.
        self._blanked_seq = np.full(capacity, -1, dtype=np.int64)
        # The values each slot's frame carried over from an earlier frame (``append``'s
        # ``held``: a NaN held at its channel's last value, a missing frame's or a gap's
        # placeholder's whole frame), a bit each, and the sequence number of the frame they
        # are for: a blank re-holds them too, from the values before it.
        self._held_seq = np.full(capacity, -1, dtype=np.int64)
        self._held_bits = np.zeros((capacity, (grid.n_channels + 7) // 8), dtype=np.uint8)
        self._blanks: list[tuple[float, float]] = []
        self._blanked_frames = 0
        self._rewrites = 0
        self._lock = threading.Lock()
        self._written = threading.Condition(self._lock)

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def next_seq(self) -> int:
        """Sequence number the next written frame will get (= frames written so far)."""
        return self._next_seq

    @property
    def newest_arrival(self) -> float:
        """Local clock time of the last write; NaN before the first."""
        return self._newest_arrival

    @property
    def newest_available(self) -> float:
        """The last write's data time (:attr:`Window.newest_available`); NaN before the first."""
        return self._newest_available

    @property
    def blanked_frames(self) -> int:
        """Measured frames blanked so far (:meth:`blank`), written before or after their
        blanking; a frame already missing (a dropped sample's placeholder, or one blanked
        before) is not counted again."""
        return self._blanked_frames

    @property
    def rewrites(self) -> int:
        """Times a blank changed frames already written (marked them missing, re-held them):
        a reader that keeps what it read (stream mode's encoder state) starts over when this
        moves, as the frames it was fed are no longer the ring's."""
        return self._rewrites

    @property
    def blanking(self) -> bool:
        """Whether a blanking interval is kept (one without an end, or one not yet passed:
        :meth:`blank`): a frame written now may be blanked."""
        return bool(self._blanks)

    def blank(self, start: float, end: float = math.inf) -> int:
        """Mark every frame stamped in [``start``, ``end``] (the frames' own clock) missing,
        holding the values of the frame before it: those already written and those written
        later. Returns how many measured frames already written it blanked. An interval is
        kept until a frame stamped after its end is written after its end (the writes'
        arrival, on the local clock); one without an end (``inf``) until :meth:`end_blank`
        gives it one."""
        if not (math.isfinite(start) and start <= end):  # a NaN end compares False
            raise ValueError(
                f"a blanking interval must start at a finite time no later than its end, got "
                f"[{start!r}, {end!r}]"
            )
        with self._lock:
            self._add_blank(start, end)
            seqs = np.arange(self._first_stamped_from(start), self._next_seq)
            index = seqs % self._capacity
            stamps = self._timestamps[index]
            blanked = self._blanked_seq[index] == seqs
            newly = (stamps >= start) & (stamps <= end) & ~blanked
            if not newly.any():
                return 0
            self._rewrites += 1
            count = int(np.count_nonzero(newly & self._valid[index]))
            self._blanked_frames += count
            self._blanked_seq[index[newly]] = seqs[newly]
            self._valid[index[newly]] = False
            # Re-held from the first frame newly blanked on: a frame blanked earlier after it
            # may hold its value.
            k = int(np.argmax(newly))
            rest = index[k:]
            before = self._held_frame(int(seqs[k]) - 1)
            self._rehold_carried(seqs[k:], rest, before)  # first: the blanked hold those
            self._frames[rest] = hold_before(self._frames[rest], (blanked | newly)[k:], before)
            return count

    def _rehold_carried(
        self, seqs: np.ndarray, index: np.ndarray, before: np.ndarray | None
    ) -> None:
        """Give the values the frames ``seqs`` (slots ``index``, the first newly blanked on)
        carried over from an earlier frame (``append``'s ``held``) the last value of their
        channel in a frame still measured, now that some are blanked: ``before``'s (the frame
        before them all; zeros where there is none) where none of them is. Written before a
        late blank, a NaN channel, or a gap's placeholder, held the artefact. Under the
        lock."""
        carried = self._held_seq[index] == seqs
        if not carried.any():
            return
        frames = self._frames[index]
        cells = np.unpackbits(self._held_bits[index], axis=1, count=self.grid.n_channels)
        cells = cells.reshape(frames.shape).astype(np.bool_) & carried[:, None, None]
        measured = self._valid[index][:, None, None] & ~cells
        order = np.arange(index.shape[0])[:, None, None]
        source = np.maximum.accumulate(np.where(measured, order, -1), axis=0)
        last = np.take_along_axis(frames, np.maximum(source, 0), axis=0)
        last = np.where(source >= 0, last, 0.0 if before is None else before)
        frames[cells] = last[cells]
        self._frames[index] = frames

    def _first_stamped_from(self, start: float) -> int:
        """The sequence number of the oldest frame held from which on a stamp may be at or
        after ``start``: every frame before it is stamped earlier (``next_seq`` if none may
        be). Bisects the stamps' running maximum, so that a blank on an hour-long ring reads
        the frames since its start, not the hour. Under the lock."""
        self._raise_ceiling()
        low, high = self._oldest_seq(), self._next_seq
        while low < high:
            middle = (low + high) // 2
            if self._stamp_ceiling[middle % self._capacity] >= start:
                high = middle
            else:
                low = middle + 1
        return low

    def _raise_ceiling(self) -> None:
        """Extend the stamps' running maximum over the frames written since it last was: a
        blank's work, or a write's once in :attr:`ceiling_backlog` frames, not every write's, so
        the ingest thread's hot path costs what it did without it. Where the ring overwrote
        frames it never reached, it starts again at the oldest held: no frame before it is
        held. Under the lock."""
        oldest = self._oldest_seq()
        first = max(self._ceiling_seq, oldest)
        if first == self._next_seq:
            return
        before = self._stamp_ceiling[(first - 1) % self._capacity] if first > oldest else -np.inf
        index = np.arange(first, self._next_seq) % self._capacity
        self._stamp_ceiling[index] = np.fmax(np.fmax.accumulate(self._timestamps[index]), before)
        self._ceiling_seq = self._next_seq

    def _oldest_seq(self) -> int:
        """The sequence number of the oldest frame the ring still holds. Under the lock."""
        return max(0, self._next_seq - self._capacity)

    def _held_frame(self, seq: int) -> np.ndarray | None:
        """The frame of sequence number ``seq`` (None where it is not held). Under the lock."""
        if not self._oldest_seq() <= seq < self._next_seq:
            return None
        return self._frames[seq % self._capacity]

    def _add_blank(self, start: float, end: float) -> None:
        """Keep [``start``, ``end``], merged with the finite intervals it overlaps: a tool that
        announces every pulse of a train (100 a second) must not leave a hundred intervals
        for each chunk's write to test. An open one (no end yet) is kept apart, for
        :meth:`end_blank` to find. Under the lock."""
        if math.isinf(end):
            self._blanks.append((start, end))
            return
        kept = []
        for first, last in self._blanks:
            if math.isfinite(last) and first <= end and start <= last:
                start, end = min(start, first), max(end, last)
            else:
                kept.append((first, last))
        kept.append((start, end))
        self._blanks = kept

    def end_blank(self, start: float, end: float) -> None:
        """Give the interval without an end that began at ``start`` its ``end``. Frames
        stamped after ``end`` that were written meanwhile stay blanked: what they held is
        gone. Nothing happens when no such interval is open."""
        if not math.isfinite(end):
            raise ValueError(f"a blanking interval's end must be finite, got {end!r}")
        with self._lock:
            self._blanks = [
                (first, end if first == start and last == math.inf else last)
                for first, last in self._blanks
            ]

    def write(
        self,
        frames: np.ndarray,
        timestamps: np.ndarray,
        valid: np.ndarray,
        arrival: float,
        available: float | None = None,
        held: np.ndarray | None = None,
        rewrites: int | None = None,
    ) -> None:
        """Append frames (n, rows, cols) float32 with their timestamps and validity, arrived
        at ``arrival``, their data time ``available`` (None: ``arrival``; never later);
        ``held`` (n, rows, cols) bool marks the values carried over from an earlier frame (a
        NaN held at its channel's last value, a placeholder's whole frame; None: none), which
        a later blank re-holds from the frames it leaves measured (and ``rewrites``: see
        :meth:`append`).

        Writing more frames than the capacity keeps only the newest ``capacity`` of them, but
        sequence numbers still advance by ``n``.

        An ``arrival`` or ``available`` that is not finite is refused: a NaN one would make
        every later data age, which the interlocks judge, NaN. (The frames' own stamps may be
        anything a stream sends: the blanks are built to bear them.)
        """
        n = check_array("frames", frames, shape=(None, *self.grid.shape), dtype=np.float32).shape[0]
        check_array("timestamps", timestamps, shape=(n,))
        if not math.isfinite(arrival):
            raise ValueError(f"'arrival' must be a finite time, got {arrival!r}")
        if available is not None and not math.isfinite(available):
            raise ValueError(f"'available' must be a finite time or None, got {available!r}")
        check_array("valid", valid, shape=(n,), dtype=np.bool_)
        if held is not None:
            check_array("held", held, shape=(n, *self.grid.shape), dtype=np.bool_)
        self.append(frames, timestamps, valid, arrival, available, held, rewrites)

    def append(
        self,
        frames: np.ndarray,
        timestamps: np.ndarray,
        valid: np.ndarray,
        arrival: float,
        available: float | None = None,
        held: np.ndarray | None = None,
        rewrites: int | None = None,
    ) -> None:
        """:meth:`write` without the argument checks, for the ingest thread's hot path, whose
        arrays are built to the right shape once at start.

        ``rewrites`` is :attr:`rewrites` as the caller read it before it read the frame its
        ``held`` values came from (the newest written): where a blank has rewritten frames
        since (one landing between that read and this write), the held values are taken again
        from the frames as the ring now holds them, never from the artefact the blank took
        away. None: the caller read no frame of the ring's. So are they where this write
        blanks some of its own frames (a blank that came after the caller saw none, on frames
        of this chunk only): those it held were taken from the chunk's frames as they came."""
        n = frames.shape[0]
        if n == 0:
            return
        skip = max(0, n - self._capacity)
        kept = n - skip
        with self._lock:
            blanked = self._blanked(timestamps, arrival) if self._blanks else None
            if blanked is not None:
                self._blanked_frames += int(np.count_nonzero(blanked & valid))
                frames = hold_before(frames, blanked, self._newest_frame())
                valid = valid & ~blanked
                seqs = self._next_seq + np.flatnonzero(blanked[skip:]) + skip
                self._blanked_seq[seqs % self._capacity] = seqs
            start = (self._next_seq + skip) % self._capacity
            head = min(kept, self._capacity - start)
            copies = [(self._frames, frames), (self._timestamps, timestamps), (self._valid, valid)]
            if held is not None:
                copies.append((self._held_seq, np.arange(self._next_seq, self._next_seq + n)))
                copies.append((self._held_bits, np.packbits(held.reshape(n, -1), axis=1)))
            for dst, src in copies:
                dst[start : start + head] = src[skip : skip + head]
                if head < kept:
                    dst[: kept - head] = src[skip + head :]
            self._next_seq += n
            rewritten = rewrites is not None and rewrites != self._rewrites
            if held is not None and (rewritten or blanked is not None):
                seqs = np.arange(self._next_seq - kept, self._next_seq)
                before = self._held_frame(int(seqs[0]) - 1)
                self._rehold_carried(seqs, seqs % self._capacity, before)
            if self._next_seq - self._ceiling_seq >= self.ceiling_backlog:
                self._raise_ceiling()
            self._newest_arrival = arrival
            self._newest_available = arrival if available is None else min(available, arrival)
            self._written.notify_all()

    def _blanked(self, timestamps: np.ndarray, arrival: float) -> np.ndarray | None:
        """Which frames of a chunk to write, arrived at ``arrival``, lie in a blanking interval
        (None: none); drops the intervals that end before the chunk's newest frame and before
        its arrival. Not before the arrival (the intervals' clock, the local one): a frame
        stamped far ahead (a glitched stamp) must not end a blank whose frames are still to
        come. Under the lock."""
        blanked = np.zeros(timestamps.shape[0], dtype=np.bool_)
        for start, end in self._blanks:
            blanked |= (timestamps >= start) & (timestamps <= end)
        newest = timestamps[-1]
        self._blanks = [
            (start, end) for start, end in self._blanks if end >= newest or end >= arrival
        ]
        return blanked if blanked.any() else None

    def _newest_frame(self) -> np.ndarray | None:
        """The newest frame written (None before the first). Under the lock."""
        return self._held_frame(self._next_seq - 1)

    def blanked_among(self, first_seq: int, last_seq: int) -> int:
        """How many of the frames written with sequence numbers ``first_seq``..``last_seq``
        are blanked as stimulation artefact now, whenever that happened: a decision that read
        them before a late marker blanked them is judged again on this. Frames the ring has
        overwritten count as blanked: what they were is no longer known."""
        held, overwritten = self.blanked_held_among(first_seq, last_seq)
        return held + overwritten

    def blanked_held_among(self, first_seq: int, last_seq: int) -> tuple[int, int]:
        """Of the frames ``first_seq``..``last_seq``: how many the ring holds blanked, and how
        many it has overwritten (blanked or not, no longer known), read at one moment."""
        with self._lock:
            oldest = self._oldest_seq()
            overwritten = max(0, min(last_seq, oldest - 1) - first_seq + 1)
            seqs = np.arange(max(first_seq, oldest), min(last_seq, self._next_seq - 1) + 1)
            held = np.count_nonzero(self._blanked_seq[seqs % self._capacity] == seqs)
            return int(held), overwritten

    def wait_for(self, seq: int, timeout: float) -> bool:
        """Block until the frame with sequence number ``seq`` has been written or ``timeout``
        seconds pass; returns whether it was written. Consumers use this instead of polling."""
        with self._written:
            return self._written.wait_for(lambda: self._next_seq > seq, timeout)

    def latest(self, n: int) -> Window:
        """Copy of the newest ``n`` frames.

        Raises
        ------
        ValueError
            If ``n`` is not in 1..capacity.
        NotEnoughFramesError
            If fewer than ``n`` frames have been written.
        """
        if not isinstance(n, int) or not 1 <= n <= self._capacity:
            raise ValueError(f"'n' must be an integer in 1..{self._capacity}, got {n!r}")
        with self._lock:
            if self._next_seq < n:
                raise NotEnoughFramesError(
                    f"asked for the newest {n} frames but only {self._next_seq} have arrived"
                )
            return self._copy(self._next_seq - n, n)

    def read_since(self, seq: int, max_frames: int | None = None, *, held: bool = False) -> Window:
        """Copy of the frames with sequence number >= ``seq``, oldest first, with which of
        their values were held (:attr:`Window.held`) where ``held`` is asked for.

        For consumers that must see every frame (recorders, tests, replay audits, the live
        scores, which must not score a held value as the truth). Frames already overwritten
        are skipped: the window then starts at the oldest one still held, which the caller
        detects from ``window.seq[0] > seq``.
        """
        if not isinstance(seq, int) or seq < 0:
            raise ValueError(f"'seq' must be an integer >= 0, got {seq!r}")
        if max_frames is not None and not (
            isinstance(max_frames, int | np.integer) and max_frames >= 0
        ):
            raise ValueError(f"'max_frames' must be an integer >= 0 or None, got {max_frames!r}")
        with self._lock:
            start = max(seq, self._oldest_seq())
            count = max(0, self._next_seq - start)
            if max_frames is not None:
                count = min(count, max_frames)
            return self._copy(start, count, held)

    def _copy(self, first_seq: int, count: int, held: bool = False) -> Window:
        index = np.arange(first_seq, first_seq + count) % self._capacity
        return Window(
            frames=self._frames[index],
            timestamps=self._timestamps[index],
            valid=self._valid[index],
            seq=np.arange(first_seq, first_seq + count, dtype=np.int64),
            newest_arrival=self._newest_arrival,
            newest_available=self._newest_available,
            held=self._held_values(first_seq, index) if held else None,
        )

    def _held_values(self, first_seq: int, index: np.ndarray) -> np.ndarray:
        """(n, rows, cols) bool: the values the frames from ``first_seq`` (slots ``index``)
        carried over from an earlier frame, as ``append``'s ``held`` marked them (a slot's
        bits count only while they are its frame's). Under the lock."""
        seqs = np.arange(first_seq, first_seq + index.shape[0])
        cells = np.unpackbits(self._held_bits[index], axis=1, count=self.grid.n_channels)
        cells = cells.reshape(index.shape[0], *self.grid.shape).astype(np.bool_)
        return cells & (self._held_seq[index] == seqs)[:, None, None]
