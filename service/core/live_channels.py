"""Which channels of a window of frames are live: neither dead nor noisy.

The one rule, shared by everything that leaves channels out: the daemon's wave stage
(``service.waves.baseline``, ``service.loop.closed_loop``) estimates waves and scores its live
accuracy over the live channels only, and the offline scores (``models.evaluation``, replays)
must leave out the same ones, or an offline figure and a live one would mean different
things. It is here, below every other layer, so that ``models`` (which may not import the
runtime) can apply it too.

- *dead*: flat, or nearly (a broken contact, or one whose NaNs the ingestor holds);
- *noisy*: much louder, from one frame to the next, than the median live channel, and unlike
  its neighbours (a contact that picks up noise no cortex makes). Such a channel used to
  dominate every complex product it took part in: in ``bench.benchmarks.channel_masks``,
  noise 1e4 times the background's rms on one electrode under a plane wave put a tenth of the
  frames' directions 176° or more off, and the mean amplitude at 4.3 robust s.d.s: 38 % of
  frames passed the policy's PGD and amplitude checks, against none without it. A channel
  that is only loud is kept: at 0.5 mm pitch a cortical source seen loud on one electrode is
  seen by its neighbours too (a seizure's focus is loud and like its neighbours), and a
  channel that is only unlike its neighbours but not loud cannot pull the estimate far.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEAD_CHANNEL_FRACTION = 0.05
"""A channel whose robust spread is below this fraction of the median channel's is dead."""
NOISY_CHANNEL_FACTOR = 10.0
"""A channel whose robust spread of steps between frames is above this multiple of the median
live channel's ...

On 36 sessions of the generator mixture (2 s windows, all three families, gains spread by
electrode), no channel outside the noisy ones was above 6.8x (4.6x judged on the frames
themselves). Noise 10 times the background's rms on one electrode under a 10 dB plane wave is
above it (``bench.benchmarks.channel_masks``); kept, noise 30 times the background's lowered
the wave's PGD from 0.95 to 0.85, and 1000 times put a tenth of its directions 152° off."""
BLOCK_NOISY_FACTOR = 3 * NOISY_CHANNEL_FACTOR
"""The factor a decision's own 48 frames are judged with, between refreshes: there the rule
is a fast path for a contact gone badly wrong since, and the refresh's 2 s judge the rest.
At the refresh's factor, spreads from 47 steps put channels near the factor above it in some
blocks and below in others (a session's three 5x-noise channels in 15 % of blocks), and the
estimate's mask flickered from one decision to the next."""
NOISY_CHANNEL_CORRELATION = 0.5
"""... and whose steps correlate with the sum of its live neighbours' (each in units of its own
spread) by less than this, is noisy. In the same sessions every channel above 2x had a
correlation of 0.58 or more; a loud channel of added noise has one near 0."""


@dataclass(frozen=True, eq=False)
class ChannelCheck:
    """Which channels of a window to leave out, and why.

    Attributes
    ----------
    dead
        (rows, cols) bool: flat, or nearly (``DEAD_CHANNEL_FRACTION``).
    noisy
        (rows, cols) bool: loud and unlike their neighbours (``NOISY_CHANNEL_FACTOR``,
        ``NOISY_CHANNEL_CORRELATION``); never dead.
    """

    dead: np.ndarray
    noisy: np.ndarray

    @property
    def live(self) -> np.ndarray:
        """(rows, cols) bool: neither dead nor noisy."""
        return ~(self.dead | self.noisy)


def live_channels(frames: np.ndarray) -> np.ndarray:
    """(rows, cols) bool: the channels of ``frames`` (T, rows, cols) that are neither dead nor
    noisy (:func:`check_channels`)."""
    return check_channels(frames).live


def check_channels(frames: np.ndarray) -> ChannelCheck:
    """The dead and the noisy channels of ``frames`` (T, rows, cols), from each channel's
    median absolute deviation (its robust spread) against the median channel's: of the frames
    for dead ones, of the steps between frames for noisy ones.

    Steps, because an offset or a slow drift (an electrode settling) is no noise to the wave
    estimate, whose band-pass removes it, yet in the frames themselves it reads as a loud
    channel unlike its neighbours: a drift of 300 µV/s over 2 s of a quiet background did.
    Steps also weigh the broadband noise of a poor contact above the slow rhythms of cortex."""
    _, spread = _centres_and_spreads(frames)
    dead = ~(spread > DEAD_CHANNEL_FRACTION * np.median(spread))  # a NaN spread is dead too
    dead = dead.reshape(frames.shape[1:])
    return ChannelCheck(dead, noisy_channels(frames, ~dead))


def noisy_channels(
    frames: np.ndarray, live: np.ndarray, factor: float = NOISY_CHANNEL_FACTOR
) -> np.ndarray:
    """(rows, cols) bool: the noisy channels among the ``live`` ones of ``frames`` (T, rows,
    cols), judged against the live ones only (with over half the grid flat the median channel
    would be a flat one, and every channel with signal loud against it); the others neither
    count as neighbours nor are judged. ``factor``: how much louder than the median a noisy
    channel is (``BLOCK_NOISY_FACTOR`` for a decision's own few frames)."""
    steps = np.diff(frames, axis=0)
    centre, spread = _centres_and_spreads(steps)
    usable = live.ravel()
    typical = _median_or_nan(spread[usable])
    loud = np.flatnonzero(usable & (spread > factor * typical))
    noisy = np.zeros(usable.shape, dtype=np.bool_)
    if loud.size:
        noisy[loud] = _unlike_neighbours(steps, loud, centre, spread, ~usable)
    return noisy.reshape(live.shape)


def _centres_and_spreads(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(channels,) median and median absolute deviation of each channel of ``frames``."""
    by_channel = frames.reshape(len(frames), -1).T.copy()  # (channels, T), each row contiguous
    centre = _row_medians(by_channel)
    return centre, _row_medians(np.abs(by_channel - centre[:, None]))


def _median_or_nan(values: np.ndarray) -> float:
    """``np.median(values)``, and NaN for none (every channel dead: none is loud)."""
    return float(np.median(values)) if values.size else math.nan


def _unlike_neighbours(
    frames: np.ndarray,
    channels: np.ndarray,
    centre: np.ndarray,
    spread: np.ndarray,
    left_out: np.ndarray,
) -> np.ndarray:
    """Whether each of ``channels`` (flat indices) correlates with the sum of its neighbours
    by less than ``NOISY_CHANNEL_CORRELATION``. Every channel is centred and taken in units of
    its own spread, so that no neighbour outweighs the others; those ``left_out`` (dead:
    flat, or NaN) count as 0, and so do any without spread (a flat channel judged before the
    first refresh has found it dead)."""
    units = np.zeros((len(frames), spread.size))
    with_spread = ~left_out & (spread > 0)
    np.divide(frames.reshape(len(frames), -1) - centre, spread, out=units, where=with_spread)
    rows, cols = frames.shape[1:]
    return np.array(
        [
            _correlation(units[:, channel], units[:, _neighbours(channel, rows, cols)].sum(axis=1))
            < NOISY_CHANNEL_CORRELATION
            for channel in channels.tolist()
        ]
    )


def _neighbours(channel: int, rows: int, cols: int) -> list[int]:
    """Flat indices of the up to 8 electrodes around ``channel`` on a (rows, cols) grid."""
    row, col = divmod(channel, cols)
    return [
        r * cols + c
        for r in range(max(row - 1, 0), min(row + 2, rows))
        for c in range(max(col - 1, 0), min(col + 2, cols))
        if (r, c) != (row, col)
    ]


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two series; 0 where either is constant (no live neighbour)."""
    a = a - a.mean()
    b = b - b.mean()
    scale = math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b)))
    return float(np.dot(a, b)) / scale if scale > 0 else 0.0


def _row_medians(rows: np.ndarray) -> np.ndarray:
    """``np.median(rows, axis=1)``, bitwise (NaN for a row holding one), of a (channels, T)
    C-contiguous array, from one vectorised sort of its short rows: for 2 s of float32 frames
    2.6x cheaper than numpy's selection along the frames' strided time axis. ``rows`` is
    sorted in place."""
    rows.sort(axis=1)
    middle = rows.shape[1] // 2
    if rows.shape[1] % 2:
        median = rows[:, middle].copy()
    else:
        median = np.mean(rows[:, middle - 1 : middle + 1], axis=1)  # np.median's own mean
    median[np.isnan(rows[:, -1])] = np.nan  # NaN sorts last, as np.median checks
    return median


HISTORY_S = 2.0
"""Measured history the daemon's baseline judges channels over by default (``[loop]
robust_sd_seconds``, whose default this is)."""
BLOCK_FRAMES = 48
"""Measured frames a decision's own block holds by default (``[waves] past_frames``, whose
default this is), which the noisy rule judges again between refreshes."""


def decision_live(history: np.ndarray, block: np.ndarray) -> np.ndarray:
    """(rows, cols) bool: the channels the daemon's wave stage uses for one decision, and so
    scores its live accuracy over: those :func:`check_channels` keeps over the measured
    ``history`` (T, rows, cols) its baseline refreshed on, less those noisy in the decision's
    own ``block`` of measured frames at ``BLOCK_NOISY_FACTOR`` (``ClosedLoop._live``). For
    scorers offline, which must leave out the channels the daemon would."""
    live = check_channels(history).live
    return live & ~noisy_channels(block, live, BLOCK_NOISY_FACTOR)
