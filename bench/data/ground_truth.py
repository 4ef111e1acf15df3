"""Per-frame ground truth that the synthetic generator writes beside the data."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.core.checks import check_array

PATTERN_LABELS: tuple[str, ...] = (
    "background",
    "plane",
    "radial",
    "spiral",
    "seizure",
    "neural_field",
)
"""Pattern names; ``GroundTruth.label`` holds indices into this tuple."""


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """What was really in each frame.

    Attributes
    ----------
    velocity_mps
        (T, 2) float64 wave velocity ``(vx, vy)`` in m/s in grid coordinates
        (see ``service.core.grid``); NaN where the pattern has no single velocity (background,
        radial, spiral, neural field).
    speed_mps
        (T,) float64 phase speed in m/s; defined for plane, radial and seizure waves
        (NaN elsewhere, e.g. spirals whose speed varies with radius).
    label
        (T,) int8 index into ``PATTERN_LABELS`` of the dominant pattern.
    seizure
        (T,) bool, True inside a seizure-like episode.
    """

    velocity_mps: np.ndarray
    speed_mps: np.ndarray
    label: np.ndarray
    seizure: np.ndarray

    def __post_init__(self) -> None:
        n = check_array("label", self.label, ndim=1, dtype=np.int8).shape[0]
        check_array("velocity_mps", self.velocity_mps, shape=(n, 2), dtype=np.float64)
        check_array("speed_mps", self.speed_mps, shape=(n,), dtype=np.float64)
        check_array("seizure", self.seizure, shape=(n,), dtype=np.bool_)
        if n and (self.label.min() < 0 or self.label.max() >= len(PATTERN_LABELS)):
            raise ValueError(
                f"'label' values must index PATTERN_LABELS (0..{len(PATTERN_LABELS) - 1}), "
                f"got range {self.label.min()}..{self.label.max()}"
            )

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def take(self, index: np.ndarray | slice) -> GroundTruth:
        """Ground truth of a subset of frames (e.g. after dropping samples)."""
        return GroundTruth(
            velocity_mps=self.velocity_mps[index],
            speed_mps=self.speed_mps[index],
            label=self.label[index],
            seizure=self.seizure[index],
        )

    def equals(self, other: GroundTruth) -> bool:
        """Exact equality, NaNs equal to NaNs."""
        return (
            np.array_equal(self.velocity_mps, other.velocity_mps, equal_nan=True)
            and np.array_equal(self.speed_mps, other.speed_mps, equal_nan=True)
            and np.array_equal(self.label, other.label)
            and np.array_equal(self.seizure, other.seizure)
        )
