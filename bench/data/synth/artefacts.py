"""Recording artefacts: what a real rig adds to clean cortical signals, and where it put them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from service.core.checks import check_choice, check_int, check_range

_DEAD_NOISE_UV = 0.05
"""Amplifier floor left on a dead channel: flat and near zero, but not exactly constant."""
_LINE_SPREAD = 0.5
"""Log-normal spread of line-noise amplitude across channels (electrode impedances differ)."""
_JITTER_CLIP_SD = 4.0
"""Jitter is clipped at this many standard deviations ..."""
_JITTER_CLIP_PERIOD = 0.25
"""... and at this fraction of a period, so intervals stay within (0.5, 1.5) periods."""
_OUTAGE_S = (0.05, 0.5)
"""Length of each outage of an intermittent channel (a contact that comes and goes)."""


@dataclass(frozen=True)
class Artefacts:
    """Which artefacts to add; everything is off by default, ``Artefacts.realistic()`` is on.

    Parameters
    ----------
    line_freq_hz
        Mains frequency, 50 or 60 Hz.
    line_uv
        Median per-channel line-noise amplitude in µV (channels vary log-normally); 0 is off.
    n_dead
        Channels that record nothing (broken contact): flat, near zero.
    n_noisy
        Channels with extra white noise (poor contact), disjoint from the dead ones.
    noisy_uv
        Standard deviation of that extra noise, in µV.
    drop_rate_hz
        Mean number of dropout events per second; each removes 1..``max_drop_frames``
        consecutive frames, never the first or the last one.
    max_drop_frames
        Longest dropout, in frames.
    jitter_s
        Standard deviation of Gaussian timestamp jitter, in seconds.
    gain
        Overall gain of the recording chain: every cortical µV reads as ``gain`` µV
        (amplifiers and references differ by rig), 0.05–20.
    gain_spread
        Standard deviation of the log of a per-electrode gain (electrode impedances differ);
        0 gives every electrode the same gain.
    n_intermittent
        Channels whose contact comes and goes: they read as dead during outages of
        0.05–0.5 s, disjoint from the dead and noisy ones.
    outage_rate_hz
        Mean number of outages per second on each intermittent channel.
    """

    line_freq_hz: float = 50.0
    line_uv: float = 0.0
    n_dead: int = 0
    n_noisy: int = 0
    noisy_uv: float = 100.0
    drop_rate_hz: float = 0.0
    max_drop_frames: int = 3
    jitter_s: float = 0.0
    gain: float = 1.0
    gain_spread: float = 0.0
    n_intermittent: int = 0
    outage_rate_hz: float = 1.0

    def __post_init__(self) -> None:
        check_choice("Artefacts.line_freq_hz", self.line_freq_hz, (50.0, 60.0))
        check_range("Artefacts.line_uv", self.line_uv, 0.0)
        check_int("Artefacts.n_dead", self.n_dead, 0)
        check_int("Artefacts.n_noisy", self.n_noisy, 0)
        check_range("Artefacts.noisy_uv", self.noisy_uv, 0.0)
        check_range("Artefacts.drop_rate_hz", self.drop_rate_hz, 0.0, 10.0)
        check_int("Artefacts.max_drop_frames", self.max_drop_frames, 1, 100)
        check_range("Artefacts.jitter_s", self.jitter_s, 0.0, 1e-3)
        check_range("Artefacts.gain", self.gain, 0.05, 20.0)
        check_range("Artefacts.gain_spread", self.gain_spread, 0.0, 1.0)
        check_int("Artefacts.n_intermittent", self.n_intermittent, 0)
        check_range("Artefacts.outage_rate_hz", self.outage_rate_hz, 0.0, 10.0)

    @classmethod
    def realistic(cls, line_freq_hz: float = 50.0) -> Artefacts:
        """A plausible bad day on the rig: mains hum, a few bad contacts, rare dropouts."""
        return cls(
            line_freq_hz=line_freq_hz,
            line_uv=5.0,
            n_dead=3,
            n_noisy=3,
            noisy_uv=100.0,
            drop_rate_hz=0.2,
            max_drop_frames=3,
            jitter_s=1e-4,
        )


def apply_artefacts(
    frames: np.ndarray,
    t: np.ndarray,
    settings: Artefacts,
    sample_rate_hz: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Corrupt ``frames`` (modified in place) and their nominal times ``t``.

    Returns
    -------
    frames, timestamps
        The kept frames and their (jittered) timestamps.
    keep
        Indices of the kept frames in the original sequence, to subset the ground truth.
    info
        JSON-ready record of what was done: per-electrode gains, line frequency and
        per-channel amplitudes, dead, noisy and intermittent channels as ``[row, col]``,
        dropped frame indices, jitter settings.
    """
    n, rows, cols = frames.shape
    gains = _gains(settings, rows, cols, rng)
    frames *= gains
    info: dict[str, Any] = {"gains": gains.tolist()}
    info["line_freq_hz"] = float(settings.line_freq_hz)
    line_amplitude = _add_line_noise(frames, t, settings, rng)
    info["line_amplitude_uv"] = line_amplitude.tolist()

    picked = rng.choice(rows * cols, size=settings.n_dead + settings.n_noisy, replace=False)
    dead, noisy = (
        np.divmod(picked[: settings.n_dead], cols),
        np.divmod(picked[settings.n_dead :], cols),
    )
    frames[:, dead[0], dead[1]] = rng.normal(0.0, _DEAD_NOISE_UV, (n, settings.n_dead))
    frames[:, noisy[0], noisy[1]] += rng.normal(0.0, settings.noisy_uv, (n, settings.n_noisy))
    info["dead_channels"] = _pairs(dead)
    info["noisy_channels"] = _pairs(noisy)

    dropped = _dropped_indices(n, settings, sample_rate_hz, rng)
    intermittent = _intermittent(frames, t, settings, np.sort(picked), rng)
    info["intermittent_channels"] = _pairs(np.divmod(intermittent, cols))
    keep = np.setdiff1d(np.arange(n), dropped)
    info["dropped_indices"] = dropped.tolist()
    info["n_dropped"] = int(dropped.size)

    clip = min(_JITTER_CLIP_SD * settings.jitter_s, _JITTER_CLIP_PERIOD / sample_rate_hz)
    jitter = np.clip(rng.normal(0.0, settings.jitter_s, keep.size), -clip, clip)
    info["jitter_s"] = float(settings.jitter_s)
    info["jitter_clip_s"] = float(clip)
    return frames[keep], t[keep] + jitter, keep, info


def _gains(settings: Artefacts, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """(rows, cols) gains; drawn only when they spread, so older configs draw as before."""
    if settings.gain_spread == 0:
        return np.full((rows, cols), settings.gain)
    return settings.gain * rng.lognormal(0.0, settings.gain_spread, (rows, cols))


def _intermittent(
    frames: np.ndarray,
    t: np.ndarray,
    settings: Artefacts,
    taken: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Flatten outages on ``n_intermittent`` channels outside ``taken``; return their indices.

    Outages start as a Poisson process per channel; each reads like a dead channel.
    """
    n, rows, cols = frames.shape
    if settings.n_intermittent == 0:
        return np.zeros(0, dtype=np.int64)
    free = np.setdiff1d(np.arange(rows * cols), taken)
    if settings.n_intermittent > free.size:
        raise ValueError(
            f"'Artefacts.n_intermittent' must be <= {free.size} (the channels neither dead nor "
            f"noisy), got {settings.n_intermittent}"
        )
    chosen = np.sort(rng.choice(free, size=settings.n_intermittent, replace=False))
    span = float(t[-1] - t[0]) if n > 1 else 0.0
    for channel in chosen:
        row, col = divmod(int(channel), cols)
        for _ in range(rng.poisson(settings.outage_rate_hz * span)):
            start = rng.uniform(t[0], t[-1])
            off = (t >= start) & (t < start + rng.uniform(*_OUTAGE_S))
            frames[off, row, col] = rng.normal(0.0, _DEAD_NOISE_UV, int(off.sum()))
    return chosen


def _add_line_noise(
    frames: np.ndarray, t: np.ndarray, settings: Artefacts, rng: np.random.Generator
) -> np.ndarray:
    """Add mains hum, one phase for all channels, an amplitude per channel; return those."""
    _, rows, cols = frames.shape
    if settings.line_uv == 0:
        return np.zeros((rows, cols))
    amplitude = settings.line_uv * rng.lognormal(0.0, _LINE_SPREAD, (rows, cols))
    phase = rng.uniform(0.0, 2 * np.pi)
    frames += amplitude * np.sin(2 * np.pi * settings.line_freq_hz * t + phase)[:, None, None]
    return amplitude


def _dropped_indices(
    n: int, settings: Artefacts, sample_rate_hz: float, rng: np.random.Generator
) -> np.ndarray:
    """Sorted original indices of dropped frames: Poisson events of random length.

    The first and last frames are never dropped, so every dropout shows as a gap between two
    timestamps; overlapping dropouts merge into one longer gap.
    """
    if settings.drop_rate_hz == 0 or n < 3:
        return np.zeros(0, dtype=np.int64)
    events = rng.poisson(settings.drop_rate_hz * n / sample_rate_hz)
    starts = rng.integers(1, n - 1, size=events)
    lengths = rng.integers(1, settings.max_drop_frames + 1, size=events)
    runs = [np.arange(s, min(s + k, n - 1)) for s, k in zip(starts, lengths, strict=True)]
    return np.unique(np.concatenate([np.zeros(0, dtype=np.int64), *runs]))


def _pairs(row_col: tuple[np.ndarray, np.ndarray]) -> list[list[int]]:
    """``[[row, col], ...]`` with plain ints, for JSON."""
    return [[int(r), int(c)] for r, c in zip(*row_col, strict=True)]
