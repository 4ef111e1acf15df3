"""A recorded or generated µECoG session: frames, their timestamps, and optional ground truth."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.data.ground_truth import GroundTruth
from service.core.checks import check_array, check_positive
from service.core.grid import DEFAULT_GRID, NOMINAL_RATE_HZ, ElectrodeGrid


@dataclass(frozen=True, eq=False)
class Session:
    """Frames in physical units with one timestamp each.

    Attributes
    ----------
    frames
        (T, rows, cols) float32, µV, row-major electrode order.
    timestamps
        (T,) float64 seconds, strictly increasing. Dropped samples are simply absent (the
        timestamps skip over them); jitter is whatever the source recorded.
    sample_rate_hz
        The nominal rate (the rig's declared rate, not one estimated from timestamps).
    grid
        Electrode geometry.
    truth
        Per-frame ground truth, for generated sessions; None for recordings.
    info
        JSON-serialisable description: generator seed and parameters, episode list, dead and
        noisy channels, source file, ...
    """

    frames: np.ndarray
    timestamps: np.ndarray
    sample_rate_hz: float = NOMINAL_RATE_HZ
    grid: ElectrodeGrid = DEFAULT_GRID
    truth: GroundTruth | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_array("frames", self.frames, shape=(None, *self.grid.shape), dtype=np.float32)
        n = self.frames.shape[0]
        check_array("timestamps", self.timestamps, shape=(n,), dtype=np.float64, finite=True)
        check_positive("sample_rate_hz", self.sample_rate_hz)
        if n > 1 and not np.all(np.diff(self.timestamps) > 0):
            first = int(np.argmax(np.diff(self.timestamps) <= 0))
            before, after = self.timestamps[first : first + 2].tolist()  # plain floats
            raise ValueError(
                f"'timestamps' must be strictly increasing; sample {first + 1} "
                f"({after!r}) does not follow {before!r}"
            )
        if self.truth is not None and len(self.truth) != n:
            raise ValueError(f"'truth' has {len(self.truth)} frames but the session has {n}")

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def duration_s(self) -> float:
        """Span of the timestamps plus one nominal period."""
        if self.n_frames == 0:
            return 0.0
        return float(self.timestamps[-1] - self.timestamps[0]) + 1.0 / self.sample_rate_hz
