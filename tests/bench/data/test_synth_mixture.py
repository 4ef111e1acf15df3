"""The generator mixture: families, determinism, selection, and that its ranges hold."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bench.data.synth import (
    Artefacts,
    Background,
    PlaneWave,
    SynthConfig,
    generate_mixture_session,
    generate_session,
)
from bench.data.synth._waveform import shaped
from bench.data.synth.background import background
from bench.data.synth.mixture import FAMILIES, GENERATOR, family_of, mixture_config
from service.core.grid import DEFAULT_GRID, NOMINAL_RATE_HZ

SHORT_S = 2.0
CONFIGS = 200
"""Mixture configs drawn (cheap: no frames) to check the ranges."""


def _seed_of(family: str) -> int:
    return next(seed for seed in range(100) if family_of(seed) == family)


def test_same_seed_same_session_and_a_family_label():
    a, b = generate_mixture_session(3, SHORT_S), generate_mixture_session(3, SHORT_S)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.timestamps, b.timestamps)
    assert a.info["family"] == family_of(3) and a.info["generator"] == GENERATOR
    json.dumps(a.info, allow_nan=False)
    regenerated = generate_session(SynthConfig.from_dict(a.info["config"]))
    assert np.array_equal(regenerated.frames, a.frames)
    other = generate_mixture_session(4, SHORT_S)
    assert a.frames.shape != other.frames.shape or not np.array_equal(a.frames, other.frames)


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_is_generated_as_labelled(family):
    only = generate_mixture_session(5, SHORT_S, (family,))
    assert only.info["family"] == family
    config = only.info["config"]
    kinds = [episode["kind"] for episode in config["episodes"]]
    assert config["background"]["family"] == ("ou" if family == "ou" else "pink")
    field = kinds[:1] == ["neural_field"] and config["episodes"][0]["duration_s"] == SHORT_S
    assert field == (family == "field")
    assert ("neural_field" in kinds) == (family == "field")
    # A seed of this family in the full mixture is the same session when only it is allowed.
    seed = _seed_of(family)
    full, alone = (
        generate_mixture_session(seed, SHORT_S),
        generate_mixture_session(seed, SHORT_S, (family,)),
    )
    assert np.array_equal(full.frames, alone.frames)


def test_selection_never_draws_a_family_left_out():
    kept = ("pink", "field")
    assert {family_of(seed, kept) for seed in range(60)} == set(kept)
    assert {family_of(seed) for seed in range(60)} == set(FAMILIES)
    with pytest.raises(ValueError, match=r"selection of \['pink', 'ou', 'field'\], got \['x'\]"):
        family_of(1, ("x",))


def test_the_drawn_ranges_are_the_documented_ones():
    configs = [mixture_config(seed, 30.0, family_of(seed)) for seed in range(CONFIGS)]
    artefacts = [c.artefacts for c in configs]
    gains = np.array([a.gain for a in artefacts])
    assert 0.2 <= gains.min() < 0.4 and 3.0 < gains.max() <= 5.0
    assert all(0.0 <= a.gain_spread <= 0.3 for a in artefacts)
    assert {a.line_freq_hz for a in artefacts} == {50.0, 60.0}
    assert any(a.line_uv == 0 for a in artefacts) and any(a.n_intermittent for a in artefacts)
    waves = [e for c in configs for e in c.episodes if hasattr(e, "frequency_hz")]
    frequencies = np.array([e.frequency_hz for e in waves])
    speeds = np.array([e.speed_mps for e in waves])
    assert 2.0 <= frequencies.min() < 3.0 and 29.0 < frequencies.max() <= 30.0
    assert 0.05 <= speeds.min() < 0.07 and 0.8 < speeds.max() <= 1.0
    assert {e.waveform for e in waves} == {"sine", "harmonic", "sharp"}
    assert {e.kind for c in configs for e in c.episodes} == {
        "plane", "radial", "spiral", "seizure", "neural_field"
    }  # fmt: skip
    assert any(e.burst_hz > 0 for e in waves) and any(e.ramp_s == 0 for e in waves)
    assert any(getattr(e, "drift_deg_s", 0) != 0 for e in waves)
    pink = [c.background.exponent for c in configs if c.background.family == "pink"]
    ou = [c.background.tau_s for c in configs if c.background.family == "ou"]
    assert 0.5 <= min(pink) <= max(pink) <= 2.5
    assert 0.002 <= min(ou) <= max(ou) <= 0.2


def test_gain_scales_the_session_and_spreads_per_electrode():
    plain = SynthConfig(duration_s=1.0, seed=2)
    base = generate_session(plain).frames
    scaled = generate_session(SynthConfig(duration_s=1.0, seed=2, artefacts=Artefacts(gain=3.0)))
    np.testing.assert_allclose(scaled.frames, 3.0 * base, rtol=1e-5, atol=1e-3)
    spread = generate_session(
        SynthConfig(duration_s=1.0, seed=2, artefacts=Artefacts(gain_spread=0.3))
    )
    gains = np.array(spread.info["artefacts"]["gains"])
    assert 0.2 < np.log(gains).std() < 0.4
    np.testing.assert_allclose(spread.frames, gains * base, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("line_hz", [50.0, 60.0])
def test_line_noise_is_at_the_mains_frequency(line_hz):
    config = SynthConfig(
        duration_s=4.0,
        seed=1,
        background=Background(rms_uv=1.0),
        episodes=(),
        artefacts=Artefacts(line_freq_hz=line_hz, line_uv=10.0),
    )
    frames = generate_session(config).frames
    spectrum = np.abs(np.fft.rfft(frames.mean(axis=(1, 2)) - frames.mean()))
    freqs = np.fft.rfftfreq(frames.shape[0], 1.0 / NOMINAL_RATE_HZ)
    assert abs(freqs[np.argmax(spectrum)] - line_hz) < 0.5


def test_intermittent_channels_go_flat_for_a_while_only():
    config = SynthConfig(
        duration_s=4.0, seed=3, artefacts=Artefacts(n_intermittent=3, outage_rate_hz=2.0)
    )
    session = generate_session(config)
    channels = session.info["artefacts"]["intermittent_channels"]
    assert len(channels) == 3
    for row, col in channels:
        flat = np.abs(session.frames[:, row, col]) < 0.5
        assert 0 < flat.mean() < 0.9
    with pytest.raises(ValueError, match=r"'artefacts\.n_intermittent' must be <= 360"):
        SynthConfig(duration_s=1.0, artefacts=Artefacts(n_dead=300, n_intermittent=61))


def test_ou_background_relaxes_at_its_time_constant():
    t = np.arange(20_000) / NOMINAL_RATE_HZ
    settings = Background(family="ou", tau_s=0.02, correlation_m=0.0)
    x = background(t, DEFAULT_GRID, settings, np.random.default_rng(0))
    lag = x[1:] * x[:-1]
    assert np.mean(lag) / np.mean(x**2) == pytest.approx(
        math.exp(-1 / NOMINAL_RATE_HZ / 0.02), abs=0.01
    )
    assert np.sqrt(np.mean(x**2)) == pytest.approx(settings.rms_uv)
    with pytest.raises(ValueError, match=r"Background\.family"):
        Background(family="brown")


def test_wave_shapes_keep_peak_and_zero_mean_and_bursts_gate():
    phase = np.linspace(0, 2 * np.pi, 4000, endpoint=False)
    t = np.zeros(phase.size)
    for waveform in ("sine", "harmonic", "sharp"):
        cycle = shaped(phase, t, waveform, 0.0, np.random.default_rng(0))
        assert abs(cycle.mean()) < 1e-6 and cycle.max() <= 1.0 + 1e-9
    sharp = shaped(phase, t, "sharp", 0.0, np.random.default_rng(0))
    assert (sharp > 0.5).mean() < 0.2  # a narrow peak, unlike a cosine (1/3 above 0.5)
    times = np.arange(2000) / NOMINAL_RATE_HZ
    gated = shaped(2 * np.pi * 10 * times, times, "sine", 2.0, np.random.default_rng(0))
    assert 0.3 < (gated == 0).mean() < 0.7
    drifting = PlaneWave(start_s=0.0, duration_s=1.0, drift_deg_s=30.0)
    assert math.isnan(drifting.truth_velocity_mps[0]) and drifting.truth_speed_mps == 0.3
    with pytest.raises(ValueError, match=r"PlaneWave\.waveform"):
        PlaneWave(start_s=0.0, duration_s=1.0, waveform="square")
