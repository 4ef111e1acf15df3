"""The wave estimator recovers the generator's waves, masks dead channels and refuses bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from bench.benchmarks.wave_accuracy import pgd_and_speed_pass
from bench.data.synth import (
    Background,
    PlaneWave,
    RadialWave,
    SpiralWave,
    SynthConfig,
    generate_session,
)
from service.core.grid import DEFAULT_GRID, NOMINAL_RATE_HZ, ElectrodeGrid
from service.policy.settings import PolicySettings
from service.policy.stimulation_policy import longest_run
from service.waves.estimator import PATTERNS, WaveEstimate, WaveEstimator
from service.waves.settings import WaveSettings
from service.waves.summary import SUMMARY_FIELDS, wave_summary

FS = NOMINAL_RATE_HZ
BLOCK = 64  # the default 48 measured + 16 predicted frames


@pytest.fixture(scope="module")
def estimator() -> WaveEstimator:
    return WaveEstimator()


def _session(episode, *, background_uv: float = 0.0, seed: int = 0, duration_s: float = 0.6):
    config = SynthConfig(
        duration_s=duration_s,
        seed=seed,
        background=Background(rms_uv=background_uv),
        episodes=(episode,),
    )
    return generate_session(config)


def _plane(speed: float, direction: float, frequency: float = 10.0, amplitude: float = 50.0):
    return PlaneWave(
        start_s=0.0,
        duration_s=0.6,
        ramp_s=0.0,
        amplitude_uv=amplitude,
        frequency_hz=frequency,
        speed_mps=speed,
        direction_deg=direction,
    )


def _angle_error(a: np.ndarray, b: np.ndarray | float) -> np.ndarray:
    return np.abs((np.asarray(a) - b + 180.0) % 360.0 - 180.0)


# -- plane waves -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("speed", "direction", "frequency"),
    [(0.05, 30.0, 10.0), (0.2, -120.0, 8.0), (0.5, 179.0, 20.0), (1.0, 90.0, 25.0)],
)
def test_plane_wave_recovered_at_high_snr(estimator, speed, direction, frequency):
    # 20 dB: wave rms 10x the 1/f background's rms.
    amplitude = math.sqrt(2) * 10 * 5.0
    session = _session(_plane(speed, direction, frequency, amplitude), background_uv=5.0)
    block = slice(100, 100 + BLOCK)
    estimate = estimator.estimate(session.frames[block])
    tail = estimate.predicted

    truth = session.truth.velocity_mps[block][tail]
    true_speed = np.hypot(truth[:, 0], truth[:, 1])
    true_direction = np.degrees(np.arctan2(truth[:, 1], truth[:, 0]))
    speed_error = np.abs(estimate.speed_mps[tail] - true_speed) / true_speed
    assert np.median(speed_error) < 0.10
    assert np.median(_angle_error(estimate.direction_deg[tail], true_direction)) < 10.0
    assert np.all(estimate.pgd[tail] > 0.9)
    assert set(estimate.pattern_names[tail]) == {"planar"}
    assert np.allclose(estimate.frequency_hz[tail], frequency, rtol=0.1)


def test_speed_units_from_an_analytic_wave(estimator):
    """Speed = 2πf / |∇φ| with metres and seconds, independent of the generator."""
    _, y = DEFAULT_GRID.positions_m()
    t = np.arange(BLOCK)[:, None, None] / FS
    speed, frequency = 0.25, 12.0
    k = 2 * np.pi * frequency / speed  # rad/m along +y
    frames = (40.0 * np.cos(2 * np.pi * frequency * t - k * y)).astype(np.float32)
    estimate = estimator.estimate(frames)
    tail = estimate.predicted
    assert np.median(estimate.speed_mps[tail]) == pytest.approx(speed, rel=0.05)
    assert np.median(estimate.direction_deg[tail]) == pytest.approx(90.0, abs=1.0)
    assert np.median(estimate.frequency_hz[tail]) == pytest.approx(frequency, rel=0.05)
    assert np.median(estimate.amplitude_uv[tail]) == pytest.approx(40.0, rel=0.15)


@pytest.mark.parametrize("direction", [-180.0, -90.0, -45.0, 0.0, 60.0, 135.0])
def test_direction_convention_matches_ground_truth(estimator, direction):
    """Angles from +x (columns) toward +y (rows), direction of travel, as in service.core.grid."""
    session = _session(_plane(0.2, direction))
    estimate = estimator.estimate(session.frames[100 : 100 + BLOCK])
    vx, vy = session.truth.velocity_mps[0]
    truth = math.degrees(math.atan2(vy, vx))
    assert _angle_error(truth, direction) < 1e-6
    assert np.all(_angle_error(estimate.direction_deg[estimate.predicted], truth) < 2.0)
    assert np.all(estimate.direction_deg >= -180.0)
    assert np.all(estimate.direction_deg < 180.0)


def test_direction_of_a_wave_along_rows_points_to_larger_rows(estimator):
    """A crest that reaches row 17 after row 0 travels toward +y: +90°."""
    rows = np.arange(DEFAULT_GRID.rows)[None, :, None]
    t = np.arange(BLOCK)[:, None, None]
    frames = np.cos(2 * np.pi * (t / 28.0 - rows / 12.0)) * np.ones((1, 1, DEFAULT_GRID.cols))
    estimate = estimator.estimate(frames.astype(np.float32) * 30)
    assert np.median(estimate.direction_deg[estimate.predicted]) == pytest.approx(90.0, abs=1.0)


# -- dead channels, degenerate input ---------------------------------------------------------


def test_dead_channels_are_masked_without_nans(estimator):
    session = _session(_plane(0.1, 45.0), background_uv=5.0)
    frames = session.frames[100 : 100 + BLOCK].copy()
    live = np.ones(DEFAULT_GRID.shape, dtype=bool)
    rng = np.random.default_rng(3)
    dead = rng.choice(live.size, size=60, replace=False)
    live.ravel()[dead] = False
    live[0, :] = False  # a whole edge row too
    frames[:, ~live] = np.nan  # whatever a dead channel holds must not matter
    frames[:, ~live][:, ::2] = 1e9

    estimate = estimator.estimate(frames, live)
    for name, value in vars(estimate).items():
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            assert not np.isnan(value).any(), name
    assert np.all(estimate.envelope_uv[:, ~live] == 0)
    tail = estimate.predicted
    assert np.median(estimate.speed_mps[tail]) == pytest.approx(0.1, rel=0.1)
    assert np.median(_angle_error(estimate.direction_deg[tail], 45.0)) < 5.0
    assert np.array_equal(estimate.channel_valid, live)


@pytest.mark.parametrize("line", [0, 1])
def test_every_fourth_channel_dead_keeps_the_waves_frequency_and_speed(estimator, line):
    """One line of a 4-way multiplexer dead: channels line, line + 4, ... in row-major order
    (a quarter of the array, whole columns on the 20-column grid). The rhythm is found on the
    live channels, so the wave keeps its frequency and speed."""
    _, x = np.meshgrid(np.arange(DEFAULT_GRID.rows), np.arange(DEFAULT_GRID.cols), indexing="ij")
    session = _session(_plane(0.3, 30.0, frequency=10.0))
    frames = session.frames[100 : 100 + BLOCK].copy()
    live = np.ones(DEFAULT_GRID.shape, dtype=bool)
    live.ravel()[line::4] = False
    assert np.all(live == (x % 4 != line))
    estimate = estimator.estimate(frames, live)
    tail = estimate.predicted
    assert np.median(estimate.frequency_hz[tail]) == pytest.approx(10.0, rel=0.03)
    assert np.median(estimate.speed_mps[tail]) == pytest.approx(0.3, rel=0.03)


@pytest.mark.parametrize("frequency", [6.0, 20.0])
def test_every_fourth_channel_dead_keeps_the_envelope_of_the_newest_frames(estimator, frequency):
    """The forecast that keeps the Hilbert transform's edge away from the predicted frames is
    fitted on live channels: with every fourth channel dead (line 0 of a 4-way multiplexer)
    the envelope the policy locates the wave with is the one all channels give."""
    session = _session(_plane(0.3, 0.0, frequency=frequency))
    frames = session.frames[100 : 100 + BLOCK]
    live = np.ones(DEFAULT_GRID.shape, dtype=bool)
    live.ravel()[::4] = False
    tail = slice(BLOCK - 16, BLOCK)
    dead = estimator.estimate(frames, live).envelope_uv[tail][:, live]
    full = estimator.estimate(frames).envelope_uv[tail][:, live]
    assert np.max(np.abs(dead - full) / full) < 0.05


@pytest.mark.parametrize("frequency", [6.0, 20.0])
def test_an_extension_short_of_a_quarter_period_is_refused(estimator, frequency):
    """``extension_frames = 0`` was accepted and put the Hilbert transform's edge on the
    newest frames: a steady 40 µV 6 Hz wave read 29 µV there against 36.9 µV at the default
    32 frames. Fewer than a quarter period of ``low_hz`` (18 frames of 4 Hz at 277.78 Hz) is
    refused, naming the setting and the least; at the least the envelope is the default's."""
    least = math.ceil(FS / 16)
    for short in (0, least - 1):
        with pytest.raises(ValueError, match=rf"'extension_frames' must be at least {least} "):
            WaveEstimator(WaveSettings(extension_frames=short))
    assert WaveSettings().min_extension_frames(FS) == least == 18
    frames = _session(_plane(0.3, 0.0, frequency, amplitude=40.0)).frames[100 : 100 + BLOCK]
    shortest = WaveEstimator(WaveSettings(extension_frames=least)).estimate(frames)
    default = estimator.estimate(frames)
    tail = default.predicted
    assert np.max(np.abs(shortest.amplitude_uv[tail] / default.amplitude_uv[tail] - 1)) < 0.05


def test_a_dead_band_of_rows_keeps_a_slow_waves_speed_and_direction(estimator):
    """Rows 14-17 dead (a four-row connector off: 78 % live) leave no live pair at the y axis's
    longest distance (14 rows), whose sum of products is then exactly 0. That link must leave
    the gradient as it was: the angle of a zero whose parts are signed zeros is ±π, which
    added π/14 per electrode to this wave's 0.21 rad step along y."""
    session = _session(_plane(0.15, 90.0), background_uv=5.0)
    live = np.ones(DEFAULT_GRID.shape, dtype=bool)
    live[14:] = False
    estimate = estimator.estimate(session.frames[100 : 100 + BLOCK], live)
    tail = estimate.predicted
    assert np.median(estimate.speed_mps[tail]) == pytest.approx(0.15, rel=0.1)
    assert np.max(_angle_error(estimate.direction_deg[tail], 90.0)) < 5.0


@pytest.mark.parametrize(("speed", "direction"), [(0.3, 0.0), (0.5, -120.0)])
def test_alternate_columns_dead_name_no_pattern(estimator, speed, direction):
    """A lost multiplexer line that kills alternate columns leaves half the channels live
    (enough for ``min_live_fraction``) but no electrode with a live neighbour along both
    axes: the PGD is 0 on every frame. Without a gradient no pattern is measured, so every
    frame is disorganised; the correlations alone, over columns of electrodes, had read
    these plane waves as radial and rotating on ``/status``."""
    session = _session(_plane(speed, direction), background_uv=5.0)
    live = np.ones(DEFAULT_GRID.shape, dtype=bool)
    live[:, 1::2] = False
    estimate = estimator.estimate(session.frames[100 : 100 + BLOCK], live)
    assert np.all(estimate.pgd == 0.0)
    assert set(estimate.pattern_names) == {"disorganised"}


def test_a_flat_channel_not_yet_masked_leaves_the_pgd_alone(estimator):
    """A broken contact is held flat by the ingestor and only masked at the baseline's next
    refresh; until then its analytic signal is exactly 0, and so are its products with its
    neighbours. Its gradient is then 0 (it shows no direction), not ±π per pitch from the
    signs of those zeros, which pulled a plane wave's PGD from 0.99 to 0.6-0.8."""
    session = _session(_plane(0.3, 30.0), background_uv=5.0)
    frames = session.frames[100 : 100 + BLOCK].copy()
    frames[:, 9, 10] = 17.0
    frames[:, 5, 5] = 17.0
    frames[:, 12, 3] = -4.0
    estimate = estimator.estimate(frames)
    assert np.all(estimate.pgd[estimate.predicted] > 0.95)


def test_dead_channel_values_do_not_change_the_estimate(estimator):
    session = _session(_plane(0.3, -60.0), background_uv=10.0)
    frames = session.frames[100 : 100 + BLOCK].copy()
    live = np.ones(DEFAULT_GRID.shape, dtype=bool)
    live[5:8, 3:6] = False
    first = estimator.estimate(frames, live)
    frames[:, ~live] = 123.0
    second = estimator.estimate(frames, live)
    assert np.array_equal(first.speed_mps, second.speed_mps)
    assert np.array_equal(first.pgd, second.pgd)


def test_flat_and_synchronous_input_give_no_nans(estimator):
    flat = np.zeros((BLOCK, *DEFAULT_GRID.shape), dtype=np.float32)
    t = np.arange(BLOCK)[:, None, None] / FS
    synchronous = (30 * np.sin(2 * np.pi * 10 * t) * np.ones((1, *DEFAULT_GRID.shape))).astype(
        np.float32
    )
    for frames in (flat, synchronous):
        estimate = estimator.estimate(frames)
        for name, value in vars(estimate).items():
            if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                assert not np.isnan(value).any(), name
        assert np.all(estimate.pgd == 0.0)
        assert np.all(np.isinf(estimate.speed_mps))  # no gradient: zero-lag, infinite speed
        assert set(estimate.pattern_names) == {"disorganised"}


# -- patterns --------------------------------------------------------------------------------


@pytest.mark.parametrize("inward", [False, True])
def test_radial_wave_is_classified_radial(estimator, inward):
    episode = RadialWave(
        start_s=0.0,
        duration_s=0.6,
        ramp_s=0.0,
        frequency_hz=10.0,
        speed_mps=0.15,
        source_x_m=4.0e-3,
        source_y_m=5.0e-3,
        inward=inward,
    )
    estimate = estimator.estimate(_session(episode, background_uv=5.0).frames[100 : 100 + BLOCK])
    tail = estimate.predicted
    assert np.mean(estimate.pattern[tail] == PATTERNS.index("radial")) >= 0.9
    assert np.all(estimate.pgd[tail] < 0.5)
    assert np.all(estimate.phase_distance_corr[tail] > 0.9)


@pytest.mark.parametrize("handedness", [1, -1])
def test_rotating_wave_is_classified_rotating_with_its_sense(estimator, handedness):
    episode = SpiralWave(
        start_s=0.0,
        duration_s=0.6,
        ramp_s=0.0,
        frequency_hz=8.0,
        speed_mps=0.4,
        centre_x_m=5.0e-3,
        centre_y_m=4.0e-3,
        handedness=handedness,
    )
    estimate = estimator.estimate(_session(episode, background_uv=5.0).frames[100 : 100 + BLOCK])
    tail = estimate.predicted
    assert np.mean(estimate.pattern[tail] == PATTERNS.index("rotating")) >= 0.9
    assert np.all(np.sign(estimate.phase_angle_corr[tail]) == handedness)
    assert np.all(np.abs(estimate.phase_angle_corr[tail]) > 0.8)


def test_background_alone_is_mostly_not_organised(estimator):
    session = generate_session(SynthConfig(duration_s=1.0, seed=5, episodes=()))
    labels = [
        estimator.estimate(session.frames[start : start + BLOCK]).pattern
        for start in range(0, session.n_frames - BLOCK, 40)
    ]
    labels = np.concatenate(labels)
    assert np.mean(labels == PATTERNS.index("disorganised")) > 0.6
    assert np.mean(labels == PATTERNS.index("planar")) < 0.1


@pytest.mark.parametrize(
    "spatial",
    [
        lambda rows, cols: np.where(cols < 9.5, 1.0, -1.0),  # a reversal across the middle
        lambda rows, cols: np.where(rows < 8.5, 1.0, -1.0),  # the same along rows
        lambda rows, cols: np.where(cols < 4.5, 1.0, -1.0),  # off centre
        lambda rows, cols: np.cos(np.pi * cols / 19),  # a standing half wavelength
        lambda rows, cols: np.cos(2 * np.pi * cols / 16 + 1.05),  # 8 mm: nodes 2 mm apart
        lambda rows, cols: np.cos(2 * np.pi * cols / 16 + 0.52),
    ],
    ids=["columns", "rows", "off-centre", "standing", "standing-8mm", "standing-8mm-shifted"],
)
def test_a_phase_reversal_is_not_a_travelling_wave(estimator, spatial):
    """A dipole under the array (or a standing wave) oscillates in phase on either side of a
    line and in anti-phase across it: nothing travels. Its gradients, all at the line, are
    aligned, and its long-distance phase steps read as a plausible speed: 14-19 % of blocks of
    a 10 Hz reversal at 10 dB passed the policy's PGD and speed checks on 8 consecutive
    predicted frames, in a direction of either sign along the reversal's axis (here before:
    13-24 % of the frames had PGD >= 0.6). The chain's far links contradict the near ones, and
    such a frame's PGD is 0. A standing wave 8 mm long has nodes 4 mm apart inside the array:
    its products 4 pitches apart cancel, and the far link locked the gradient onto its
    wavelength, 0.08 m/s (10-11 % of the frames had PGD >= 0.6); such a link is no evidence
    either, and the frame's PGD is 0."""
    background = generate_session(
        SynthConfig(duration_s=1.5, seed=2, background=Background(rms_uv=20.0), episodes=())
    ).frames
    t = np.arange(len(background)) / FS
    rows, cols = np.indices(DEFAULT_GRID.shape)
    oscillation = 89.0 * np.cos(2 * np.pi * 10.0 * t)  # 10 dB over the background
    frames = background + oscillation[:, None, None] * spatial(rows, cols)[None]
    pgd = np.concatenate(
        [
            estimator.estimate(frames[start : start + BLOCK].astype(np.float32)).pgd
            for start in range(100, len(frames) - BLOCK, 11)
        ]
    )
    assert pgd.size > 1000
    assert np.mean(pgd >= 0.6) < 0.01


@pytest.mark.parametrize(
    "position",
    [
        lambda rows, cols: rows - 1.0,  # a node on row 1: the array sees one side of it
        lambda rows, cols: cols - 18.0,  # on column 18, near the far edge
        lambda rows, cols: (rows + cols) / math.sqrt(2) - 1.0,  # diagonal, beside a corner
        lambda rows, cols: (rows + cols) / math.sqrt(2) - 4.0,
    ],
    ids=["rows", "columns", "diagonal", "diagonal-4"],
)
def test_a_standing_wave_with_its_node_near_the_edge_is_not_a_travelling_wave(estimator, position):
    """A standing wave 20 mm long (a node every 10 mm) whose node lies near the array's edge:
    nothing travels, but beside the node the wave is weak and the background's phase shows
    through, weighted by the wave's graded amplitude, so the phase changes near the node and
    hardly at all where the wave is strong. Its per-electrode gradients are aligned, and the
    far links of the mean gradient read the whole change as a speed of 0.5-0.9 m/s: 10 Hz at
    10 dB passed the policy's PGD and speed checks (not the amplitude, direction or lead) on
    ``persistence_frames`` consecutive predicted frames in 6 (rows), 8 (columns), 3 and 4
    (diagonal) of 23 blocks. A plane wave's far links find the step its neighbours show."""
    policy = PolicySettings()
    background = generate_session(
        SynthConfig(duration_s=1.5, seed=2, background=Background(rms_uv=20.0), episodes=())
    ).frames
    t = np.arange(len(background)) / FS
    rows, cols = np.indices(DEFAULT_GRID.shape)
    gain = np.sin(2 * np.pi * position(rows, cols) / 40.0)  # 40 pitches: 20 mm
    frames = background + 89.0 * np.cos(2 * np.pi * 10.0 * t)[:, None, None] * gain[None]
    passing = []
    for start in range(100, len(frames) - BLOCK, 11):
        estimate = estimator.estimate(frames[start : start + BLOCK].astype(np.float32))
        ok = pgd_and_speed_pass(estimate, policy)
        passing.append(longest_run(ok)[1] >= policy.persistence_frames)
    assert len(passing) == 23
    assert sum(passing) == 0


@pytest.mark.parametrize(
    ("frequency", "speed", "waveform"), [(20.0, 0.1, "sharp"), (30.0, 0.05, "sine")]
)
def test_a_slow_wave_keeps_its_pgd_beside_the_reversal_check(estimator, frequency, speed, waveform):
    """A slow wave's neighbours differ by a large step, and the chain's far links multiply
    that step's error by their distance: checked like a reversal's, a sharp 20 Hz wave at
    0.1 m/s at 0 dB kept 61 % of its frames with PGD >= 0.6 instead of all, a 30 Hz one at
    0.05 m/s 23 % instead of 91 %. The check applies only where the near step is small."""
    episode = PlaneWave(
        start_s=0.0,
        duration_s=1.2,
        frequency_hz=frequency,
        speed_mps=speed,
        direction_deg=37.0,
        waveform=waveform,
    )
    background = episode.amplitude_uv / math.sqrt(2)  # 0 dB
    frames = _session(episode, background_uv=background, seed=1, duration_s=1.2).frames
    pgd = np.concatenate(
        [estimator.estimate(frames[s : s + 48]).pgd[-16:] for s in range(0, len(frames) - 48, 24)]
    )
    assert np.mean(pgd >= 0.6) > 0.85


# -- output ----------------------------------------------------------------------------------


def test_estimate_is_deterministic_read_only_and_shaped(estimator):
    frames = _session(_plane(0.2, 10.0), background_uv=20.0).frames[:BLOCK]
    first, second = estimator.estimate(frames), estimator.estimate(frames)
    for name, value in vars(first).items():
        if isinstance(value, np.ndarray):
            assert np.array_equal(value, getattr(second, name)), name
            assert not value.flags.writeable, name
            assert value.shape[0] in (BLOCK, DEFAULT_GRID.rows), name
    assert first.n_frames == BLOCK
    assert first.n_predicted == 16
    assert first.predicted == slice(BLOCK - 16, BLOCK)
    assert first.envelope_uv.shape == (BLOCK, *DEFAULT_GRID.shape)
    with pytest.raises(AttributeError):
        first.n_predicted = 3  # type: ignore[misc]
    assert np.all((first.pgd >= 0) & (first.pgd <= 1))
    assert np.all(first.delay_s >= 0)


def test_estimate_does_not_freeze_the_callers_arrays():
    speed = np.ones(4)
    WaveEstimate(
        speed_mps=speed,
        direction_deg=np.zeros(4),
        pgd=np.zeros(4),
        amplitude_uv=np.zeros(4),
        frequency_hz=np.zeros(4),
        pattern=np.zeros(4, dtype=np.int8),
        phase_distance_corr=np.zeros(4),
        phase_angle_corr=np.zeros(4),
        envelope_uv=np.zeros((4, *DEFAULT_GRID.shape)),
        delay_s=np.zeros(4),
        channel_valid=np.ones(DEFAULT_GRID.shape, dtype=bool),
        n_predicted=2,
        sample_rate_hz=FS,
    )
    speed[0] = 2.0  # still writable


def test_a_32_frame_block_and_another_grid_work():
    grid = ElectrodeGrid(rows=8, cols=10, pitch_m=0.4e-3)
    x, _ = grid.positions_m()
    t = np.arange(32)[:, None, None] / FS
    frames = (30 * np.cos(2 * np.pi * 10 * t - 2 * np.pi * 10 / 0.1 * x)).astype(np.float32)
    estimate = WaveEstimator(grid=grid).estimate(frames)
    assert estimate.envelope_uv.shape == (32, 8, 10)
    assert np.median(estimate.speed_mps[estimate.predicted]) == pytest.approx(0.1, rel=0.15)


@pytest.mark.parametrize("shape", [(1, 20), (20, 1), (1, 1)])
def test_a_grid_without_two_rows_and_two_columns_is_refused_when_built(shape):
    """A line of electrodes has no phase gradient across it (and no electrode whose gradient
    has both components, so no PGD): the estimator must say so when built, not fail on
    every block with an error that names none of its inputs."""
    with pytest.raises(ValueError, match=r"'grid' must have at least 2 rows and 2 columns"):
        WaveEstimator(grid=ElectrodeGrid(*shape))


def test_robust_sd_ignores_a_minority_of_large_samples(estimator):
    session = generate_session(SynthConfig(duration_s=2.0, seed=2, episodes=()))
    frames = session.frames.copy()
    clean = estimator.robust_sd(frames)
    frames[200:208] += 500.0 * np.sin(np.arange(8) / 1.5)[:, None, None].astype(np.float32)
    dirty = estimator.robust_sd(frames)
    assert clean > 0
    assert dirty == pytest.approx(clean, rel=0.1)  # while the plain s.d. grows several-fold
    live = np.ones(DEFAULT_GRID.shape, dtype=bool)
    live[:, :3] = False
    frames[:, ~live] = np.nan
    assert estimator.robust_sd(frames, live) == pytest.approx(dirty, rel=0.1)


# -- input checks ----------------------------------------------------------------------------


def test_nan_on_a_live_channel_is_refused_with_its_count(estimator):
    frames = np.zeros((BLOCK, *DEFAULT_GRID.shape), dtype=np.float32)
    frames[40, 3, 4] = np.nan
    frames[41, 3, 4] = np.inf
    with pytest.raises(ValueError, match=r"'frames' must be finite on live channels, got 2 NaN"):
        estimator.estimate(frames)


@pytest.mark.parametrize("value", [1e19, 3e38])
def test_live_values_too_large_for_the_phase_arithmetic_are_refused_naming_the_frames(
    estimator, value
):
    """A stream read in the wrong units or byte order can carry finite float32 values far
    beyond any signal; from ~1e19 µV the single-precision products of the phase path overflow,
    and the block failed as "'direction_deg' must not contain NaN", naming no input. It is
    refused as the frames' fault, with the largest value; dead channels may hold anything."""
    rhythm = np.sin(2 * np.pi * 10.0 * np.arange(BLOCK) / FS)[:, None, None]
    gain = np.broadcast_to(np.linspace(0.5, 1.0, DEFAULT_GRID.cols), DEFAULT_GRID.shape)
    frames = (value * rhythm * gain).astype(np.float32)
    with pytest.raises(ValueError, match=r"'frames' must be at most 1e\+12 µV .* got [13]e\+"):
        estimator.estimate(frames)
    live = np.ones(DEFAULT_GRID.shape, dtype=bool)
    live[4, 5] = False
    one_dead = (30.0 * rhythm * gain).astype(np.float32)
    one_dead[:, 4, 5] = frames[:, 4, 5]
    assert estimator.estimate(one_dead, live).n_frames == BLOCK


@pytest.mark.parametrize(
    ("frames", "error", "match"),
    [
        (np.zeros((BLOCK, 20, 18), np.float32), ValueError, r"shape \(\*, 18, 20\), got \(64, 20"),
        (np.zeros((BLOCK, 360), np.float32), ValueError, r"'frames' must have shape"),
        (np.zeros((BLOCK, 18, 20)), TypeError, r"'frames' must have dtype float32, got float64"),
        (np.zeros((31, 18, 20), np.float32), ValueError, r"at least 32 frames .*got 31"),
        ([[0.0]], TypeError, r"'frames' must be a numpy array, got list"),
    ],
)
def test_malformed_frames_are_refused(estimator, frames, error, match):
    with pytest.raises(error, match=match):
        estimator.estimate(frames)


def test_malformed_channel_masks_are_refused(estimator):
    frames = np.zeros((BLOCK, *DEFAULT_GRID.shape), dtype=np.float32)
    with pytest.raises(TypeError, match=r"'channel_valid' must have dtype bool"):
        estimator.estimate(frames, np.ones(DEFAULT_GRID.shape))
    with pytest.raises(ValueError, match=r"'channel_valid' must have shape \(18, 20\)"):
        estimator.estimate(frames, np.ones((20, 18), dtype=bool))
    mostly_dead = np.zeros(DEFAULT_GRID.shape, dtype=bool)
    mostly_dead[:2] = True
    with pytest.raises(ValueError, match=r"at least 180 of 360 channels live .* got 40"):
        estimator.estimate(frames, mostly_dead)


def test_settings_are_validated_and_frozen():
    with pytest.raises(ValidationError, match="'low_hz' must be < 'high_hz'"):
        WaveSettings(low_hz=30.0, high_hz=10.0)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        WaveSettings(band=(4, 30))
    with pytest.raises(ValidationError):
        WaveSettings(high_hz=200.0)
    settings = WaveSettings()
    with pytest.raises(ValidationError):
        settings.low_hz = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="'high_hz' must be below Nyquist"):
        WaveEstimator(WaveSettings(high_hz=60.0), sample_rate_hz=100.0)
    with pytest.raises(TypeError, match="'settings' must be WaveSettings"):
        WaveEstimator({"low_hz": 4.0})  # type: ignore[arg-type]


def test_the_summary_direction_leaves_out_frames_that_have_none(estimator):
    """A frame with no phase gradient (a synchronous one: infinite speed) has no direction of
    travel; the estimator's angle there (of a zero vector) is not a heading. The summary
    (``/status``, the wave metrics, ``corticast listen``) averages the direction over the
    frames that have one, and has none where no frame does, as with the speed."""
    t = np.arange(BLOCK) / FS
    sine = 50.0 * np.sin(2 * np.pi * 8.0 * t)[:, None, None]
    synchronous = np.broadcast_to(sine, (BLOCK, *DEFAULT_GRID.shape)).astype(np.float32)
    flat = estimator.estimate(synchronous)
    fields = [getattr(flat, name)[flat.predicted] for name in SUMMARY_FIELDS]
    assert np.isinf(fields[0]).all()
    none = wave_summary(*fields)
    assert math.isnan(none["speed_mps"]) and math.isnan(none["direction_deg"])
    speed = np.array([0.3, 0.3, np.inf, np.inf])
    direction = np.array([80.0, 100.0, fields[1][0], fields[1][0]])
    mixed = wave_summary(speed, direction, np.ones(4), np.ones(4), np.zeros(4))
    assert mixed["direction_deg"] == pytest.approx(90.0)


def test_the_summary_speed_and_direction_leave_out_frames_without_a_wave(estimator):
    """The background alone has PGD 0 on every predicted frame: no organised wave, yet its
    mean gradient has a length and an angle, and the summary read them as a wave at 0.49 m/s
    heading -52° on ``/status``. Only the frames the estimator calls a wave (planar: PGD at
    least ``planar_pgd``, above 0) count, the summary says how many, and with none the speed
    and direction are absent (NaN, None on ``/status``), not a number."""
    noise = generate_session(
        SynthConfig(duration_s=0.6, seed=0, background=Background(rms_uv=10.0), episodes=())
    )
    quiet = estimator.estimate(noise.frames[100 : 100 + BLOCK])
    assert np.all(quiet.pgd[quiet.predicted] == 0.0)
    none = wave_summary(*(getattr(quiet, name)[quiet.predicted] for name in SUMMARY_FIELDS))
    assert math.isnan(none["speed_mps"]) and math.isnan(none["direction_deg"])
    assert none["wave_frames"] == 0 and none["pgd"] == 0.0 and none["amplitude_uv"] > 0

    wave = estimator.estimate(_session(_plane(0.3, 60.0)).frames[100 : 100 + BLOCK])
    both = wave_summary(*(getattr(wave, name)[wave.predicted] for name in SUMMARY_FIELDS))
    assert both["wave_frames"] == 16
    assert both["speed_mps"] == pytest.approx(0.3, rel=0.05)
    assert _angle_error(both["direction_deg"], 60.0) < 3.0

    # Half the frames a wave heading 90°, half without one (PGD 0, then below planar_pgd)
    # heading -90°: the mean is the wave's, over its 2 frames.
    speed, pgd = np.full(4, 0.3), np.array([0.9, 0.9, 0.0, 0.2])
    direction = np.array([80.0, 100.0, -90.0, -90.0])
    pattern = np.array([PATTERNS.index(name) for name in ("planar",) * 3 + ("disorganised",)])
    mixed = wave_summary(speed, direction, pgd, np.ones(4), pattern)
    assert mixed["direction_deg"] == pytest.approx(90.0) and mixed["wave_frames"] == 2


def test_the_summary_direction_keeps_the_grids_convention_at_the_seam():
    """Directions are in [-180, 180) everywhere (``service.core.grid``, the estimator's frames),
    and ``/status``, the wave metrics and ``corticast listen`` show the summary's. Frames at
    179° and -179° average to the seam, where ``arctan2`` of a sine summing to +0.0 gave
    +180, outside the convention; a wave heading -180° must read -180° there too."""
    speed, ones, planar = np.full(2, 0.3), np.ones(2), np.zeros(2)
    seam = wave_summary(speed, np.array([179.0, -179.0]), ones, ones, planar)
    assert seam["direction_deg"] == -180.0
    assert wave_summary(speed, np.full(2, -180.0), ones, ones, planar)["direction_deg"] == -180.0
