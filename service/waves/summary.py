"""One estimate's waves in a few numbers: what ``/status``, the wave metrics and
``corticast listen`` show of the predicted frames."""

from __future__ import annotations

import numpy as np

from service.waves._patterns import PATTERNS

SUMMARY_FIELDS = ("speed_mps", "direction_deg", "pgd", "amplitude_uv", "pattern")
"""The per-frame quantities :func:`wave_summary` reads, in its arguments' order."""

_PLANAR = PATTERNS.index("planar")


def wave_summary(
    speed_mps: np.ndarray,
    direction_deg: np.ndarray,
    pgd: np.ndarray,
    amplitude_uv: np.ndarray,
    pattern: np.ndarray,
) -> dict[str, float]:
    """Over the predicted frames given: the median speed and the circular mean direction of
    the frames that carry a wave, how many those are (``wave_frames``), and the median PGD
    and amplitude of all of them.

    A frame carries a wave where the estimator labels it planar (PGD at least ``[waves]
    planar_pgd``) with a PGD above 0 and a finite speed above 0. The speed and direction are
    those of the array's mean phase gradient, which describe a plane wave; in a frame with no
    organised wave (the background alone, PGD 0) they are those of noise, and a mean over
    them a heading nothing took, with a PGD of 0 beside it. Where no frame carries a wave the
    speed and direction are NaN (None on ``/status`` and in ``corticast listen``), not a
    number. The direction is in degrees in [-180, 180) as every direction is
    (``service.core.grid``); an angle has no median. ``pattern`` is the estimate's, as
    indices into ``PATTERNS`` (float in the ``wave`` topic's table)."""
    wave = carries_wave(speed_mps, pgd, pattern)
    angles = np.radians(direction_deg[wave])
    mean = np.arctan2(np.sin(angles).mean(), np.cos(angles).mean()) if angles.size else np.nan
    return {
        "speed_mps": float(np.median(speed_mps[wave])) if angles.size else float("nan"),
        # arctan2 gives [-180, 180]: +180 (a mean whose sine sums to +0.0) is -180 here.
        "direction_deg": float((np.degrees(mean) + 180.0) % 360.0 - 180.0),
        "wave_frames": int(np.count_nonzero(wave)),
        "pgd": float(np.median(pgd)),
        "amplitude_uv": float(np.median(amplitude_uv)),
    }


def carries_wave(speed_mps: np.ndarray, pgd: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """Per frame, whether it carries a wave (:func:`wave_summary`'s rule): labelled planar,
    with a PGD above 0 and a finite speed above 0. One rule for every summary of a block's
    speed and direction (the daemon's, the replay report's), so they describe the same
    frames."""
    planar = np.asarray(pattern) == _PLANAR
    return planar & (np.asarray(pgd) > 0) & np.isfinite(speed_mps) & (np.asarray(speed_mps) > 0)
