"""One estimate's waves in four numbers: what ``/status``, the wave metrics and
``corticast listen`` show of the predicted frames."""

from __future__ import annotations

import numpy as np

SUMMARY_FIELDS = ("speed_mps", "direction_deg", "pgd", "amplitude_uv")


def wave_summary(
    speed_mps: np.ndarray, direction_deg: np.ndarray, pgd: np.ndarray, amplitude_uv: np.ndarray
) -> dict[str, float]:
    """Over the predicted frames given: the median speed of the frames where it is defined, the
    circular mean direction of the frames that travel (finite speed above 0: a frame with no
    phase gradient has no direction; an angle has no median), in degrees in [-180, 180) as
    every direction is (``service.core.grid``), and the median PGD and amplitude."""
    finite = speed_mps[np.isfinite(speed_mps)]
    angles = np.radians(direction_deg[np.isfinite(speed_mps) & (speed_mps > 0)])
    mean = np.arctan2(np.sin(angles).mean(), np.cos(angles).mean()) if angles.size else np.nan
    return {
        "speed_mps": float(np.median(finite)) if finite.size else float("nan"),
        # arctan2 gives [-180, 180]: +180 (a mean whose sine sums to +0.0) is -180 here.
        "direction_deg": float((np.degrees(mean) + 180.0) % 360.0 - 180.0),
        "pgd": float(np.median(pgd)),
        "amplitude_uv": float(np.median(amplitude_uv)),
    }
