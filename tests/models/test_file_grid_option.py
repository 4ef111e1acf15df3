"""A data spec names the electrode array a recording is on, ``FILE::grid=ROWSxCOLS@PITCHmm``,
where the file does not say (an NWB file of another writer: its electrodes' row and column, no
pitch), in ``train``, ``evaluate``, ``adapt`` and ``rig --source``; before, no command could
read a recording of another array from NWB, and none could name one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bench.data.session_io import SessionFileError, write_xdf
from bench.data.synth import SynthConfig, generate_session
from bench.rig.frame_source import source_from_settings
from models.sources import load_spec, recorded_spec
from models.training import load_checkpoint
from service.cli.app import app
from service.config import RigSettings
from service.core.grid import ElectrodeGrid
from tests.bench.data.test_nwb import _foreign_nwb

GRID = ElectrodeGrid(rows=8, cols=12, pitch_m=0.4e-3)
NAMED = "::grid=8x12@0.4mm"


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """Another writer's 5-s NWB recording of the 8x12 array, electrodes scrambled, placed by
    row and column only."""
    frames = generate_session(SynthConfig(duration_s=5.0, seed=4, grid=GRID)).frames
    order = np.random.default_rng(3).permutation(GRID.n_channels)
    rows, cols = np.divmod(order, GRID.cols)
    path = tmp_path_factory.mktemp("other") / "other.nwb"
    _foreign_nwb(
        path,
        frames[:, rows, cols],
        {"row": rows, "col": cols},
        rate=277.78,
        conversion=1e-6,
    )
    return path, frames


def test_a_recording_that_does_not_say_its_array_is_read_on_the_one_its_spec_names(recording):
    path, frames = recording
    with pytest.raises(SessionFileError, match=r"name it \('grid': FILE::grid=ROWSxCOLS@PITCHmm"):
        load_spec(str(path))
    (read,) = load_spec(f"{path}{NAMED}")
    assert read.grid == GRID
    np.testing.assert_allclose(read.frames, frames, rtol=1e-6)
    with pytest.raises(SessionFileError, match=r"records a 8x12 array and no pitch; the grid"):
        load_spec(f"{path}::grid=12x8@0.4mm")
    assert recorded_spec(f"{path}{NAMED}") == f"{path.resolve()}{NAMED}"  # reloaded so


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("::grid=8x12", r"an electrode array is named ROWSxCOLS@PITCHmm .*got '8x12'"),
        ("::grid=8x12@0.0004", r".*is named ROWSxCOLS@PITCHmm .*got '8x12@0\.0004'"),  # m? mm?
        ("::grid=8x0@0.4mm", r"'8x0@0\.4mm' names no electrode array"),
    ],
)
def test_a_grid_option_naming_no_array_is_refused_saying_how_to_name_one(
    recording, option, message
):
    path, _ = recording
    with pytest.raises(ValueError, match=rf"data '.*other\.nwb{option}': {message}"):
        load_spec(f"{path}{option}")


def test_an_xdf_recording_is_refused_an_array_its_header_does_not_record(recording, tmp_path):
    path, _ = recording
    (session,) = load_spec(f"{path}{NAMED}")
    xdf = tmp_path / "rig.xdf"
    write_xdf(xdf, session)
    assert load_spec(f"{xdf}{NAMED}")[0].grid == GRID
    with pytest.raises(SessionFileError, match=r"describes a 8x12 grid with pitch 0\.4 mm"):
        load_spec(f"{xdf}::grid=8x12@0.5mm")


def test_train_learns_the_array_its_data_names(recording, tmp_path):
    """A model took the rig's 18x20 shape whatever its data: training on another array failed
    on its first batch ("'past' must have shape (batch, 16, 1, 18, 20), got (2, 16, 1, 8, 12)").
    A shape set by hand that is not the data's is refused before anything trains."""
    path, _ = recording
    run_dir = tmp_path / "run"
    args = ["train", "mr_layer_lstm", "--data", f"{path}{NAMED}", "--run", str(run_dir)]
    args += ["--steps", "2", "--hidden", "3,4", "--batch-size", "2", "--window-stride", "16"]
    result = CliRunner().invoke(app, [*args, "--no-adversarial"])
    assert result.exit_code == 0, result.output
    state = load_checkpoint(run_dir)
    assert state["config"]["data"] == (f"{path}{NAMED}",)
    assert state["provenance"]["grid"] == {"rows": 8, "cols": 12, "pitch_m": 0.4e-3}
    assert state["config"]["model"]["grid_shape"] == [8, 12]
    args[args.index("--run") + 1] = str(tmp_path / "other-run")
    result = CliRunner().invoke(app, [*args, "--set", "grid_shape=[18,20]", "--no-adversarial"])
    assert result.exit_code != 0
    assert "--set grid_shape=[18, 20] is not the data's array, 8x12 at 0.4 mm pitch" in (
        result.output
    )
    assert not (tmp_path / "other-run").exists()


def test_rig_plays_the_array_its_source_names(recording):
    path, frames = recording
    source = source_from_settings(RigSettings(source=f"{path}{NAMED}", loop=False))
    assert source.grid == GRID
    played, _ = source.read(0, len(frames))
    np.testing.assert_allclose(played, frames, rtol=1e-6)
