"""The electrode array an NWB ElectricalSeries records, and where each of its channels sits.

NWB has no field for an array's shape or pitch. ``write_nwb`` keeps the array exactly in the
series' comments (``grid``: rows, cols, pitch_m); another writer's file tells it only through
its electrodes table: integer ``row``/``col`` columns give the shape, ``rel_x``/``rel_y`` (else
``x``/``y``) the pitch, and where there is no ``row``/``col`` the positions too. The schema asks
for those coordinates in µm, corticast wrote metres before this module and other writers do
too; an electrode array's pitch is 1 µm to 10 cm, so a step between neighbours of 1e-6 to 0.1
is in metres and one of 1 to 1e5 in µm, and anything else is refused rather than guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pynwb.ecephys import ElectricalSeries

from service.core.grid import DEFAULT_GRID, GRID_FORMAT, ElectrodeGrid

_INTEGER_COLUMNS = ("row", "col")
_METRIC_COLUMNS = (("rel_y", "rel_x"), ("y", "x"))
_METRES = (1e-6, 0.1)
"""A step between neighbours in this range is in metres (1 µm to 10 cm)."""
_MICRONS = (1.0, 1e5)
"""A step in this range is in µm (1 µm to 10 cm)."""
_PITCH_DECIMALS = 9
"""A pitch read from positions is rounded to the nanometre: the decimal pitch the writer meant,
not the float32 residue of its coordinates (0.0005 m is stored as 0.00050000002)."""
NAME_THE_GRID = (
    f"name it ('grid': FILE::grid={GRID_FORMAT}, e.g. FILE::grid=16x16@0.4mm, for train, "
    f"evaluate, adapt and rig --source)"
)
"""What a refusal of a file that does not say its array tells the user to pass."""


@dataclass(frozen=True)
class Layout:
    """The array a series is read on and each data column's (row, col) on it (None: the table
    gives none, read row-major)."""

    grid: ElectrodeGrid
    rows: list[int | None]
    cols: list[int | None]


def read_layout(
    series: ElectricalSeries, stored: dict[str, Any], named: ElectrodeGrid | None
) -> Layout:
    """The layout of ``series``: on ``named`` where given (a file recording another array is
    refused, naming both), else on the array the file records.

    Raises
    ------
    ValueError
        Positions off any pitch, in no unit of length an array's pitch has, or an array the file
        does not record enough of to read (naming what to pass).
    """
    index = np.asarray(series.electrodes.data[:], dtype=np.intp)
    n_channels = series.data.shape[1]
    if len(index) != n_channels:
        raise ValueError(f"series references {len(index)} electrodes for {n_channels} channels")
    table = series.electrodes.table
    integer = _column_pair(table, _INTEGER_COLUMNS, index)
    metric = next(
        (pair for names in _METRIC_COLUMNS if (pair := _column_pair(table, names, index))), None
    )
    pitch_m, steps = _pitch_and_steps(metric) if metric else (None, None)
    positions = integer[1] if integer else steps
    rows, cols = (
        (_ints_or_none(positions[0], "row"), _ints_or_none(positions[1], "col"))
        if positions
        else ([None] * n_channels, [None] * n_channels)
    )
    if integer and "grid" not in stored:
        _refuse_counting_from_1(rows, cols, n_channels)
    recorded = _recorded(stored, rows, cols, pitch_m)
    return Layout(_chosen(recorded, named, n_channels), rows, cols)


def _column_pair(
    table: Any, names: tuple[str, str], index: np.ndarray
) -> tuple[tuple[str, str], tuple[np.ndarray, np.ndarray]] | None:
    """The (row-like, col-like) columns' values for each data column; None where the table
    lacks them or never fills them in."""
    if not all(name in table.colnames for name in names):
        return None
    values = tuple(np.asarray(table[name].data[:], dtype=np.float64)[index] for name in names)
    if not any(np.isfinite(v).any() for v in values):
        return None
    return names, values


def _pitch_and_steps(
    metric: tuple[tuple[str, str], tuple[np.ndarray, np.ndarray]],
) -> tuple[float | None, tuple[np.ndarray, np.ndarray] | None]:
    """The pitch in metres the coordinates are on and each electrode's grid steps along them,
    counted from the smallest; (None, None) where no two electrodes are apart to measure by."""
    names, values = metric
    step = min((s for v in values if (s := _typical_step(v)) is not None), default=None)
    if step is None:
        return None, None
    if _METRES[0] <= step <= _METRES[1]:
        per_unit = 1.0
    elif _MICRONS[0] <= step <= _MICRONS[1]:
        per_unit = 1e-6
    else:
        raise ValueError(
            f"electrodes in {names[1]!r}/{names[0]!r} are {step!r} apart: neither metres nor µm "
            f"of an electrode array's pitch (1 µm to 10 cm)"
        )
    pitch_m = round(step * per_unit, _PITCH_DECIMALS)
    steps = [_on_pitch(v, pitch_m, per_unit, name) for v, name in zip(values, names, strict=True)]
    return pitch_m, (steps[0], steps[1])


def _typical_step(values: np.ndarray) -> float | None:
    """The step between neighbouring distinct coordinates most are apart by (their median, so
    that one electrode off the pitch is named by :func:`_on_pitch`, not taken for it), measured
    over the whole span (the float32 error of one coordinate shared among all the steps); None
    for a single value."""
    distinct = np.unique(values[np.isfinite(values)])
    span = distinct[-1] - distinct[0] if distinct.size else 0.0
    gaps = np.diff(distinct)
    gaps = gaps[gaps > span * 1e-4]  # the same coordinate written twice with float error
    if not gaps.size:
        return None
    return float(span / round(span / np.median(gaps)))


def _on_pitch(values: np.ndarray, pitch_m: float, per_unit: float, column: str) -> np.ndarray:
    """Grid steps from coordinates in metres per ``per_unit``, counted from the smallest; NaN
    stays NaN."""
    finite = values[np.isfinite(values)]
    steps = (values - (finite.min() if finite.size else 0.0)) * per_unit / pitch_m
    off = np.abs(steps - np.round(steps))
    if np.any(off > 0.05):
        bad = int(np.argmax(off > 0.05))
        raise ValueError(
            f"electrode positions in {column!r} must lie on one pitch, the {pitch_m * 1e3:g} mm "
            f"most electrodes are apart; electrode {bad} is at {float(values[bad])!r}"
        )
    return np.round(steps)


def _refuse_counting_from_1(
    rows: list[int | None], cols: list[int | None], n_channels: int
) -> None:
    """Refuse ``row``/``col`` numbered from 1 where that numbering is the one that fits: the
    array they span then has a row and a column more than the channels fill, and the refusal
    that follows would name that array's channel count, not the numbering."""
    placed = [(r, c) for r, c in zip(rows, cols, strict=True) if r is not None and c is not None]
    if not placed:
        return
    (low_row, high_row), (low_col, high_col) = (
        (min(axis), max(axis)) for axis in zip(*placed, strict=True)
    )
    if (low_row, low_col) == (1, 1) and high_row * high_col == n_channels:
        raise ValueError(
            f"electrode row/col count from 1 (rows 1-{high_row}, cols 1-{high_col} for "
            f"{n_channels} channels); corticast counts them from 0, as write_nwb writes them: "
            "renumber them from 0"
        )


def _ints_or_none(values: np.ndarray, column: str) -> list[int | None]:
    """Integer grid indices, None where the table has no value (NaN)."""
    finite = np.isfinite(values)
    if np.any(values[finite] != np.round(values[finite])):
        raise ValueError(f"electrode column {column!r} must hold whole numbers, got {values!r}")
    return [int(v) if ok else None for v, ok in zip(values.tolist(), finite.tolist(), strict=True)]


@dataclass(frozen=True)
class _Recorded:
    """What a file says of its array: shape and pitch, each None where it says nothing."""

    shape: tuple[int, int] | None
    pitch_m: float | None

    def describe(self) -> str:
        shape = f"a {self.shape[0]}x{self.shape[1]} array" if self.shape else "no array shape"
        pitch = f"{self.pitch_m * 1e3:g} mm pitch" if self.pitch_m else "no pitch"
        return f"{shape} at {pitch}" if self.pitch_m else f"{shape} and {pitch}"


def _recorded(
    stored: dict[str, Any], rows: list[int | None], cols: list[int | None], pitch_m: float | None
) -> _Recorded:
    """The array ``write_nwb`` kept, else the one the electrode positions span."""
    if "grid" in stored:
        kept = stored["grid"]
        try:
            grid = ElectrodeGrid(int(kept["rows"]), int(kept["cols"]), float(kept["pitch_m"]))
        except (TypeError, KeyError, ValueError) as err:
            raise ValueError(
                f"the series' comments keep the grid {kept!r}; it must hold rows, cols and "
                f"pitch_m: {err}"
            ) from None
        return _Recorded(grid.shape, grid.pitch_m)
    placed = [(r, c) for r, c in zip(rows, cols, strict=True) if r is not None and c is not None]
    shape = None
    if placed:
        shape = (max(r for r, _ in placed) + 1, max(c for _, c in placed) + 1)
    return _Recorded(shape, pitch_m)


def _chosen(recorded: _Recorded, named: ElectrodeGrid | None, n_channels: int) -> ElectrodeGrid:
    """``named`` if the file records nothing against it, else the array the file records,
    else the rig's where the file cannot be of another; refused where it may be."""
    if named is not None:
        fits = recorded.shape in (None, named.shape) and (
            recorded.pitch_m is None
            or named.same_array(ElectrodeGrid(*named.shape, recorded.pitch_m))
        )
        if not fits:
            raise ValueError(f"records {recorded.describe()}; the grid named is {named.describe()}")
        return named
    if recorded.shape is not None and recorded.pitch_m is not None:
        grid = ElectrodeGrid(*recorded.shape, recorded.pitch_m)
        return DEFAULT_GRID if grid.same_array(DEFAULT_GRID) else grid
    if recorded.shape == DEFAULT_GRID.shape or (
        recorded.shape is None and n_channels == DEFAULT_GRID.n_channels
    ):
        return DEFAULT_GRID  # the rig's own array, as a stream that says nothing is read on it
    raise ValueError(
        f"has {n_channels} channels and records {recorded.describe()} (electrode row/col give "
        f"the shape, rel_x/rel_y or x/y the pitch): {NAME_THE_GRID}"
    )
