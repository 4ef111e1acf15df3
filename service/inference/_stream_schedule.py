"""Stream mode's schedule: which encoder states each frame is fed to, and when one takes over.

A stream-mode prediction is the future of one encoder state (the *carried* one) after it was
fed a chain of frames. Which states exist, which frames each is fed with which flags, and which
step's future is the prediction depend only on the sequence numbers of the calls, never on the
model's numbers. :class:`StreamSchedule` decides all of it; the daemon's
:class:`~service.inference.streaming_predictor.StreamingPredictor` runs its steps one at a time
and the offline :class:`~service.inference._batch_stream.StreamPlan` runs them in batches. One
schedule for both is what makes a batched replay predict what the daemon would have.

The rules (the predictor's module docstring says why):

- a call re-primes, i.e. starts a state from zeros anchored at its newest frame and feeds it
  the whole window, when it cannot continue: the first call, after :meth:`StreamSchedule.reset`
  (the scheduler resets the predictor when it refuses a window, when the ring blanks frames
  already written, and when a window feeds frames otherwise than the one before it did),
  or when its newest frame is not 1 to one window of frames past the previous call's (a gap the
  window does not cover, a repeat, or sequence numbers going backwards after a reconnect);
- otherwise the call feeds only the frames newer than the previous call's;
- with ``reprime_every_frames = N``, a fresh state starts at every frame whose sequence number
  is a multiple of N, anchored one window later (unless the carried state's anchor is not
  earlier), is fed beside the carried one, and replaces it at its anchor frame;
- a state's upper layer is due at the frames of its anchor's parity (window mode's even
  1-based frames);
- only the carried state's step at the call's newest frame rolls out (the prediction); the
  others advance the state only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

S = TypeVar("S")


@dataclass(frozen=True)
class Step(Generic[S]):
    """Feed the frame to ``state``."""

    state: S
    upper_due: bool
    """The step graph's ``upper_due`` flag: the frame has the parity of the state's anchor."""
    rollout: bool
    """The step's future is the call's prediction (the carried state at the newest frame)."""


@dataclass(frozen=True)
class Frame(Generic[S]):
    """One frame of a call and the steps it is fed to, in order."""

    offset: int
    """Index of the frame in the call's window."""
    seq: int
    steps: tuple[Step[S], ...]
    """The carried state's step first, then those of the states being built, oldest first."""


@dataclass(frozen=True)
class _Anchored(Generic[S]):
    """A state and the frame at which it equals window mode's (its anchor)."""

    state: S
    anchor: int


class StreamSchedule(Generic[S]):
    """The states and steps of stream mode's calls (module docstring).

    Parameters
    ----------
    window_frames
        Frames per window (the stream's ``past_frames``).
    reprime_every_frames
        The rebuild period N (None: the state is carried until a call forces a re-prime).
    fresh
        Makes a new state (zeros, or a record of steps to run); called once per state started.
    """

    def __init__(
        self, window_frames: int, reprime_every_frames: int | None, fresh: Callable[[], S]
    ) -> None:
        if reprime_every_frames is not None and reprime_every_frames < 1:
            raise ValueError(
                f"'reprime_every_frames' must be >= 1 or None, got {reprime_every_frames}"
            )
        self.window_frames = window_frames
        self.reprime_every_frames = reprime_every_frames
        self._fresh = fresh
        self._carried: _Anchored[S] | None = None
        self._building: list[_Anchored[S]] = []
        """States started on schedule, oldest first, each waiting to see a whole window."""
        self._last_seq: int | None = None
        self.reprimes = 0
        """Times a state was started over from a call's window (first call, gaps, resets)."""
        self.handovers = 0
        """Times a state built on schedule replaced the carried one."""

    def starts_rebuild(self, seq: int) -> bool:
        """Whether a fresh state is started at frame ``seq`` (every multiple of N)."""
        return self.reprime_every_frames is not None and seq % self.reprime_every_frames == 0

    def feed(self, newest_seq: int) -> list[Frame[S]]:
        """The frames of the call whose window ends at frame ``newest_seq``, oldest first, each
        with its steps; the last frame's carried step rolls out."""
        new = None if self._last_seq is None else newest_seq - self._last_seq
        if new is None or not 0 < new <= self.window_frames:
            self._carried = _Anchored(self._fresh(), newest_seq)
            self._building.clear()
            self.reprimes += 1
            new = self.window_frames
        frames = [
            self._advance(offset, newest_seq - (self.window_frames - 1 - offset), newest_seq)
            for offset in range(self.window_frames - new, self.window_frames)
        ]
        self._last_seq = newest_seq
        return frames

    def reset(self) -> None:
        """Forget the states: the next call re-primes from its window."""
        self._last_seq = None

    def live(self) -> list[S]:
        """The states a later call may still feed: the carried one and those being built,
        none after a reset. Another state's steps after its last rollout change nothing."""
        if self._last_seq is None:
            return []
        return [self._carried.state, *(held.state for held in self._building)]

    def _advance(self, offset: int, seq: int, newest_seq: int) -> Frame[S]:
        """Start and hand over what is due at frame ``seq``; its steps, the carried one first."""
        anchor = seq + self.window_frames - 1
        if self.starts_rebuild(seq) and anchor > self._carried.anchor:
            self._building.append(_Anchored(self._fresh(), anchor))
        if self._building and self._building[0].anchor == seq:
            self._carried = self._building.pop(0)
            self.handovers += 1
        steps = tuple(
            Step(held.state, (seq - held.anchor) % 2 == 0, seq == newest_seq and index == 0)
            for index, held in enumerate((self._carried, *self._building))
        )
        return Frame(offset, seq, steps)
