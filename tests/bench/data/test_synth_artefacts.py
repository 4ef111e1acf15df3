"""Artefacts land where ``info`` says they are, and timestamps stay usable."""

from __future__ import annotations

import numpy as np
import pytest

from bench.data.synth import Artefacts, PlaneWave, SynthConfig, generate_session

DURATION_S = 6.0


def _session(artefacts: Artefacts, seed: int = 0):
    episode = PlaneWave(start_s=1.0, duration_s=3.0)
    config = SynthConfig(duration_s=DURATION_S, seed=seed, episodes=(episode,), artefacts=artefacts)
    return generate_session(config)


@pytest.fixture(scope="module")
def realistic():
    return _session(Artefacts.realistic())


def test_dead_channels_are_flat_and_noisy_channels_loud():
    session = _session(Artefacts(n_dead=4, n_noisy=5, noisy_uv=100.0, line_uv=3.0))
    sd = session.frames.std(axis=0)
    dead = tuple(np.array(session.info["artefacts"]["dead_channels"]).T)
    noisy = tuple(np.array(session.info["artefacts"]["noisy_channels"]).T)
    good = np.ones(sd.shape, dtype=bool)
    good[dead] = good[noisy] = False

    assert len(dead[0]) == 4 and len(noisy[0]) == 5
    assert np.all(sd[dead] < 0.1)
    assert np.all(np.abs(session.frames[:, *dead]) < 1.0)
    assert sd[good].min() > 5.0
    assert sd[noisy].min() > 3 * np.median(sd[good])


@pytest.mark.parametrize("line_freq_hz", [50.0, 60.0])
def test_line_noise_peaks_at_the_mains_frequency(line_freq_hz):
    session = _session(Artefacts(line_freq_hz=line_freq_hz, line_uv=5.0))
    x = session.frames.astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x - x.mean(axis=0), axis=0)).mean(axis=(1, 2))
    freqs = np.fft.rfftfreq(x.shape[0], 1 / session.sample_rate_hz)
    above = freqs > 30.0  # above the 1/f background's bulk and the plane wave (10 Hz)
    assert freqs[above][np.argmax(spectrum[above])] == pytest.approx(line_freq_hz, abs=0.5)
    amplitude = np.array(session.info["artefacts"]["line_amplitude_uv"])
    assert amplitude.shape == session.grid.shape
    assert np.median(amplitude) == pytest.approx(5.0, rel=0.3)
    assert session.info["artefacts"]["line_freq_hz"] == line_freq_hz


def test_dropped_samples_show_as_gaps_exactly_where_recorded():
    session = _session(Artefacts(drop_rate_hz=3.0, max_drop_frames=4, jitter_s=1e-4))
    info = session.info["artefacts"]
    n_generated = session.info["n_frames_generated"]
    dropped = np.array(info["dropped_indices"])
    kept = np.setdiff1d(np.arange(n_generated), dropped)
    period = 1 / session.sample_rate_hz
    gaps = np.diff(session.timestamps) > 1.5 * period

    assert info["n_dropped"] == dropped.size > 5
    assert session.n_frames == n_generated - dropped.size
    assert 0 not in dropped and n_generated - 1 not in dropped
    np.testing.assert_array_equal(gaps, np.diff(kept) > 1)
    missing = np.round(np.diff(session.timestamps) / period).astype(int) - 1
    assert missing.sum() == dropped.size
    assert len(session.truth) == session.n_frames
    np.testing.assert_array_equal(session.truth.label, _session(Artefacts()).truth.label[kept])


def test_jitter_is_bounded_and_timestamps_strictly_increase():
    session = _session(Artefacts(jitter_s=1e-4, drop_rate_hz=1.0))
    info = session.info["artefacts"]
    kept = np.setdiff1d(np.arange(session.info["n_frames_generated"]), info["dropped_indices"])
    jitter = session.timestamps - kept / session.sample_rate_hz

    assert info["jitter_clip_s"] == pytest.approx(4e-4)
    assert np.all(np.abs(jitter) <= info["jitter_clip_s"] + 1e-12)
    assert jitter.std() == pytest.approx(1e-4, rel=0.1)
    assert np.all(np.diff(session.timestamps) > 0)


def test_no_artefacts_by_default():
    session = _session(Artefacts())
    info = session.info["artefacts"]
    n = round(DURATION_S * session.sample_rate_hz)
    np.testing.assert_array_equal(session.timestamps, np.arange(n) / session.sample_rate_hz)
    assert info["dead_channels"] == info["noisy_channels"] == info["dropped_indices"] == []
    assert not np.any(info["line_amplitude_uv"])


def test_realistic_set_turns_everything_on(realistic):
    info = realistic.info["artefacts"]
    assert len(info["dead_channels"]) == 3 and len(info["noisy_channels"]) == 3
    assert info["jitter_s"] > 0 and info["line_freq_hz"] == 50.0
    assert np.all(np.diff(realistic.timestamps) > 0)
    assert realistic.timestamps[0] == pytest.approx(0.0, abs=info["jitter_clip_s"])


def test_artefacts_leave_the_clean_signal_alone_elsewhere():
    """Artefacts draw from their own generator: unaffected channels keep their exact values."""
    clean = _session(Artefacts())
    dirty = _session(Artefacts(n_dead=2, n_noisy=2))
    bad = dirty.info["artefacts"]["dead_channels"] + dirty.info["artefacts"]["noisy_channels"]
    mask = np.ones(clean.grid.shape, dtype=bool)
    mask[tuple(np.array(bad).T)] = False
    np.testing.assert_array_equal(clean.frames[:, mask], dirty.frames[:, mask])
    assert not np.array_equal(clean.frames[:, ~mask], dirty.frames[:, ~mask])
