"""The closed-form waves write the phase patterns their ground truth claims.

Velocities are estimated from the data alone: the complex amplitude of each electrode at the
wave frequency (Hann-windowed projection), then phase differences between neighbours.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal

from bench.data.ground_truth import PATTERN_LABELS
from bench.data.session import Session
from bench.data.synth import (
    Background,
    PlaneWave,
    RadialWave,
    SpiralWave,
    SynthConfig,
    generate_session,
)

DURATION_S = 2.0


def _pure(episode: PlaneWave | RadialWave | SpiralWave, seed: int = 0) -> Session:
    config = SynthConfig(
        duration_s=DURATION_S, seed=seed, background=Background(rms_uv=0.0), episodes=(episode,)
    )
    return generate_session(config)


def _phasors(session: Session, frequency_hz: float) -> np.ndarray:
    """(rows, cols) complex amplitude at ``frequency_hz``; its angle is each electrode's phase."""
    t = session.timestamps
    kernel = np.hanning(t.size) * np.exp(-2j * np.pi * frequency_hz * t)
    return np.tensordot(kernel, session.frames.astype(np.float64), axes=(0, 0))


def _wave_vector(z: np.ndarray, pitch_m: float) -> np.ndarray:
    """Mean wave vector (rad/m): minus the phase gradient, from neighbour products."""
    kx = -np.angle(np.sum(z[:, 1:] * z[:, :-1].conj())) / pitch_m
    ky = -np.angle(np.sum(z[1:, :] * z[:-1, :].conj())) / pitch_m
    return np.array([kx, ky])


@pytest.mark.parametrize(
    ("direction_deg", "speed_mps", "frequency_hz"),
    [
        (30.0, 0.3, 10.0),
        (135.0, 0.1, 6.0),
        (-150.0, 0.8, 25.0),
        (-60.0, 0.05, 4.0),
        (90.0, 1.0, 40.0),
        (180.0, 0.05, 40.0),
        (0.0, 0.5, 2.0),
    ],
)
def test_plane_wave_truth_matches_its_phase_pattern(direction_deg, speed_mps, frequency_hz):
    episode = PlaneWave(
        start_s=0.0,
        duration_s=DURATION_S,
        frequency_hz=frequency_hz,
        speed_mps=speed_mps,
        direction_deg=direction_deg,
    )
    session = _pure(episode)
    k = _wave_vector(_phasors(session, frequency_hz), session.grid.pitch_m)
    speed = 2 * np.pi * frequency_hz / np.linalg.norm(k)
    direction = math.degrees(math.atan2(k[1], k[0]))

    truth = session.truth
    assert np.all(truth.label == PATTERN_LABELS.index("plane"))
    vx, vy = truth.velocity_mps[truth.velocity_mps.shape[0] // 2]
    true_direction = math.degrees(math.atan2(vy, vx))
    assert speed == pytest.approx(truth.speed_mps[0], rel=0.02)
    assert speed == pytest.approx(math.hypot(vx, vy), rel=0.02)
    assert abs((direction - true_direction + 180) % 360 - 180) < 2.0
    assert abs((true_direction - direction_deg + 180) % 360 - 180) < 1e-9


@pytest.mark.parametrize(
    ("direction_deg", "drift_deg_s"), [(90.0, 45.0), (-135.0, 45.0), (0.0, -45.0)]
)
def test_a_drifting_plane_wave_travels_at_its_truth_speed_across_the_array(
    direction_deg, drift_deg_s
):
    """A turning wave shifts each electrode's frequency by its distance from the centre of the
    turn; turned about the grid's corner, the array-mean phase speed of the slowest wave at
    the mixture's fastest drift was 10 % off its truth, the accuracy the estimator is held to.
    """
    speed_mps = 0.05
    episode = PlaneWave(
        start_s=0.0,
        duration_s=DURATION_S,
        frequency_hz=10.0,
        speed_mps=speed_mps,
        direction_deg=direction_deg,
        drift_deg_s=drift_deg_s,
        ramp_s=0.0,
    )
    session = _pure(episode)
    z = scipy.signal.hilbert(session.frames.astype(np.float64), axis=0)[100:-100]
    pitch = session.grid.pitch_m
    omega = np.angle(np.sum(z[1:] * z[:-1].conj(), axis=(1, 2))) * session.sample_rate_hz
    kx = np.angle(np.sum(z[1:, :, 1:] * z[1:, :, :-1].conj(), axis=(1, 2))) / pitch
    ky = np.angle(np.sum(z[1:, 1:] * z[1:, :-1].conj(), axis=(1, 2))) / pitch
    speed = omega / np.hypot(kx, ky)

    assert np.all(session.truth.speed_mps == speed_mps)
    assert np.median(speed) == pytest.approx(speed_mps, rel=0.01)


@pytest.mark.parametrize(
    ("source_m", "inward"),
    [((4.0e-3, 3.0e-3), False), ((-2.0e-3, 12.0e-3), False), ((6.0e-3, -1.0e-3), True)],
)
def test_radial_wave_phase_lag_grows_with_distance_at_the_stated_speed(source_m, inward):
    frequency_hz, speed_mps = 8.0, 0.2
    episode = RadialWave(
        start_s=0.0,
        duration_s=DURATION_S,
        frequency_hz=frequency_hz,
        speed_mps=speed_mps,
        source_x_m=source_m[0],
        source_y_m=source_m[1],
        inward=inward,
    )
    session = _pure(episode)
    z = _phasors(session, frequency_hz)
    x, y = session.grid.positions_m()
    r = np.hypot(x - source_m[0], y - source_m[1])
    # Phase lag between neighbours against their difference in distance from the source.
    lag = np.concatenate(
        [-np.angle(z[:, 1:] * z[:, :-1].conj()).ravel(), -np.angle(z[1:] * z[:-1].conj()).ravel()]
    )
    dr = np.concatenate([(r[:, 1:] - r[:, :-1]).ravel(), (r[1:] - r[:-1]).ravel()])
    slope = np.sum(lag * dr) / np.sum(dr**2)  # rad per metre, least squares through 0
    residual = lag - slope * dr

    assert (slope < 0) == inward
    assert 2 * np.pi * frequency_hz / abs(slope) == pytest.approx(speed_mps, rel=0.02)
    assert np.max(np.abs(residual)) < 1e-3
    assert np.all(session.truth.speed_mps == speed_mps)
    assert np.all(np.isnan(session.truth.velocity_mps))


@pytest.mark.parametrize(("handedness", "arms"), [(1, 1), (-1, 1), (1, 2)])
def test_spiral_wave_winds_once_per_arm_in_its_sense(handedness, arms):
    frequency_hz = 6.0
    centre = (4.6e-3, 4.1e-3)  # between electrodes, so no electrode sits on the singularity
    episode = SpiralWave(
        start_s=0.0,
        duration_s=DURATION_S,
        frequency_hz=frequency_hz,
        speed_mps=0.3,
        centre_x_m=centre[0],
        centre_y_m=centre[1],
        handedness=handedness,
        arms=arms,
    )
    session = _pure(episode)
    phase = np.angle(_phasors(session, frequency_hz))
    # A ring of electrodes around the centre, visited by increasing angle (+x toward +y).
    rows, cols = np.arange(3, 16), np.arange(3, 17)
    ring = (
        [(3, c) for c in cols]
        + [(r, 16) for r in rows[1:]]
        + [(15, c) for c in cols[::-1][1:]]
        + [(r, 3) for r in rows[::-1][1:]]
    )
    along = np.array([phase[r, c] for r, c in ring] + [phase[ring[0]]])
    x, y = session.grid.positions_m()
    angle = np.array([math.atan2(y[r, c] - centre[1], x[r, c] - centre[0]) for r, c in ring])
    assert np.sum(np.angle(np.exp(1j * np.diff(np.unwrap(angle))))) > 0  # the ring turns +x->+y
    winding = np.sum(np.angle(np.exp(1j * np.diff(along)))) / (2 * np.pi)

    assert winding == pytest.approx(-handedness * arms, abs=1e-6)
    assert np.all(session.truth.label == PATTERN_LABELS.index("spiral"))
    assert np.all(np.isnan(session.truth.speed_mps))
    assert np.all(np.isnan(session.truth.velocity_mps))


def test_spiral_pattern_turns_in_its_sense():
    """At a fixed radius the crest's angle advances toward +y for handedness +1."""
    centre = (4.75e-3, 4.25e-3)
    episode = SpiralWave(
        start_s=0.0,
        duration_s=0.5,
        frequency_hz=4.0,
        speed_mps=0.3,
        centre_x_m=centre[0],
        centre_y_m=centre[1],
        handedness=1,
    )
    session = generate_session(
        SynthConfig(duration_s=0.5, background=Background(rms_uv=0.0), episodes=(episode,))
    )
    x, y = session.grid.positions_m()
    ring = np.abs(np.hypot(x - centre[0], y - centre[1]) - 3.0e-3) < 0.3e-3
    angle = np.arctan2(y - centre[1], x - centre[0])[ring]
    frames = session.frames[:, ring]
    crest = [np.angle(np.sum(frames[k] * np.exp(1j * angle))) for k in (60, 62)]
    turned = np.angle(np.exp(1j * (crest[1] - crest[0])))
    expected = 2 * np.pi * 4.0 * 2 / session.sample_rate_hz
    assert turned == pytest.approx(expected, rel=0.2)
