"""Waves in a replay: the loop's estimate on predicted frames, the same estimate on the frames
that really followed, and the generator's ground truth.

The loop estimates each window as ``[waves] past_frames`` measured frames followed by the 16
predicted ones. Running the same estimator on the same block with the 16 *true* frames in
place of the prediction (as ``bench/benchmarks/wave_accuracy.py`` does) separates the two sources of
error: estimator vs truth is the estimator's own error on this recording; predicted vs true
frames is what the prediction adds. Errors are per frame of the 16, as in the estimator's
benchmark: relative speed error and absolute direction error (degrees, wrapped), on frames
where the generator defines a single velocity (plane waves and seizure discharges).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from bench.data.ground_truth import PATTERN_LABELS
from bench.replay.timeline import Timeline
from service.core.live_channels import live_channels as live_in
from service.loop.settings import LoopSettings
from service.waves.estimator import WaveEstimator
from service.waves.settings import WaveSettings, window_frames
from service.waves.summary import carries_wave

MIN_SPACING_FRAMES = 64
"""True-frame estimates are made at the loop's windows, at least this many slots (230 ms)
apart: several per wave episode, while costing a fraction of the loop's own estimates (at
stride 1 in realtime, one per window would cost as much again as the whole wave stage)."""
_LIVE_WINDOWS = 15
"""Windows, spread evenly over the session, that the loop's channel rule judges."""


@dataclass(frozen=True, eq=False)
class TrueWaves:
    """Estimates on the true frames at the slots ``seq``; (K, 16) per-frame arrays, ``wave``
    whether the frame carries a wave (``service.waves.summary.carries_wave``)."""

    seq: np.ndarray
    speed_mps: np.ndarray
    direction_deg: np.ndarray
    wave: np.ndarray


def live_channels(timeline: Timeline) -> np.ndarray:
    """(rows, cols) bool: the channels the loop's rule for dead and noisy ones
    (``service.core.live_channels``) keeps in most of ``_LIVE_WINDOWS`` windows of its baseline's
    default length, spread evenly over the session's measured frames (one window of them all
    in a session shorter than that). Windows as the loop judges them, not the session at
    once: the rule reads steps between consecutive frames."""
    frames = timeline.frames[timeline.valid]
    length = min(
        len(frames), window_frames(LoopSettings().robust_sd_seconds, timeline.sample_rate_hz)
    )
    starts = np.unique(np.linspace(0, len(frames) - length, _LIVE_WINDOWS).round().astype(int))
    kept = sum(live_in(frames[start : start + length]).astype(int) for start in starts)
    return kept * 2 > len(starts)


def true_frame_waves(
    timeline: Timeline,
    window_seqs: np.ndarray,
    settings: WaveSettings,
    *,
    live: np.ndarray,
    horizons: int = 16,
) -> TrueWaves:
    """The estimator on ``past_frames`` measured + ``horizons`` true frames at each window.

    Parameters
    ----------
    window_seqs
        The loop's windows (``input_seq`` of its wave messages); thinned to
        ``MIN_SPACING_FRAMES`` apart, and to those whose block fits in the session and whose
        ``horizons`` following slots are all measured (a placeholder is not the truth, as in
        the prediction scorer).
    live
        (rows, cols) bool, the session's live channels (:func:`live_channels`), which the
        replay also scores on.
    """
    past = settings.past_frames
    estimator = WaveEstimator(settings, sample_rate_hz=timeline.sample_rate_hz)
    seqs = np.unique(window_seqs)
    placeholders = np.concatenate([[0], np.cumsum(~timeline.valid)])
    start, end = (np.clip(seqs + k, 0, len(timeline)) for k in (1, horizons + 1))
    measured = seqs[placeholders[end] - placeholders[start] == 0]
    chosen = _thin(measured, past, len(timeline) - horizons)
    speed = np.full((chosen.size, horizons), np.nan)
    direction = np.full((chosen.size, horizons), np.nan)
    wave = np.zeros((chosen.size, horizons), dtype=np.bool_)
    with threadpool_limits(1):  # as in the daemon: threaded BLAS makes small estimates slow
        for k, seq in enumerate(chosen):
            block = timeline.frames[seq - past + 1 : seq + horizons + 1]
            estimate = estimator.estimate(block, live)
            speed[k] = estimate.speed_mps[estimate.predicted]
            direction[k] = estimate.direction_deg[estimate.predicted]
            wave[k] = carries_wave(
                speed[k], estimate.pgd[estimate.predicted], estimate.pattern[estimate.predicted]
            )
    return TrueWaves(chosen, speed, direction, wave)


def truth_per_window(
    timeline: Timeline, seqs: np.ndarray, horizons: int = 16
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Ground truth on each window's ``horizons`` future slots: speed (m/s), direction (deg)
    and pattern label, each (K, horizons); None without ground truth. Slots past the session's
    end have none (NaN, label -1)."""
    velocity = timeline.truth_at("velocity_mps")
    if velocity is None:
        return None
    label = timeline.truth_at("label")
    index = np.asarray(seqs, dtype=np.int64)[:, None] + np.arange(1, horizons + 1)
    inside = index < len(timeline)
    index = np.minimum(index, len(timeline) - 1)
    v = np.where(inside[..., None], velocity[index], np.nan)
    speed = np.hypot(v[..., 0], v[..., 1])
    direction = np.degrees(np.arctan2(v[..., 1], v[..., 0]))
    return speed, direction, np.where(inside, label[index], -1).astype(np.int64)


def errors(
    speed: np.ndarray,
    direction: np.ndarray,
    ref_speed: np.ndarray,
    ref_direction: np.ndarray,
    labels: np.ndarray | None = None,
    where: np.ndarray | None = None,
) -> dict[str, Any]:
    """Median per-frame errors against a reference, overall and per ground-truth pattern.

    Frames count where the reference is defined (and ``where``, if given); an estimate with no
    finite speed (no phase gradient) is counted apart, not as an error.
    """
    defined = np.isfinite(ref_speed) & np.isfinite(ref_direction) & (ref_speed > 0)
    if where is not None:
        defined &= where
    out = _error_summary(speed, direction, ref_speed, ref_direction, defined)
    if labels is not None:
        out["by_pattern"] = {
            name: _error_summary(
                speed, direction, ref_speed, ref_direction, defined & (labels == index)
            )
            for index, name in enumerate(PATTERN_LABELS)
            if np.any(defined & (labels == index))
        }
    return out


def block_summary(
    speed: np.ndarray, direction: np.ndarray, wave: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per window (row): median speed and circular mean direction of the frames that travel:
    finite speed above 0 (a frame with no phase gradient has no direction), and of an
    estimate's frames those that carry a wave (``wave``, ``carries_wave``, as the daemon's
    summary takes them): in a frame with no organised wave (PGD 0) the speed and direction
    are those of noise, and a window's summary over them a heading nothing took. The ground
    truth gives none (None): it has a velocity only where one wave travels."""
    travels = np.isfinite(speed) & (speed > 0)
    if wave is not None:
        travels &= wave
    finite = np.where(travels, speed, np.nan)
    radians = np.where(travels, np.radians(direction), np.nan)
    with warnings.catch_warnings():  # a window with no finite speed is NaN, as intended
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(finite, axis=1) if finite.size else np.zeros(len(speed))
        mean = np.degrees(
            np.arctan2(np.nanmean(np.sin(radians), axis=1), np.nanmean(np.cos(radians), axis=1))
        )
    return median, mean


def _error_summary(
    speed: np.ndarray,
    direction: np.ndarray,
    ref_speed: np.ndarray,
    ref_direction: np.ndarray,
    defined: np.ndarray,
) -> dict[str, Any]:
    estimated = defined & np.isfinite(speed)
    relative = np.abs(speed[estimated] - ref_speed[estimated]) / ref_speed[estimated]
    angle = np.abs((direction[estimated] - ref_direction[estimated] + 180.0) % 360.0 - 180.0)
    return {
        "frames": int(np.count_nonzero(defined)),
        "frames_without_speed": int(np.count_nonzero(defined & ~np.isfinite(speed))),
        "median_speed_error_pct": _median(100.0 * relative),
        "median_direction_error_deg": _median(angle),
    }


def _median(values: np.ndarray) -> float | None:
    return float(np.median(values)) if values.size else None


def _thin(seqs: np.ndarray, past: int, last: int) -> np.ndarray:
    """Ascending ``seqs`` in [past - 1, last), each at least ``MIN_SPACING_FRAMES`` after the
    previous one kept."""
    kept: list[int] = []
    for seq in seqs[(seqs >= past - 1) & (seqs < last)].tolist():
        if not kept or seq - kept[-1] >= MIN_SPACING_FRAMES:
            kept.append(seq)
    return np.array(kept, dtype=np.int64)
