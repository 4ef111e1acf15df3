"""Geometry of the µECoG electrode array and the stream it produces.

Coordinates: ``x`` grows along columns, ``y`` grows along rows (row 0 at y = 0), both in metres.
A direction angle is measured from +x toward +y, in degrees, in [-180, 180). Electrode ``k`` in
row-major order sits at row ``k // cols``, column ``k % cols``; that order is the fallback when
a stream carries no channel positions.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

NOMINAL_RATE_HZ = 277.78
"""Nominal sampling rate of the acquisition rig (one frame every 3.6 ms)."""
HORIZON_FRAMES = 16
"""Frames every model predicts (57.6 ms at the nominal rate): the models' future window, the
wave estimate's predicted frames and what the policy's persistence counts in, one number."""
RATE_TOLERANCE = 1e-3
"""Relative difference (0.1 %) still accepted between a rate and the one expected of it: the
stream's declared rate and the configured one, a model's and the stream's."""
PITCH_TOLERANCE = 1e-6
"""Relative difference still taken as one pitch by :meth:`ElectrodeGrid.same_array`: a pitch
written in mm and read back in m (``0.71e-3`` m is ``0.71`` mm, read back as
``0.0007099999999999999`` m) differs in its last place, a millionth of a pitch is no other
array, and a real other array differs by far more."""


@dataclass(frozen=True)
class ElectrodeGrid:
    """A rectangular electrode array: shape and pitch.

    Parameters
    ----------
    rows, cols
        Number of electrode rows and columns.
    pitch_m
        Centre-to-centre spacing in metres (0.5 mm on the rig's array).
    """

    rows: int = 18
    cols: int = 20
    pitch_m: float = 0.5e-3

    def __post_init__(self) -> None:
        if self.rows < 1 or self.cols < 1:
            raise ValueError(f"grid must have rows, cols >= 1, got {self.rows}x{self.cols}")
        if not self.pitch_m > 0:
            raise ValueError(f"'pitch_m' must be > 0, got {self.pitch_m!r}")

    @property
    def n_channels(self) -> int:
        return self.rows * self.cols

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, self.cols)

    def same_array(self, other: ElectrodeGrid) -> bool:
        """Whether ``other`` is this array: the same rows and columns, and a pitch within
        :data:`PITCH_TOLERANCE` of this one's. Compare grids with this, not ``==``: a pitch
        that went through mm and back is the same array, one unit in its last place off."""
        return (self.rows, self.cols) == (other.rows, other.cols) and math.isclose(
            self.pitch_m, other.pitch_m, rel_tol=PITCH_TOLERANCE
        )

    def describe(self) -> str:
        """The array as a message names it, e.g. ``18x20 at 0.5 mm pitch``."""
        return f"{self.rows}x{self.cols} at {self.pitch_m * 1e3:g} mm pitch"

    def label(self, row: int, col: int) -> str:
        """Channel label used on the wire and in files, e.g. ``R03C17``."""
        return f"R{row:02d}C{col:02d}"

    def labels(self) -> list[str]:
        """Labels of all electrodes in row-major order."""
        return [self.label(r, c) for r in range(self.rows) for c in range(self.cols)]

    def row_col(self) -> tuple[np.ndarray, np.ndarray]:
        """Row and column index of each electrode in row-major order (int arrays of n_channels)."""
        rows, cols = np.divmod(np.arange(self.n_channels), self.cols)
        return rows, cols

    def positions_m(self) -> tuple[np.ndarray, np.ndarray]:
        """Electrode coordinates ``(x, y)`` in metres, each shaped ``(rows, cols)``."""
        y, x = np.meshgrid(
            np.arange(self.rows) * self.pitch_m, np.arange(self.cols) * self.pitch_m, indexing="ij"
        )
        return x, y


DEFAULT_GRID = ElectrodeGrid()

GRID_FORMAT = "ROWSxCOLS@PITCHmm"
"""How a user names an array (``16x16@0.4mm``), as :func:`parse_grid` reads it."""
_GRID_TEXT = re.compile(r"(?P<rows>[0-9]+)x(?P<cols>[0-9]+)@(?P<pitch>[0-9]*\.?[0-9]+)mm")


def parse_grid(text: str) -> ElectrodeGrid:
    """The array ``text`` names, ``ROWSxCOLS@PITCHmm`` (``16x16@0.4mm``); the pitch's unit is
    written out, so that a pitch in metres or µm is refused, not read 1000 times off."""
    match = _GRID_TEXT.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"an electrode array is named {GRID_FORMAT} (rows x columns @ pitch in mm, e.g. "
            f"16x16@0.4mm), got {text!r}"
        )
    try:
        return ElectrodeGrid(
            rows=int(match["rows"]), cols=int(match["cols"]), pitch_m=float(match["pitch"]) / 1e3
        )
    except ValueError as err:
        raise ValueError(f"{text!r} names no electrode array: {err}") from None
