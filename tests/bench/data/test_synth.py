"""Sessions as a whole: reproducibility, info, schedules, truth, and parameter errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bench.data.ground_truth import PATTERN_LABELS
from bench.data.session import Session
from bench.data.synth import (
    Artefacts,
    Background,
    Episode,
    NeuralField,
    PlaneWave,
    RadialWave,
    Seizure,
    SpiralWave,
    SynthConfig,
    generate_session,
    random_schedule,
)
from service.core.grid import NOMINAL_RATE_HZ, ElectrodeGrid

SHORT_S = 8.0


@pytest.fixture(scope="module")
def random_session() -> Session:
    return generate_session(
        SynthConfig(duration_s=SHORT_S, seed=7, artefacts=Artefacts.realistic())
    )


def _same(a: Session, b: Session) -> bool:
    return (
        np.array_equal(a.frames, b.frames)
        and np.array_equal(a.timestamps, b.timestamps)
        and a.truth.equals(b.truth)
        and a.info == b.info
    )


def test_same_seed_same_session_different_seed_different(random_session):
    again = generate_session(
        SynthConfig(duration_s=SHORT_S, seed=7, artefacts=Artefacts.realistic())
    )
    other = generate_session(
        SynthConfig(duration_s=SHORT_S, seed=8, artefacts=Artefacts.realistic())
    )
    assert _same(random_session, again)
    assert not np.array_equal(random_session.frames[:100], other.frames[:100])
    assert random_session.info["episodes"] != other.info["episodes"]


def test_session_shape_and_nominal_timeline():
    session = generate_session(SynthConfig(duration_s=1.0, episodes=()))
    assert session.frames.shape == (278, 18, 20)
    assert session.frames.dtype == np.float32
    assert session.timestamps[0] == 0.0
    np.testing.assert_array_equal(session.timestamps, np.arange(278) / NOMINAL_RATE_HZ)
    assert np.all(session.truth.label == PATTERN_LABELS.index("background"))
    assert SynthConfig(duration_s=60.0).n_frames == 16667


def test_info_is_json_and_regenerates_the_session(random_session):
    info = json.loads(json.dumps(random_session.info))
    assert info == random_session.info
    assert info["seed"] == 7
    config = SynthConfig.from_dict(info["config"])
    assert config == SynthConfig(duration_s=SHORT_S, seed=7, artefacts=Artefacts.realistic())
    # The recorded episode list pins the random schedule down explicitly.
    explicit = SynthConfig.from_dict({**info["config"], "episodes": info["episodes"]})
    assert explicit.episodes == random_schedule(SHORT_S, 7)
    regenerated = generate_session(explicit)
    assert regenerated.info["episodes"] == info["episodes"]
    np.testing.assert_array_equal(regenerated.frames, random_session.frames)
    np.testing.assert_array_equal(regenerated.timestamps, random_session.timestamps)
    assert regenerated.truth.equals(random_session.truth)


def test_random_schedule_mixes_every_kind_with_gaps():
    episodes = random_schedule(60.0, 3)
    kinds = {episode.kind for episode in episodes}
    assert kinds == set(PATTERN_LABELS) - {"background"}
    starts = np.array([episode.start_s for episode in episodes])
    ends = np.array([episode.end_s for episode in episodes])
    assert starts[0] > 0 and ends[-1] <= 60.0
    assert np.all(starts[1:] - ends[:-1] >= 0.3)  # background-only gaps, no overlap
    assert random_schedule(60.0, 4) != episodes
    assert random_schedule(0.5, 3) == ()


def test_random_session_truth_follows_its_schedule(random_session):
    truth = random_session.truth
    kept = np.setdiff1d(
        np.arange(random_session.info["n_frames_generated"]),
        random_session.info["artefacts"]["dropped_indices"],
    )
    t = kept / random_session.sample_rate_hz
    expected = np.zeros(t.size, dtype=np.int8)
    for episode in random_session.info["episodes"]:
        inside = (t >= episode["start_s"]) & (t < episode["start_s"] + episode["duration_s"])
        expected[inside] = PATTERN_LABELS.index(episode["kind"])
    np.testing.assert_array_equal(truth.label, expected)
    assert np.all(np.isnan(truth.velocity_mps[expected == 0]))
    assert np.all(truth.seizure == (expected == PATTERN_LABELS.index("seizure")))


def test_overlapping_episodes_are_labelled_by_the_stronger():
    weak = PlaneWave(start_s=0.5, duration_s=2.0, amplitude_uv=20.0, direction_deg=90.0)
    strong = RadialWave(start_s=1.0, duration_s=0.5, amplitude_uv=80.0, ramp_s=0.0)
    session = generate_session(SynthConfig(duration_s=3.0, episodes=(weak, strong)))
    t, truth = session.timestamps, session.truth
    labels = np.array(PATTERN_LABELS)[truth.label]
    assert np.all(labels[(t >= 1.0) & (t < 1.5)] == "radial")
    assert np.all(labels[((t >= 0.5) & (t < 1.0)) | ((t >= 1.5) & (t < 2.5))] == "plane")
    assert np.all(labels[(t < 0.5) | (t >= 2.5)] == "background")
    plane = labels == "plane"
    np.testing.assert_allclose(truth.velocity_mps[plane], [[0.0, 0.3]] * plane.sum(), atol=1e-12)


def test_a_bursting_wave_is_in_the_truth_only_while_it_is_on():
    """Half of a bursting wave's span holds no wave at all: there the truth is what the frames
    show (the background, or a weaker episode beneath), not the absent wave's velocity."""
    bursting = PlaneWave(start_s=0.0, duration_s=2.0, amplitude_uv=80.0, burst_hz=2.0, ramp_s=0.0)
    beneath = RadialWave(start_s=1.0, duration_s=1.0, amplitude_uv=20.0, ramp_s=0.0)
    session = generate_session(
        SynthConfig(duration_s=2.0, background=Background(rms_uv=0.0), episodes=(bursting,))
    )
    off = np.all(session.frames == 0, axis=(1, 2))
    assert 0.3 < off.mean() < 0.7
    labels = np.array(PATTERN_LABELS)[session.truth.label]
    assert np.all(labels[off] == "background") and np.all(labels[~off] == "plane")
    assert np.all(np.isnan(session.truth.speed_mps[off]))

    both = generate_session(
        SynthConfig(duration_s=2.0, background=Background(rms_uv=0.0), episodes=(bursting, beneath))
    )
    labels = np.array(PATTERN_LABELS)[both.truth.label]
    late = both.timestamps >= 1.0
    assert np.all(labels[off & late] == "radial") and np.all(labels[~off] == "plane")


def test_episodes_add_to_the_same_background():
    """Each part has its own random stream: an added episode leaves the rest untouched."""
    base = SynthConfig(duration_s=2.0, seed=1, episodes=())
    with_wave = SynthConfig(
        duration_s=2.0, seed=1, episodes=(PlaneWave(start_s=1.0, duration_s=0.5),)
    )
    a, b = generate_session(base), generate_session(with_wave)
    outside = (a.timestamps < 1.0) | (a.timestamps >= 1.5)
    np.testing.assert_array_equal(a.frames[outside], b.frames[outside])
    assert not np.array_equal(a.frames[~outside], b.frames[~outside])


def test_custom_grid_and_rate():
    grid = ElectrodeGrid(rows=4, cols=6, pitch_m=1e-3)
    config = SynthConfig(
        duration_s=1.0,
        sample_rate_hz=500.0,
        grid=grid,
        episodes=(NeuralField(start_s=0.0, duration_s=1.0),),
    )
    session = generate_session(config)
    assert session.frames.shape == (500, 4, 6)
    assert session.sample_rate_hz == 500.0
    assert random_schedule(30.0, 0, grid)  # sources are placed relative to this grid


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (
            lambda: PlaneWave(start_s=0, duration_s=1, speed_mps=2.0),
            ValueError,
            r"'PlaneWave\.speed_mps' must be a finite number in \[0\.05, 1\], got 2\.0",
        ),
        (
            lambda: PlaneWave(start_s=0, duration_s=1, speed_mps=0.01),
            ValueError,
            r"speed_mps.*0\.01",
        ),
        (
            lambda: RadialWave(start_s=0, duration_s=1, frequency_hz=45.0),
            ValueError,
            r"'RadialWave\.frequency_hz' must be a finite number in \[2, 40\], got 45\.0",
        ),
        (
            lambda: SpiralWave(start_s=0, duration_s=1, frequency_hz=1.0),
            ValueError,
            r"frequency_hz.*1\.0",
        ),
        (
            lambda: Seizure(start_s=0, duration_s=1, end_freq_hz=1.0),
            ValueError,
            r"end_freq_hz.*\[2, 40\]",
        ),
        (
            lambda: PlaneWave(start_s=0, duration_s=-1.0),
            ValueError,
            r"'PlaneWave\.duration_s' must be a finite number > 0, got -1\.0",
        ),
        (lambda: PlaneWave(start_s=-0.5, duration_s=1), ValueError, r"start_s.*>= 0.*-0\.5"),
        (
            lambda: PlaneWave(start_s=0, duration_s=1, amplitude_uv=math.nan),
            ValueError,
            r"amplitude_uv.*got nan",
        ),
        (
            lambda: PlaneWave(start_s=0, duration_s=1, direction_deg=math.inf),
            ValueError,
            r"direction_deg.*got inf",
        ),
        (
            lambda: PlaneWave(start_s=0, duration_s=1, ramp_s=0.6),
            ValueError,
            r"ramp_s.*\[0, 0\.5\]",
        ),
        (
            lambda: PlaneWave(start_s=0, duration_s=1, speed_mps="fast"),
            TypeError,
            r"speed_mps.*real number",
        ),
        (lambda: PlaneWave(start_s=0, duration_s=1, speeed_mps=0.3), TypeError, r"speeed_mps"),
        (
            lambda: SpiralWave(start_s=0, duration_s=1, handedness=0),
            ValueError,
            r"handedness.*\(1, -1\).*0",
        ),
        (lambda: RadialWave(start_s=0, duration_s=1, inward="yes"), TypeError, r"inward.*bool"),
        (lambda: NeuralField(start_s=0, duration_s=1, tau_s=1.0), ValueError, r"tau_s.*1\.0"),
        (
            lambda: SynthConfig(duration_s=-2.0),
            ValueError,
            r"'duration_s' must be a finite number > 0, got -2\.0",
        ),
        (lambda: SynthConfig(duration_s=math.nan), ValueError, r"'duration_s'.*nan"),
        (lambda: SynthConfig(duration_s=1.0, seed=-1), ValueError, r"'seed'.*>= 0.*-1"),
        (
            lambda: SynthConfig(duration_s=2.0, episodes=(PlaneWave(start_s=1.5, duration_s=1.0),)),
            ValueError,
            r"episodes\[0\] \(PlaneWave\) must end within the session.*got 2\.5",
        ),
        (
            lambda: SynthConfig(
                duration_s=2.0, episodes=(PlaneWave(start_s=0, duration_s=0.001, ramp_s=0),)
            ),
            ValueError,
            r"episodes\[0\].*at least 4 frames.*0\.001",
        ),
        (
            lambda: SynthConfig(duration_s=2.0, episodes=("plane",)),
            TypeError,
            r"'episodes\[0\]' must be PlaneWave or RadialWave or .*NeuralField, got str",
        ),
        (
            lambda: SynthConfig(duration_s=2.0, episodes=(Episode(start_s=0.0, duration_s=1.0),)),
            TypeError,
            r"'episodes\[0\]' must be PlaneWave.*got Episode",
        ),
        (
            lambda: SynthConfig(duration_s=1.0, sample_rate_hz=50.0),
            ValueError,
            r"'sample_rate_hz' must be > 2 x the highest generated frequency \(40 Hz\), got 50\.0",
        ),
        (
            lambda: SynthConfig(duration_s=1.0, artefacts=Artefacts(n_dead=300, n_noisy=100)),
            ValueError,
            r"n_dead.*n_noisy.*360.*400",
        ),
        (lambda: Artefacts(line_freq_hz=55.0), ValueError, r"line_freq_hz.*50.*60.*55"),
        (lambda: Artefacts(n_dead=1.5), TypeError, r"n_dead.*int"),
        (lambda: Background(rms_uv=-1.0), ValueError, r"rms_uv.*>= 0.*-1\.0"),
        (lambda: random_schedule(-1.0, 0), ValueError, r"duration_s.*-1\.0"),
    ],
)
def test_bad_parameters_are_rejected_with_clear_messages(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_from_dict_rejects_unknown_fields_and_kinds():
    good = SynthConfig(duration_s=2.0, episodes=(PlaneWave(start_s=0.0, duration_s=1.0),)).to_dict()
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['colour'\] in 'SynthConfig'"):
        SynthConfig.from_dict({**good, "colour": "red"})
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['hum'\] in 'artefacts'"):
        SynthConfig.from_dict({**good, "artefacts": {"hum": 1.0}})
    episode = good["episodes"][0]
    bad_params = {**episode, "params": {**episode["params"], "speeed_mps": 0.2}}
    with pytest.raises(ValueError, match=r"\['speeed_mps'\] in 'episodes\[0\]\.params'"):
        SynthConfig.from_dict({**good, "episodes": [bad_params]})
    with pytest.raises(ValueError, match=r"'kind' must be one of .*'plane'.*got 'wobble'"):
        SynthConfig.from_dict({**good, "episodes": [{**episode, "kind": "wobble"}]})
    assert SynthConfig.from_dict(good) == SynthConfig(
        duration_s=2.0, episodes=(PlaneWave(start_s=0.0, duration_s=1.0),)
    )


class _Recorder:
    """A progress bar that keeps what it was told."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.closed = total, [], 0

    def update(self, n: int) -> None:
        self.done.append(n)

    def close(self) -> None:
        self.closed += 1


def test_progress_counts_every_rendered_frame_and_changes_nothing(random_session):
    bars = []

    def progress(total: int) -> _Recorder:
        bars.append(_Recorder(total))
        return bars[-1]

    config = SynthConfig(duration_s=SHORT_S, seed=7, artefacts=Artefacts.realistic())
    assert _same(generate_session(config, progress=progress), random_session)
    (bar,) = bars
    episodes = random_session.info["episodes"]
    assert len(bar.done) == 1 + len(episodes) and bar.closed == 1
    assert bar.done[0] == config.n_frames  # the background, then each episode's span
    assert sum(bar.done) == bar.total and all(n > 0 for n in bar.done)
