"""The quiet background the policy measures amplitude against, and which electrodes to leave out.

The policy's amplitude unit is a robust s.d. of the band-passed signal
(``WaveEstimator.robust_sd``). One estimate over the last seconds is not enough: during a
seizure lasting many seconds that estimate rises with it, and the discharge would become its
own baseline. So an estimate is taken at a fixed cadence and the unit is the lower quartile of
those over a long history, i.e. the quiet background. Each refresh also finds the channels the
wave estimate and the robust s.d. leave out, dead or noisy, by the rule of
``service.core.live_channels`` (which the offline scores apply too).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from service.core.live_channels import check_channels
from service.ingest.ring_buffer import RingBuffer
from service.waves.estimator import WaveEstimator
from service.waves.settings import MIN_PAST_FRAMES, window_frames


@dataclass(frozen=True, eq=False)
class QuietBackground:
    """The baseline at one refresh.

    Attributes
    ----------
    robust_sd_uv
        The policy's amplitude unit, µV: the lower quartile of the recent robust s.d.s.
    live
        (rows, cols) bool, False for the channels found dead at this refresh.
    """

    robust_sd_uv: float
    live: np.ndarray

    @property
    def masked_channels(self) -> int:
        """Channels left out: dead or noisy."""
        return int(self.live.size - np.count_nonzero(self.live))


class Baseline:
    """What the quiet background's robust s.d. is now, and which electrodes to leave out.

    Parameters
    ----------
    ring
        The measured frames the estimates are taken from.
    estimator
        Its ``robust_sd`` is the estimate (in the wave estimate's band).
    sample_rate_hz
        Nominal frame rate: turns the durations below into frames.
    window_s
        Measured history each estimate is taken over.
    every_s
        Cadence of the estimates; between them the last baseline stands.
    history_s
        The unit is the lower quartile of the estimates of this long.
    settle_frames
        Frames a refresh leaves unread before the decision's newest: another tool's
        stimulation marker may blank them up to ``[ingest] stimulation_marker_latency_ms``
        after they were written, and a train's mV artefact in a refresh's window reads as a
        loud background and marks the channels it spares dead. 0 where no other tool's marker
        stream is read (the daemon's own trains are blanked before they are sent).
    """

    def __init__(
        self,
        ring: RingBuffer,
        estimator: WaveEstimator,
        *,
        sample_rate_hz: float,
        window_s: float,
        every_s: float,
        history_s: float,
        settle_frames: int = 0,
    ) -> None:
        self._ring = ring
        self._settle = settle_frames
        self._estimator = estimator
        self._window = window_frames(window_s, sample_rate_hz)
        self._every = round(every_s * sample_rate_hz)
        self._history: deque[float] = deque(maxlen=max(1, round(history_s / every_s)))
        self._current: QuietBackground | None = None
        self._refreshed = False
        self._at_seq = 0
        self.dead_electrodes: tuple[tuple[int, int], ...] = ()
        """The (row, col) of the channels the latest refresh found dead, row-major: the wave
        estimate leaves them out (none before the first refresh)."""
        self.noisy_electrodes: tuple[tuple[int, int], ...] = ()
        """The same for the channels it found noisy."""
        self.too_few_live = False
        """Whether the latest refresh found fewer live channels than a wave estimate needs."""

    @property
    def dead_channels(self) -> int:
        """How many channels the latest refresh found dead (0 before the first)."""
        return len(self.dead_electrodes)

    @property
    def noisy_channels(self) -> int:
        """How many channels the latest refresh found noisy (0 before the first)."""
        return len(self.noisy_electrodes)

    def at(self, input_seq: int) -> QuietBackground | None:
        """The baseline for a decision on measured frames up to ``input_seq``, refreshed first
        when ``every_s`` has passed since the last refresh. None until the first refresh, which
        needs ``window_s`` of stream before the ``settle_frames`` newest, at least half of it
        (and ``MIN_PAST_FRAMES``) valid and still in the ring (so does every later one: a
        refresh on too few valid frames is skipped, the last baseline stands); no frame after
        ``input_seq - settle_frames`` is read. None also
        from a refresh that finds fewer live channels than a wave estimate needs
        (``WaveEstimator.live_needed``, :attr:`too_few_live`) until one finds enough: a grid
        that is mostly dead (a connector off) has no background to measure against."""
        if self._refreshed and input_seq - self._at_seq < self._every:
            return self._current
        count, newest = self._window, input_seq - self._settle
        if newest + 1 < count:
            return self._current
        window = self._ring.read_since(newest - count + 1, max_frames=count)
        # Frames the ring overwrote start the read later, and it would run past newest.
        frames = window.frames[window.valid & (window.seq <= newest)]
        if len(frames) < max(count // 2, MIN_PAST_FRAMES):  # robust_sd needs MIN_PAST_FRAMES
            return self._current
        check = check_channels(frames)
        live = check.live
        self.dead_electrodes = _cells(check.dead)
        self.noisy_electrodes = _cells(check.noisy)
        self._refreshed, self._at_seq = True, input_seq
        self.too_few_live = np.count_nonzero(live) < self._estimator.live_needed
        if self.too_few_live:
            self._current = None
            return None
        self._history.append(self._estimator.robust_sd(frames, live))
        self._current = QuietBackground(float(np.percentile(self._history, 25)), live)
        return self._current


def _cells(mask: np.ndarray) -> tuple[tuple[int, int], ...]:
    """The (row, col) of ``mask``'s True cells, row-major."""
    return tuple((row, col) for row, col in np.argwhere(mask).tolist())
