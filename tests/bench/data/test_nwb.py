"""NWB session files: exact round trips, other writers' layouts, and the reader's refusals."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np
import pytest
from hdmf.backends.hdf5 import H5DataIO
from pynwb import NWBHDF5IO, NWBFile, TimeSeries
from pynwb.ecephys import ElectricalSeries

from bench.data.session import Session
from bench.data.session_io import SessionFileError, read_nwb, read_session, write_nwb
from service.core.grid import DEFAULT_GRID, ElectrodeGrid

GRID = DEFAULT_GRID
RATE = 277.78
PITCH = GRID.pitch_m


def _frames(n: int) -> np.ndarray:
    """Each value encodes its sample, row and column: sample * 1000 + row * 20 + col + 0.25."""
    sample = np.arange(n, dtype=np.float32)[:, None, None]
    electrode = np.arange(GRID.n_channels, dtype=np.float32).reshape(GRID.shape)
    return sample * 1000 + electrode + np.float32(0.25)


def _session(timestamps: np.ndarray) -> Session:
    return Session(
        frames=_frames(len(timestamps)),
        timestamps=timestamps,
        sample_rate_hz=RATE,
        info={"seed": 11, "noisy": [3, 4]},
    )


def _assert_same(read: Session, written: Session) -> None:
    assert np.array_equal(read.frames.view(np.uint32), written.frames.view(np.uint32))
    assert read.timestamps.dtype == np.float64
    assert np.array_equal(read.timestamps, written.timestamps)
    assert read.sample_rate_hz == written.sample_rate_hz
    assert read.info == written.info
    assert read.truth is None


def _series(path: Path) -> dict[str, object]:
    with NWBHDF5IO(str(path), mode="r") as io:
        series = io.read().acquisition["ECoG"]
        return {
            "rate": series.rate,
            "timestamps": None if series.timestamps is None else series.timestamps[:],
            "data": series.data[:],
            "conversion": series.conversion,
            "row": series.electrodes.table["row"].data[:],
            "col": series.electrodes.table["col"].data[:],
            "rel_x": series.electrodes.table["rel_x"].data[:],
        }


def _new_file() -> NWBFile:
    return NWBFile(
        session_description="another lab's recording",
        identifier="other-lab-1",
        session_start_time=datetime(2024, 5, 1, tzinfo=UTC),
    )


def _foreign_nwb(
    path: Path,
    data: np.ndarray,
    columns: dict[str, np.ndarray],
    *,
    names: tuple[str, ...] = ("ECoG",),
    **series_args: object,
) -> None:
    """An NWB file as another writer makes it: chosen electrode columns, no corticast comments."""
    nwbfile = _new_file()
    device = nwbfile.create_device(name="amp")
    group = nwbfile.create_electrode_group(
        name="g", description="grid", location="cortex", device=device
    )
    standard = {"x", "y", "rel_x", "rel_y"}
    for name in columns.keys() - standard:
        nwbfile.add_electrode_column(name=name, description=name)
    for k in range(data.shape[1]):
        values = {name: column[k] for name, column in columns.items()}
        nwbfile.add_electrode(group=group, location="cortex", **values)
    region = nwbfile.create_electrode_table_region(list(range(data.shape[1])), "all")
    for name in names:
        nwbfile.add_acquisition(
            ElectricalSeries(name=name, data=data, electrodes=region, **series_args)
        )
    with NWBHDF5IO(str(path), mode="w") as io:
        io.write(nwbfile)


# --- round trips -------------------------------------------------------------------------------


def test_irregular_session_round_trips_with_timestamps(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    regular = 10.0 + np.arange(60) / RATE
    timestamps = np.delete(regular, [5, 6, 40]) + rng.uniform(-3e-4, 3e-4, 57)
    session = _session(timestamps)
    path = tmp_path / "s.nwb"
    write_nwb(path, session)
    stored = _series(path)
    assert stored["rate"] is None and stored["conversion"] == 1e-6
    assert np.array_equal(stored["data"], session.frames.reshape(57, 360))  # µV as written
    _assert_same(read_nwb(path), session)


def test_regular_session_round_trips_with_rate(tmp_path: Path) -> None:
    session = _session(2.5 + np.arange(50) / RATE)
    path = tmp_path / "s.nwb"
    write_nwb(path, session)
    stored = _series(path)
    assert stored["rate"] == RATE and stored["timestamps"] is None
    _assert_same(read_session(path), session)


def test_scrambled_electrode_order_lands_on_each_electrode(tmp_path: Path) -> None:
    session = _session(np.arange(20) / RATE)
    order = np.random.default_rng(4).permutation(GRID.n_channels)
    path = tmp_path / "s.nwb"
    write_nwb(path, session, channel_order=order)
    stored = _series(path)
    rows, cols = np.divmod(order, GRID.cols)
    assert np.array_equal(stored["data"], session.frames[:, rows, cols])  # really scrambled
    assert np.array_equal(stored["row"], rows) and np.array_equal(stored["col"], cols)
    assert np.allclose(stored["rel_x"], cols * PITCH * 1e6)  # µm, as the schema asks
    _assert_same(read_nwb(path), session)


def test_a_recording_reads_on_the_array_it_records_unless_the_reader_names_another(
    tmp_path: Path,
) -> None:
    """NWB has no field for an array's shape or pitch: a session of another array was read on
    the rig's 18x20 one and refused ('has 96 channels ...; the 18x20 electrode grid needs
    exactly 360'), so it could be neither trained on nor replayed. ``write_nwb`` keeps the
    array in the series' comments; a reader naming another array is refused, naming both."""
    small = ElectrodeGrid(rows=8, cols=12, pitch_m=0.71e-3)
    session = Session(
        frames=np.arange(3 * 96, dtype=np.float32).reshape(3, 8, 12),
        timestamps=np.arange(3) / RATE,
        sample_rate_hz=RATE,
        grid=small,
    )
    path = tmp_path / "small.nwb"
    write_nwb(path, session, channel_order=np.random.default_rng(5).permutation(96))
    for read in (read_nwb(path), read_session(path), read_nwb(path, grid=small)):
        assert read.grid == small
        assert np.array_equal(read.frames, session.frames)
    named = r"'ECoG': records a 8x12 array at 0.71 mm pitch; the grid named is 18x20 at 0.5 mm"
    with pytest.raises(SessionFileError, match=named):
        read_nwb(path, grid=DEFAULT_GRID)
    with pytest.raises(SessionFileError, match=named):
        read_session(path, grid=DEFAULT_GRID)


@pytest.mark.parametrize(("unit", "per_metre"), [("µm", 1e6), ("m", 1.0)])
def test_another_writers_array_is_read_from_its_electrode_positions(
    tmp_path: Path, unit: str, per_metre: float
) -> None:
    """The schema asks for rel_x/rel_y in µm; corticast wrote metres, as other writers do: an
    array's pitch is 1 µm to 10 cm in either, so the step between neighbours tells which."""
    grid = ElectrodeGrid(rows=6, cols=10, pitch_m=0.4e-3)
    order = np.random.default_rng(9).permutation(grid.n_channels)
    rows, cols = np.divmod(order, grid.cols)
    frames = np.arange(4 * 60, dtype=np.float32).reshape(4, 6, 10)
    path = tmp_path / f"other-{unit}.nwb"
    positions = {"rel_x": cols * 400e-6 * per_metre, "rel_y": rows * 400e-6 * per_metre}
    _foreign_nwb(path, frames[:, rows, cols], positions, rate=RATE, conversion=1e-6)
    read = read_nwb(path)
    assert read.grid == grid
    assert np.array_equal(read.frames, frames)
    with_rows = tmp_path / f"rows-{unit}.nwb"
    _foreign_nwb(
        with_rows, frames[:, rows, cols], {**positions, "row": rows, "col": cols}, rate=RATE
    )
    assert read_nwb(with_rows).grid == grid


def test_electrode_rows_and_cols_numbered_from_1_are_refused_naming_the_numbering(
    tmp_path: Path,
) -> None:
    """Before: read as a 7x11 array, refused as 'has 60 channels ... the 7x11 electrode grid
    needs exactly 77' (or, the grid named, as recording a 7x11 array)."""
    grid = ElectrodeGrid(rows=6, cols=10, pitch_m=0.4e-3)
    rows, cols = grid.row_col()
    positions = {"rel_x": cols * 400.0, "rel_y": rows * 400.0, "row": rows + 1, "col": cols + 1}
    path = tmp_path / "from-1.nwb"
    _foreign_nwb(path, np.zeros((2, 60), np.float32), positions, rate=RATE)
    said = (
        r"'ECoG': electrode row/col count from 1 \(rows 1-6, cols 1-10 for 60 channels\); "
        r"corticast counts them from 0"
    )
    for named in (None, grid):
        with pytest.raises(SessionFileError, match=said):
            read_nwb(path, grid=named)


def test_an_array_a_file_records_too_little_of_is_read_only_where_the_reader_names_it(
    tmp_path: Path,
) -> None:
    """Row and column give another array's shape but not its pitch, which every wave speed is
    measured in: refused, naming what to pass; read on the array the reader names."""
    grid = ElectrodeGrid(rows=6, cols=10, pitch_m=0.4e-3)
    rows, cols = grid.row_col()
    path = tmp_path / "no-pitch.nwb"
    _foreign_nwb(path, np.zeros((2, 60), np.float32), {"row": rows, "col": cols}, rate=RATE)
    with pytest.raises(
        SessionFileError,
        match=r"'ECoG': has 60 channels and records a 6x10 array and no pitch .*name it "
        r"\('grid': FILE::grid=ROWSxCOLS@PITCHmm",
    ):
        read_nwb(path)
    assert read_nwb(path, grid=grid).grid == grid
    with pytest.raises(SessionFileError, match=r"records a 6x10 array and no pitch; the grid "):
        read_nwb(path, grid=ElectrodeGrid(rows=10, cols=6))


def test_positions_in_no_unit_of_an_arrays_pitch_are_refused(tmp_path: Path) -> None:
    rows, cols = GRID.row_col()
    path = tmp_path / "mm.nwb"  # in mm: 0.5 apart, neither metres nor µm of a pitch
    _foreign_nwb(
        path, np.zeros((2, 360), np.float32), {"rel_x": cols * 0.5, "rel_y": rows * 0.5}, rate=RATE
    )
    with pytest.raises(
        SessionFileError, match=r"'rel_x'/'rel_y' are 0\.5 apart: neither metres nor µm"
    ):
        read_nwb(path)


# --- other writers' files ------------------------------------------------------------------------


@pytest.mark.parametrize("columns", ["rel_x/rel_y", "x/y", "none"])
def test_positions_from_electrode_coordinates(tmp_path: Path, columns: str) -> None:
    order = np.random.default_rng(8).permutation(GRID.n_channels)
    if columns == "none":
        order = np.arange(GRID.n_channels)  # no positions: row-major is the only reading
    rows, cols = np.divmod(order, GRID.cols)
    electrode_columns = {
        "rel_x/rel_y": {"rel_x": cols * PITCH, "rel_y": rows * PITCH},
        "x/y": {"x": 0.012 + cols * PITCH, "y": -0.004 + rows * PITCH, "z": np.zeros(360)},
        "none": {},
    }[columns]
    frames = _frames(5)
    path = tmp_path / "other.nwb"
    _foreign_nwb(
        path,
        frames[:, rows, cols],
        electrode_columns,
        conversion=1e-6,
        timestamps=np.arange(5) * 0.004,
    )
    read = read_nwb(path)
    assert np.array_equal(read.frames, frames)
    assert read.sample_rate_hz == pytest.approx(250.0)  # no declared rate: from timestamps
    assert read.info == {}


def test_conversion_offset_and_channel_conversion_give_microvolts(tmp_path: Path) -> None:
    counts = np.arange(-180, 180, dtype=np.int16)[None, :].repeat(3, axis=0)
    gains = np.linspace(0.5, 2.0, 360).astype(np.float32)
    path = tmp_path / "counts.nwb"
    _foreign_nwb(
        path,
        counts,
        {},
        rate=1000.0,
        starting_time=4.0,
        conversion=0.195e-6,
        offset=-2e-6,
        channel_conversion=gains,
    )
    read = read_nwb(path)
    expected = (counts * gains.astype(np.float64) * 0.195e-6 - 2e-6) * 1e6
    np.testing.assert_allclose(read.frames.reshape(3, 360), expected, rtol=1e-6, atol=1e-5)
    assert np.array_equal(read.timestamps, 4.0 + np.arange(3) / 1000.0)
    assert read.sample_rate_hz == 1000.0


def test_series_is_chosen_by_name(tmp_path: Path) -> None:
    path = tmp_path / "two.nwb"
    frames = _frames(2)
    _foreign_nwb(
        path, frames.reshape(2, 360), {}, names=("raw", "filtered"), conversion=1e-6, rate=RATE
    )
    assert np.array_equal(read_nwb(path, series_name="filtered").frames, frames)
    with pytest.raises(SessionFileError, match="holds 2 ElectricalSeries") as err:
        read_nwb(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "'filtered'" in message and "'raw'" in message
    assert "'series_name'" in message
    with pytest.raises(SessionFileError, match="got 'lfp' which matches 0"):
        read_nwb(path, series_name="lfp")


# --- refusals ------------------------------------------------------------------------------------


def test_non_nwb_files_are_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.nwb"
    text.write_text("not a recording\n")
    with pytest.raises(SessionFileError, match=r"notes\.nwb: not an NWB \(HDF5\) file"):
        read_nwb(text)
    plain = tmp_path / "plain.nwb"
    with h5py.File(plain, "w") as file:
        file["x"] = np.zeros(3)
    with pytest.raises(SessionFileError, match=r"plain\.nwb: not a readable NWB file"):
        read_nwb(plain)
    with pytest.raises(FileNotFoundError, match="'path' must name an existing file"):
        read_nwb(tmp_path / "absent.nwb")


def test_truncated_nwb_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.nwb"
    write_nwb(path, _session(np.arange(10) / RATE))
    cut = tmp_path / "cut.nwb"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(SessionFileError, match=r"cut\.nwb: not an NWB \(HDF5\) file"):
        read_nwb(cut)


def test_a_corrupt_compressed_chunk_is_refused_naming_the_file(tmp_path: Path) -> None:
    """Other writers compress their series; a damaged chunk only fails when the data is read,
    with h5py's OSError, which names no file ("Can't synchronously read data")."""
    path = tmp_path / "compressed.nwb"
    data = _frames(40).reshape(40, 360)
    _foreign_nwb(
        path, H5DataIO(data, compression="gzip", chunks=(10, 360)), {}, rate=RATE, conversion=1e-6
    )
    with h5py.File(path, "r") as file:
        chunk = file["acquisition/ECoG/data"].id.get_chunk_info(2)
    damaged = bytearray(path.read_bytes())
    damaged[chunk.byte_offset + 8 : chunk.byte_offset + 40] = b"\xff" * 32
    path.write_bytes(damaged)
    with pytest.raises(SessionFileError, match=r"compressed\.nwb: ElectricalSeries 'ECoG': "):
        read_nwb(path)


def test_file_without_electrical_series_is_refused(tmp_path: Path) -> None:
    nwbfile = _new_file()
    nwbfile.add_acquisition(TimeSeries(name="breathing", data=np.zeros(5), unit="a.u.", rate=10.0))
    path = tmp_path / "breathing.nwb"
    with NWBHDF5IO(str(path), mode="w") as io:
        io.write(nwbfile)
    with pytest.raises(SessionFileError, match=r"breathing\.nwb: contains no ElectricalSeries"):
        read_nwb(path)


def test_wrong_channel_count_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "300.nwb"
    _foreign_nwb(path, np.zeros((2, 300), np.float32), {}, rate=RATE)
    with pytest.raises(SessionFileError, match=r"'ECoG': has 300 channels .*exactly 360"):
        read_nwb(path, grid=GRID)
    with pytest.raises(
        SessionFileError,
        match=r"'ECoG': has 300 channels and records no array shape and no pitch .*name it "
        r"\('grid': FILE::grid=ROWSxCOLS@PITCHmm",
    ):
        read_nwb(path)


def test_positions_off_the_pitch_are_refused(tmp_path: Path) -> None:
    rows, cols = GRID.row_col()
    rel_x = cols * PITCH
    rel_x[7] += 0.3 * PITCH
    path = tmp_path / "off.nwb"
    _foreign_nwb(
        path, np.zeros((2, 360), np.float32), {"rel_x": rel_x, "rel_y": rows * PITCH}, rate=RATE
    )
    with pytest.raises(
        SessionFileError, match=r"'rel_x' must lie on one pitch, the 0\.5 mm .*; electrode 7"
    ):
        read_nwb(path)


@pytest.mark.parametrize(
    ("dataset", "attribute", "value", "message"),
    [
        ("starting_time", "rate", np.nan, r"declares rate nan Hz and no timestamps"),
        ("data", "conversion", 0.0, r"data 'conversion' must be a finite non-zero .*got 0\.0"),
        ("data", "conversion", np.nan, r"data 'conversion' must be a finite non-zero .*got nan"),
        ("data", "offset", np.inf, r"data 'offset' must be finite .*got inf"),
    ],
)
def test_an_unusable_rate_or_scaling_is_refused_naming_the_attribute(
    tmp_path: Path, dataset: str, attribute: str, value: float, message: str
) -> None:
    """Before: a NaN rate was 'timestamps must be finite', conversion NaN or offset inf made
    every value NaN (refused later, naming every electrode), and conversion 0 read as zeros."""
    path = tmp_path / "scaled.nwb"
    write_nwb(path, _session(np.arange(4) / RATE))
    with h5py.File(path, "r+") as file:
        file[f"acquisition/ECoG/{dataset}"].attrs[attribute] = value
    with pytest.raises(SessionFileError, match=rf"ElectricalSeries 'ECoG': {message}"):
        read_nwb(path)


def test_an_array_kept_in_the_comments_that_is_no_array_is_refused_naming_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "kept.nwb"
    write_nwb(path, _session(np.arange(4) / RATE))
    with h5py.File(path, "r+") as file:
        attrs = file["acquisition/ECoG"].attrs
        comments = json.loads(attrs["comments"])
        comments["corticast_session"]["grid"] = {"rows": 18, "cols": 20}
        attrs["comments"] = json.dumps(comments)
    with pytest.raises(
        SessionFileError,
        match=r"'ECoG': the series' comments keep the grid \{'rows': 18, 'cols': 20\}; it must "
        r"hold rows, cols and pitch_m: 'pitch_m'",
    ):
        read_nwb(path)


@pytest.mark.parametrize(
    ("kept", "message"),
    [
        ([18, 20], r"the series' comments keep 'corticast_session' as \[18, 20\]; it must be "
                   r"a JSON object"),
        ("18x20", r"the series' comments keep 'corticast_session' as '18x20'; it must be a JSON "
                  r"object"),
        ({"info": [1]}, r"the series' comments keep 'corticast_session' 'info' as \[1\]; it "
                        r"must be a JSON object"),
    ],
    ids=["list", "string", "info-list"],
)  # fmt: skip
def test_kept_session_comments_that_are_not_an_object_are_refused_naming_them(
    tmp_path: Path, kept: object, message: str
) -> None:
    """Before: an AttributeError's traceback ('list' object has no attribute 'get')."""
    path = tmp_path / "kept.nwb"
    write_nwb(path, _session(np.arange(4) / RATE))
    with h5py.File(path, "r+") as file:
        file["acquisition/ECoG"].attrs["comments"] = json.dumps({"corticast_session": kept})
    with pytest.raises(SessionFileError, match=rf"ElectricalSeries 'ECoG': {message}"):
        read_nwb(path)


@pytest.mark.parametrize(
    ("kept", "shown"),
    [([RATE], r"\[277\.78\]"), ("277.78", r"'277\.78'"), (True, "True"), (0, "0")],
    ids=["list", "string", "bool", "zero"],
)
def test_a_kept_nominal_rate_that_is_not_a_rate_is_refused_naming_it(
    tmp_path: Path, kept: object, shown: str
) -> None:
    """A series stored with timestamps has no NWB rate: its nominal rate is read from the
    comments. Before: a list was a TypeError's traceback ('float() argument must be a string
    or a real number, not 'list''), true read as 1 Hz, 0 fell back to the timestamps' median
    and a string was parsed."""
    path = tmp_path / "kept.nwb"
    write_nwb(path, _session(np.array([0.0, 0.0036, 0.0073, 0.0108])))
    with h5py.File(path, "r+") as file:
        attrs = file["acquisition/ECoG"].attrs
        comments = json.loads(attrs["comments"])
        comments["corticast_session"]["nominal_rate_hz"] = kept
        attrs["comments"] = json.dumps(comments)
    assert _series(path)["rate"] is None
    with pytest.raises(
        SessionFileError,
        match=rf"ElectricalSeries 'ECoG': the series' comments keep 'corticast_session' "
        rf"'nominal_rate_hz' as {shown}; it must be a finite number of Hz > 0",
    ):
        read_nwb(path)


def test_data_that_is_not_frames_by_channels_is_refused_naming_its_shape(tmp_path: Path) -> None:
    path = tmp_path / "cube.nwb"
    write_nwb(path, _session(np.arange(4) / RATE))
    with h5py.File(path, "r+") as file:
        del file["acquisition/ECoG/data"]
        file["acquisition/ECoG"].create_dataset("data", data=_frames(4))
    with pytest.raises(
        SessionFileError,
        match=r"'ECoG' data must be 2-D \(frames, channels\), got shape \(4, 18, 20\)",
    ):
        read_nwb(path)


def test_a_rate_of_zero_is_refused_naming_it(tmp_path: Path) -> None:
    """pynwb only warns; the timestamps were then all infinite ('timestamps must be finite',
    after numpy's divide-by-zero warnings)."""
    path = tmp_path / "zero.nwb"
    write_nwb(path, _session(np.arange(4) / RATE))
    with h5py.File(path, "r+") as file:
        file["acquisition/ECoG/starting_time"].attrs["rate"] = 0.0
    with (
        pytest.warns(UserWarning, match="rate of 0.0 Hz"),
        pytest.raises(SessionFileError, match=r"'ECoG': declares rate 0\.0 Hz and no timestamps"),
    ):
        read_nwb(path)


def test_a_channel_conversion_that_is_not_finite_and_non_zero_names_its_channels(
    tmp_path: Path,
) -> None:
    """One gain per channel: the refusal names the channels at fault, not 360 numbers."""
    gains = np.ones(360, np.float32)
    gains[7], gains[300] = np.nan, 0.0
    path = tmp_path / "gains.nwb"
    _foreign_nwb(
        path, np.zeros((3, 360), np.int16), {}, rate=RATE, conversion=1e-6, channel_conversion=gains
    )
    with pytest.raises(SessionFileError) as err:
        read_nwb(path)
    message = str(err.value)
    assert message.endswith(
        "'channel_conversion' must be finite and non-zero on every channel, got nan on "
        "channel 7, 0.0 on channel 300"
    ), message


def test_a_channel_conversion_of_another_length_than_the_channels_is_refused_naming_both(
    tmp_path: Path,
) -> None:
    """Before: numpy's 'operands could not be broadcast together with shapes (4,360) (300,)'."""
    path = tmp_path / "gains.nwb"
    write_nwb(path, _session(np.arange(4) / RATE))
    with h5py.File(path, "r+") as file:
        series = file["acquisition/ECoG"]
        series.create_dataset("channel_conversion", data=np.ones(300, np.float32))
        series["channel_conversion"].attrs["axis"] = 1
    with pytest.raises(
        SessionFileError,
        match=r"'ECoG': 'channel_conversion' must hold one gain per channel \(360\), got 300$",
    ):
        read_nwb(path)


def test_data_in_another_unit_than_volts_is_refused_naming_it(tmp_path: Path) -> None:
    """data x conversion is in the data's ``unit``; pynwb reports an ElectricalSeries' unit as
    volts whatever the file says, so µV stored with conversion 1.0 read a million times too
    large."""
    path = tmp_path / "microvolts.nwb"
    write_nwb(path, _session(np.arange(4) / RATE))
    with h5py.File(path, "r+") as file:
        file["acquisition/ECoG/data"].attrs["unit"] = "microvolts"
        file["acquisition/ECoG/data"].attrs["conversion"] = 1.0
    with pytest.raises(
        SessionFileError, match=r"'ECoG': data 'unit' must be volts .*got 'microvolts'"
    ):
        read_nwb(path)


def test_a_starting_time_that_is_not_finite_is_refused_naming_it(tmp_path: Path) -> None:
    """An evenly sampled series' timestamps all come from it; the refusal named timestamps
    the file does not hold ("'timestamps' must be finite, got 4 NaN/inf value(s)")."""
    path = tmp_path / "start.nwb"
    write_nwb(path, _session(np.arange(4) / RATE))
    with h5py.File(path, "r+") as file:
        file["acquisition/ECoG/starting_time"][()] = np.nan
    with pytest.raises(
        SessionFileError, match=r"'ECoG': declares starting_time nan s; .* must be finite"
    ):
        read_nwb(path)


def test_a_write_that_fails_half_way_leaves_no_file_and_the_old_one_intact(tmp_path: Path) -> None:
    session = _session(np.arange(20) / RATE)
    kept = tmp_path / "kept.nwb"
    write_nwb(kept, session)
    before = kept.read_bytes()
    for path in (kept, tmp_path / "new.nwb"):
        with pytest.raises(ValueError, match="empty string"):  # h5py refuses it mid-write
            write_nwb(path, session, series_name="")
    assert kept.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.nwb"]
