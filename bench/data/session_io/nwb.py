"""Sessions in NWB files: read an ElectricalSeries onto the grid; write one for fixtures.

NWB stores raw values with ``conversion`` (and ``offset``, per-channel ``channel_conversion``)
to volts (a file whose data names another unit is refused); sessions are in µV. Electrode
positions come from the electrodes table: integer ``row``/``col`` columns (which ``write_nwb``
adds), else ``rel_x``/``rel_y`` or ``x``/``y`` on the array's pitch (x along columns, in µm as
the schema asks or in metres), else row-major order; the array is the one the file records
(:mod:`bench.data.session_io._nwb_layout`).
"""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from hdmf.common import DynamicTableRegion
from pynwb import NWBHDF5IO, NWBFile
from pynwb.ecephys import ElectricalSeries

from bench.data.session import Session
from bench.data.session_io._checks import check_channel_order, existing_file
from bench.data.session_io._errors import SessionFileError
from bench.data.session_io._nwb_layout import read_layout
from service.core.atomic_write import written_atomically
from service.core.channel_map import ChannelMap
from service.core.checks import check_type, preview, preview_items
from service.core.grid import ElectrodeGrid

_COMMENTS_KEY = "corticast_session"
"""Key of the JSON object in the series' ``comments`` that keeps the nominal rate, the electrode
array (NWB has no field for its shape or pitch) and info."""

_SESSION_START = datetime(1970, 1, 1, tzinfo=UTC)
"""Session timestamps are on the acquisition clock, not wall time; NWB still wants a start."""


def write_nwb(
    path: str | Path,
    session: Session,
    *,
    series_name: str = "ECoG",
    channel_order: np.ndarray | None = None,
) -> None:
    """Write ``session`` as one ElectricalSeries in µV (``conversion`` 1e-6 to volts).

    ``path`` is replaced only once the file is whole. Evenly sampled sessions are stored with
    ``rate`` and ``starting_time``, others with explicit timestamps; both read back bit for bit.
    Ground truth is not stored.

    Parameters
    ----------
    channel_order
        Electrode (row-major index) of each data column and electrode-table row; default
        row-major.
    """
    check_type("session", session, Session)
    grid = session.grid
    order = check_channel_order(channel_order, grid.n_channels)
    nwbfile = NWBFile(
        session_description="corticast µECoG session",
        identifier=str(uuid.uuid4()),
        session_start_time=_SESSION_START,
    )
    electrodes = _add_electrodes(nwbfile, grid, order)
    array = {"rows": grid.rows, "cols": grid.cols, "pitch_m": grid.pitch_m}
    comments = {
        _COMMENTS_KEY: {
            "nominal_rate_hz": session.sample_rate_hz,
            "grid": array,
            "info": session.info,
        }
    }
    nwbfile.add_acquisition(
        ElectricalSeries(
            name=series_name,
            data=session.frames.reshape(session.n_frames, grid.n_channels)[:, order],
            electrodes=electrodes,
            conversion=1e-6,
            comments=json.dumps(comments),
            **_timing(session),
        )
    )
    # A write that h5py refuses half-way (or a full disk) must not leave a broken file at
    # ``path`` nor destroy the one already there.
    with written_atomically(path) as scratch, NWBHDF5IO(str(scratch), mode="w") as io:
        io.write(nwbfile)


def _add_electrodes(nwbfile: NWBFile, grid: ElectrodeGrid, order: np.ndarray) -> DynamicTableRegion:
    """One electrode-table row per data column, with grid row/col and rel_x/rel_y in µm (the
    schema's unit: another tool reading the file places the electrodes right)."""
    device = nwbfile.create_device(name="array", description="µECoG electrode array")
    group = nwbfile.create_electrode_group(
        name="grid",
        description=f"{grid.rows}x{grid.cols} electrodes, pitch {grid.pitch_m * 1e3} mm",
        location="cortex",
        device=device,
    )
    nwbfile.add_electrode_column(name="row", description="electrode row on the grid")
    nwbfile.add_electrode_column(name="col", description="electrode column on the grid")
    for electrode in order.tolist():
        row, col = divmod(electrode, grid.cols)
        nwbfile.add_electrode(
            group=group,
            location="cortex",
            row=row,
            col=col,
            rel_x=col * grid.pitch_m * 1e6,
            rel_y=row * grid.pitch_m * 1e6,
        )
    return nwbfile.create_electrode_table_region(list(range(len(order))), "all electrodes")


def _timing(session: Session) -> dict[str, Any]:
    """``rate`` and ``starting_time`` when they reproduce the timestamps exactly, else these."""
    timestamps = session.timestamps
    if session.n_frames and np.array_equal(
        timestamps, _regular_times(float(timestamps[0]), session.sample_rate_hz, session.n_frames)
    ):
        return {"rate": session.sample_rate_hz, "starting_time": float(timestamps[0])}
    return {"timestamps": timestamps}


def read_nwb(
    path: str | Path, *, series_name: str | None = None, grid: ElectrodeGrid | None = None
) -> Session:
    """Read an ElectricalSeries as a Session in µV.

    Parameters
    ----------
    series_name
        Name of the ElectricalSeries; may be left out when the file holds exactly one.
    grid
        The electrode array; the series must have one channel per electrode, and a file that
        records another array is refused, naming both. None: the array the file records (as
        ``write_nwb`` keeps it, else as its electrode positions span it), or the rig's
        ``DEFAULT_GRID`` where it records none and has its number of channels; a file that
        records too little of another array to read it is refused, naming what to pass.

    Raises
    ------
    SessionFileError
        Not a readable NWB file (its series' data included), no single matching series, or a
        series that does not fit ``grid`` or records too little of its array.
    """
    check_type("series_name", series_name, (str, type(None)))
    path = existing_file(path)
    try:
        io = NWBHDF5IO(str(path), mode="r")
    except Exception as err:  # h5py and hdmf raise OSError, ValueError, KeyError, ...
        raise SessionFileError(f"{path}: not an NWB (HDF5) file: {err}") from None
    with io:
        try:
            nwbfile = io.read()
        except Exception as err:
            raise SessionFileError(f"{path}: not a readable NWB file: {err!r}") from None
        series = _choose_series(path, nwbfile, series_name)
        try:
            return _session(path, series, grid)
        except OSError as err:  # h5py reads lazily: a damaged chunk fails here, naming no file
            raise SessionFileError(
                f"{path}: ElectricalSeries {series.name!r}: its stored data cannot be read: {err}"
            ) from None


def _choose_series(path: Path, nwbfile: NWBFile, series_name: str | None) -> ElectricalSeries:
    found = sorted(
        (obj for obj in nwbfile.objects.values() if isinstance(obj, ElectricalSeries)),
        key=lambda series: series.name,
    )
    listing = ", ".join(f"{s.name!r} (shape {s.data.shape})" for s in found) or "none"
    matches = [s for s in found if series_name in (None, s.name)]
    if len(matches) == 1:
        return matches[0]
    if not found:
        raise SessionFileError(f"{path}: contains no ElectricalSeries")
    if series_name is None:
        raise SessionFileError(
            f"{path}: holds {len(found)} ElectricalSeries; pick one by its name ('series_name'"
            f": FILE::stream=NAME for replay, train, evaluate, adapt and rig --source; replay "
            f"also takes --stream-name NAME) of {listing}"
        )
    raise SessionFileError(
        f"{path}: 'series_name' must name exactly one ElectricalSeries, got {series_name!r} "
        f"which matches {len(matches)}; series: {listing}"
    )


def _session(path: Path, series: ElectricalSeries, named: ElectrodeGrid | None) -> Session:
    what = f"{path}: ElectricalSeries {series.name!r}"
    shape = series.data.shape
    if len(shape) != 2:
        raise SessionFileError(f"{what} data must be 2-D (frames, channels), got shape {shape}")
    try:
        stored = _stored_comments(series.comments)
        layout = read_layout(series, stored, named)
        grid = layout.grid
        if shape[1] != grid.n_channels:
            raise ValueError(
                f"has {shape[1]} channels (data shape {shape}); the {grid.rows}x{grid.cols} "
                f"electrode grid needs exactly {grid.n_channels}"
            )
        channel_map = ChannelMap.from_positions(layout.rows, layout.cols, grid)
        timestamps = _timestamps(series, shape[0])
        rate = series.rate or _kept_rate(stored) or _median_rate(timestamps)
        return Session(
            frames=channel_map.to_frames(_microvolts(series)),
            timestamps=timestamps,
            sample_rate_hz=float(rate),
            grid=grid,
            info=stored.get("info", {}),
        )
    except ValueError as err:
        raise SessionFileError(f"{what}: {err}") from None


def _microvolts(series: ElectricalSeries) -> np.ndarray:
    """Stored values to µV; exact for float32 data stored with conversion 1e-6 and no offset."""
    # data x conversion is in the stored unit, which pynwb reports as volts whatever it is.
    unit = str(getattr(series.data, "attrs", {}).get("unit", "volts"))
    if unit.strip().lower() not in ("volts", "volt", "v"):
        raise ValueError(
            f"data 'unit' must be volts (an ElectricalSeries' data x conversion), got {unit!r}"
        )
    conversion = np.asarray(series.conversion, dtype=np.float64)
    if series.channel_conversion is not None:
        gains = np.asarray(series.channel_conversion[:], dtype=np.float64)
        if gains.shape != series.data.shape[1:]:
            raise ValueError(
                f"'channel_conversion' must hold one gain per channel ({series.data.shape[1]}), "
                f"got {', '.join(map(str, gains.shape)) or 'a scalar'}"
            )
        bad = np.flatnonzero(~(np.isfinite(gains) & (gains != 0)))
        if bad.size:  # named by channel: the whole array is hundreds of numbers
            faults = [f"{float(gains[k])!r} on channel {k}" for k in bad]
            raise ValueError(
                "'channel_conversion' must be finite and non-zero on every channel, got "
                + preview_items(faults)
            )
        conversion = conversion * gains
    # A scaling that makes every value NaN, infinite or zero is a broken file, not a signal.
    if not (np.isfinite(series.conversion) and series.conversion != 0):
        raise ValueError(
            f"data 'conversion' must be a finite non-zero number (volts per stored unit), "
            f"got {float(series.conversion)!r}"
        )
    if not np.isfinite(series.offset):
        raise ValueError(f"data 'offset' must be finite (volts), got {float(series.offset)!r}")
    raw = np.asarray(series.data[:])
    values = raw.astype(np.float64) * (conversion * 1e6) + series.offset * 1e6
    return values.astype(np.float32)


def _timestamps(series: ElectricalSeries, n: int) -> np.ndarray:
    if series.timestamps is not None:
        return np.asarray(series.timestamps[:], dtype=np.float64)
    if not (np.isfinite(series.rate) and series.rate > 0):  # every timestamp would be inf or NaN
        raise ValueError(
            f"declares rate {float(series.rate)!r} Hz and no timestamps; an evenly sampled "
            "series needs a finite rate > 0"
        )
    if not np.isfinite(series.starting_time):
        raise ValueError(
            f"declares starting_time {float(series.starting_time)!r} s; an evenly sampled "
            "series' starting_time must be finite"
        )
    return _regular_times(series.starting_time, series.rate, n)


def _regular_times(start: float, rate: float, n: int) -> np.ndarray:
    """Timestamps of an evenly sampled series; writer and reader must compute them alike."""
    return start + np.arange(n) / rate


def _median_rate(timestamps: np.ndarray) -> float:
    """Rate of a series that declares none (timestamps only, not written by corticast)."""
    if len(timestamps) < 2:
        raise ValueError("series declares no rate and has fewer than 2 timestamps to infer one")
    return float(1.0 / np.median(np.diff(timestamps)))


def _stored_comments(comments: str) -> dict[str, Any]:
    """What ``write_nwb`` kept in the series' comments; empty for other writers' files.

    Raises ValueError, naming it, where the kept entry or its ``info`` is not a JSON object:
    the file says it was written by corticast, and read on, it would fail as a traceback."""
    try:
        stored = json.loads(comments)
    except json.JSONDecodeError:
        return {}
    if not isinstance(stored, dict):
        return {}
    kept = _an_object(repr(_COMMENTS_KEY), stored.get(_COMMENTS_KEY, {}))
    _an_object(f"{_COMMENTS_KEY!r} 'info'", kept.get("info", {}))
    return kept


def _kept_rate(stored: dict[str, Any]) -> float | None:
    """The nominal rate ``write_nwb`` kept for a series stored with timestamps (NWB keeps no
    rate beside them); None where the comments keep none.

    Raises ValueError, naming it, where it is not a finite number > 0: read on, a list failed
    as a TypeError traceback, ``true`` read as 1 Hz and 0 fell back to the timestamps' median."""
    if "nominal_rate_hz" not in stored:
        return None
    rate = stored["nominal_rate_hz"]
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate < math.inf:
        raise ValueError(
            f"the series' comments keep {_COMMENTS_KEY!r} 'nominal_rate_hz' as {preview(rate)}; "
            "it must be a finite number of Hz > 0"
        )
    return float(rate)


def _an_object(what: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(
            f"the series' comments keep {what} as {preview(value)}; it must be a JSON object"
        )
    return value
