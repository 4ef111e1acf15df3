import dataclasses
import json
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.data.session import Session
from bench.data.session_io import write_xdf
from bench.data.synth import Artefacts, SynthConfig, generate_session
from models.data import (
    FUTURE_FRAMES,
    PAST_FRAMES,
    SCALE_SIGMAS,
    STD_FLOOR_FRACTION,
    Normalisation,
    SessionWindows,
    split_by_time,
    window_starts,
)
from models.sources import load_spec
from service.core.grid import ElectrodeGrid

PERIOD = 1 / 277.78


@pytest.fixture(scope="module")
def session() -> Session:
    return generate_session(SynthConfig(duration_s=2.0, seed=7, artefacts=Artefacts.realistic()))


@pytest.fixture(scope="module")
def dropping() -> Session:
    """Many dropouts and jitter: windows must skip the gaps but not the jitter."""
    artefacts = Artefacts(drop_rate_hz=10.0, max_drop_frames=3, jitter_s=1e-4)
    return generate_session(SynthConfig(duration_s=1.5, seed=3, artefacts=artefacts))


def _random_frames(n: int = 500, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    offsets = rng.normal(0, 50, (18, 20))
    spreads = rng.uniform(5, 40, (18, 20))
    return (offsets + spreads * rng.standard_normal((n, 18, 20))).astype(np.float32)


def _with_frames(session: Session, frames: np.ndarray) -> Session:
    return Session(frames, session.timestamps, session.sample_rate_hz, info=session.info)


# --- Normalisation -------------------------------------------------------------------------


def test_fit_uses_per_electrode_mean_and_four_sigma():
    frames = _random_frames()
    norm = Normalisation.fit(frames)
    data = frames.astype(np.float64)
    np.testing.assert_allclose(norm.mean, data.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(norm.scale, SCALE_SIGMAS * data.std(axis=0), rtol=1e-6)
    assert norm.mean.dtype == norm.scale.dtype == np.float32
    assert norm.coverage(frames) > 0.999


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_normalise_round_trip(kind):
    frames = _random_frames()
    norm = Normalisation.fit(frames)
    data = frames if kind == "numpy" else torch.from_numpy(frames).reshape(5, 100, 1, 18, 20)
    normalised = norm.normalise(data)
    assert type(normalised) is type(data) and normalised.dtype == data.dtype
    back = norm.denormalise(normalised)
    back = back if kind == "numpy" else back.reshape(frames.shape).numpy()
    np.testing.assert_allclose(back, frames, rtol=1e-6, atol=1e-6 * np.abs(frames).max())


def test_normalised_values_match_the_formula():
    norm = Normalisation(np.full((2, 3), 10, np.float32), np.full((2, 3), 4, np.float32))
    frames = np.array([[[10, 14, 6], [12, 18, 10]]], dtype=np.float32)
    np.testing.assert_array_equal(norm.normalise(frames), [[[0, 1, -1], [0.5, 2, 0]]])
    assert norm.coverage(frames) == pytest.approx(3 / 6)


def test_dead_channel_gets_the_floor():
    frames = _random_frames()
    frames[:, 4, 7] = 3.0  # flat: a broken contact
    norm = Normalisation.fit(frames)
    median_std = np.median(frames.astype(np.float64).std(axis=0)[frames.std(axis=0) > 0])
    assert norm.scale[4, 7] == pytest.approx(SCALE_SIGMAS * STD_FLOOR_FRACTION * median_std)
    assert np.all(np.isfinite(norm.normalise(frames)))


def test_valid_mask_excludes_placeholder_frames():
    frames = _random_frames()
    valid = np.ones(len(frames), dtype=bool)
    valid[::7] = False
    with_junk = frames.copy()
    with_junk[~valid] = np.nan
    masked = Normalisation.fit(with_junk, valid_mask=valid)
    clean = Normalisation.fit(frames[valid])
    np.testing.assert_array_equal(masked.mean, clean.mean)
    np.testing.assert_array_equal(masked.scale, clean.scale)


def test_dict_round_trip_is_exact_through_json():
    norm = Normalisation.fit(_random_frames())
    restored = Normalisation.from_dict(json.loads(json.dumps(norm.to_dict())))
    np.testing.assert_array_equal(restored.mean, norm.mean)
    np.testing.assert_array_equal(restored.scale, norm.scale)
    assert restored.mean.dtype == np.float32


def test_normalisation_is_read_only():
    norm = Normalisation.fit(_random_frames())
    with pytest.raises(ValueError, match="read-only"):
        norm.mean[0, 0] = 1.0


def test_normalisation_errors():
    norm = Normalisation.fit(_random_frames())
    with pytest.raises(ValueError, match=r"'frames' must end in the grid shape \(18, 20\)"):
        norm.normalise(np.zeros((4, 20, 18), np.float32))
    with pytest.raises(TypeError, match="'frames' must be ndarray or Tensor, got list"):
        norm.normalise([[0.0]])
    frames = _random_frames(3)
    frames[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="'frames' must be finite, got 1 NaN"):
        Normalisation.fit(frames)
    with pytest.raises(ValueError, match="'frames' must vary on at least one electrode"):
        Normalisation.fit(np.ones((10, 18, 20), np.float32))
    with pytest.raises(ValueError, match="'scale' must be > 0 everywhere"):
        Normalisation(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match=r"exactly the keys \['mean', 'scale'\], got \['mean'"):
        Normalisation.from_dict({**norm.to_dict(), "sigma": 4})


# --- windows and splits --------------------------------------------------------------------


def test_window_starts_skip_gaps_but_tolerate_jitter():
    steps = np.full(11, PERIOD)
    steps[4] = 1.4 * PERIOD  # jitter before frame 4, not a gap
    steps[7] = 3 * PERIOD  # two samples dropped before frame 7
    timestamps = np.cumsum(steps)
    assert window_starts(timestamps, 277.78, length=3).tolist() == [0, 1, 2, 3, 4, 7, 8]
    assert window_starts(timestamps, 277.78, length=3, stride=2).tolist() == [0, 2, 4, 7]
    assert window_starts(timestamps, 277.78, length=12).tolist() == []


def test_window_starts_on_a_session_with_dropouts(dropping):
    dropped = dropping.info["artefacts"]["dropped_indices"]
    assert len(dropped) > 5
    original = np.setdiff1d(np.arange(dropping.info["n_frames_generated"]), dropped)
    starts = window_starts(dropping.timestamps, dropping.sample_rate_hz)
    # Exactly the windows whose 32 frames were consecutive in the generator's timeline.
    unbroken = original[31:] - original[:-31] == 31
    assert starts.tolist() == np.flatnonzero(unbroken).tolist()


def test_window_starts_errors():
    with pytest.raises(ValueError, match="'stride' must be an int >= 1, got 0"):
        window_starts(np.arange(40.0), 1.0, stride=0)
    with pytest.raises(TypeError, match="'timestamps' must have dtype float64"):
        window_starts(np.arange(40), 1.0)


@settings(deadline=None)  # pure arithmetic; a loaded CI machine must not make it flaky
@given(
    n_frames=st.integers(65, 100_000),
    train=st.floats(0.0, 1.0),
    val_share=st.floats(0.0, 1.0),
    guard=st.integers(0, 32),
)
def test_splits_are_ordered_disjoint_and_guarded(n_frames, train, val_share, guard):
    val = (1.0 - train) * val_share
    fractions = (train, val, 1.0 - train - val)
    ranges = split_by_time(n_frames, fractions, guard)
    train_r, val_r, test_r = ranges["train"], ranges["val"], ranges["test"]
    assert train_r.start == 0 and test_r.stop == n_frames
    assert val_r.start - train_r.stop == guard and test_r.start - val_r.stop == guard
    assert len(train_r) + len(val_r) + len(test_r) == n_frames - 2 * guard
    assert abs(len(train_r) - train * (n_frames - 2 * guard)) <= 1


def test_split_default_fractions():
    assert split_by_time(1064) == {
        "train": range(0, 800),
        "val": range(832, 932),
        "test": range(964, 1064),
    }


def test_split_errors():
    with pytest.raises(ValueError, match=r"'fractions' must sum to 1, got \(0.8, 0.1, 0.2\)"):
        split_by_time(1000, (0.8, 0.1, 0.2))
    with pytest.raises(ValueError, match=r"'n_frames' must exceed 2 x 'guard' \(64\)"):
        split_by_time(64)
    with pytest.raises(ValueError, match=r"'fractions\[1\]' must be a finite number in"):
        split_by_time(1000, (0.9, -0.1, 0.2))


# --- SessionWindows ------------------------------------------------------------------------


def test_items_are_normalised_windows_of_the_session(session):
    train = SessionWindows(session, "train", stride=3)
    span = split_by_time(session.n_frames)["train"]
    starts = window_starts(session.timestamps[: span.stop], session.sample_rate_hz, stride=3)
    assert len(train) == len(starts) > 0
    for index in (0, len(train) // 2, len(train) - 1):
        past, future = train[index]
        assert past.shape == future.shape == (PAST_FRAMES, 1, 18, 20)
        assert past.dtype == torch.float32
        start = starts[index]
        both = train.normalisation.denormalise(torch.cat([past, future])[:, 0]).numpy()
        expected = session.frames[start : start + PAST_FRAMES + FUTURE_FRAMES]
        np.testing.assert_allclose(both, expected, rtol=1e-5, atol=1e-4)


def test_batches_have_the_model_layout(session):
    loader = torch.utils.data.DataLoader(SessionWindows(session, stride=8), batch_size=4)
    past, future = next(iter(loader))
    assert past.shape == future.shape == (4, 16, 1, 18, 20)


def test_normalisation_is_fitted_on_the_training_split_only(session):
    train = SessionWindows(session, "train")
    later = session.frames.copy()
    held_out = split_by_time(session.n_frames)["val"].start
    later[held_out:] = later[held_out:] * 10 + 500
    changed = SessionWindows(_with_frames(session, later), "train")
    np.testing.assert_array_equal(changed.normalisation.mean, train.normalisation.mean)
    np.testing.assert_array_equal(changed.normalisation.scale, train.normalisation.scale)
    test = SessionWindows(_with_frames(session, later), "test", train.normalisation)
    assert test.normalisation is train.normalisation
    assert test.provenance["coverage"] < 0.5  # the shifted test data falls outside (-1, 1)


def test_held_out_splits_need_the_training_normalisation(session):
    with pytest.raises(ValueError, match="'normalisation' must be given for split 'val'"):
        SessionWindows(session, "val")


def test_provenance_is_json_and_describes_the_windows(session, dropping):
    train = SessionWindows([session, dropping], "train", stride=2)
    provenance = json.loads(json.dumps(train.provenance))
    assert provenance["n_windows"] == len(train)
    assert [s["n_windows"] for s in provenance["sessions"]] == [
        len(SessionWindows(one, "train", stride=2)) for one in (session, dropping)
    ]
    first = provenance["sessions"][0]
    assert first["seed"] == 7 and first["generator"] == "bench.synth"
    assert first["splits"]["train"] == [0, split_by_time(session.n_frames)["train"].stop]
    assert provenance["split"] == "train" and provenance["stride"] == 2
    assert 0.99 < provenance["coverage"] <= 1.0


def test_windows_are_deterministic(session):
    one, two = SessionWindows(session, stride=5), SessionWindows(session, stride=5)
    assert len(one) == len(two)
    for index in (0, len(one) - 1):
        torch.testing.assert_close(one[index], two[index], rtol=0, atol=0)


def test_a_recordings_non_finite_frames_are_refused_naming_its_file(session, tmp_path):
    """`corticast evaluate --data x.xdf`/`train` read sessions through ``load_spec``: a NaN in
    a recording is refused naming the file, not only its index among the sessions."""
    broken = session.frames.copy()
    broken[10, 3, 3] = np.nan
    path = tmp_path / "faulty.xdf"
    write_xdf(path, _with_frames(session, broken))
    [loaded] = load_spec(str(path))
    with pytest.raises(ValueError, match=rf"frames\[0:\d+\] of {re.escape(str(path))}' must be"):
        SessionWindows(loaded)


def test_sessions_of_arrays_of_another_pitch_are_not_windowed_together(session, tmp_path):
    """A model learns one array's waves and records one pitch (the first session's), which the
    daemon checks streams against: sessions of the same shape at another pitch were windowed
    together, the others' pitch lost. One recorded through an XDF file (its pitch in mm, a
    unit in the last place off in m) is still the same array."""
    wider = dataclasses.replace(session, grid=ElectrodeGrid(18, 20, pitch_m=0.71e-3))
    with pytest.raises(
        ValueError,
        match=r"'sessions\[1\].grid' must be the first session's array, 18x20 at 0.5 mm pitch, "
        r"got 18x20 at 0.71 mm pitch",
    ):
        SessionWindows([session, wider])
    write_xdf(tmp_path / "wider.xdf", wider)
    [recorded] = load_spec(str(tmp_path / "wider.xdf"))
    assert recorded.grid.pitch_m != wider.grid.pitch_m  # the round trip this is about
    assert len(SessionWindows([wider, recorded], stride=50)) > 0


def test_sessions_at_one_rate_within_its_tolerance_are_windowed_together(session):
    """A rate read back from timestamps (an NWB file that declares none: 1 / their median
    step) differs from the declared one in its last places; such sessions were refused as of
    another rate, where the daemon and a model's checks take them as one (RATE_TOLERANCE)."""
    inferred = dataclasses.replace(session, sample_rate_hz=session.sample_rate_hz * (1 + 1e-9))
    assert len(SessionWindows([session, inferred], stride=50)) > 0
    faster = dataclasses.replace(session, sample_rate_hz=session.sample_rate_hz * 1.01)
    with pytest.raises(ValueError, match=r"'sessions\[1\].sample_rate_hz' must be the first "):
        SessionWindows([session, faster])


def test_session_errors(session):
    short = Session(session.frames[:20], session.timestamps[:20])
    with pytest.raises(ValueError, match=r"'sessions\[1\]' must hold at least one window"):
        SessionWindows([session, short])
    broken = session.frames.copy()
    broken[10, 3, 3] = np.nan
    with pytest.raises(ValueError, match=r"'sessions\[0\].frames\[0:\d+\]' must be finite"):
        SessionWindows(_with_frames(session, broken))
    wrong = Normalisation(np.zeros((9, 10), np.float32), np.ones((9, 10), np.float32))
    with pytest.raises(ValueError, match="'normalisation' must match the sessions' grid"):
        SessionWindows(session, "test", wrong)
    with pytest.raises(ValueError, match="'split' must be one of"):
        SessionWindows(session, "validation")
    with pytest.raises(TypeError, match=r"'sessions\[0\]' must be Session, got ndarray"):
        SessionWindows([session.frames])
    windows = SessionWindows(session, stride=50)
    with pytest.raises(IndexError, match=r"'index' must be in \[-\d+, \d+\), got 10000"):
        windows[10_000]
    assert len(list(windows)) == len(windows)  # iteration stops at IndexError
