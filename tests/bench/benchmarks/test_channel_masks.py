"""The channel-mask benchmark's two measurements, on a few sessions: the mixture's clean
channels are never masked, and a channel loud with noise is masked and, once masked, leaves
the estimate as it was without the noise."""

from __future__ import annotations

import numpy as np

from bench.benchmarks import channel_masks
from service.waves.estimator import WaveEstimator


def test_the_mixture_s_clean_channels_are_kept_and_every_window_is_counted():
    clean, noisy = channel_masks.mixture_masks(range(2), session_s=4.0)
    assert clean["channel-windows"] > 0
    assert clean["masked dead"] == clean["masked noisy"] == 0
    assert noisy[:, 1].sum() <= noisy[:, 0].sum()


def test_a_loud_noisy_channel_is_masked_and_the_masked_estimate_matches_the_clean_one():
    rows = channel_masks.noisy_wave_rows(WaveEstimator(), (45.0,), (0.2,), seed=1)
    cells = {
        (row.split("|")[1].strip(), row.split("|")[2].strip()): row.split("|")[3:-1] for row in rows
    }
    assert len(cells) == 2 * len(channel_masks.NOISE_FACTORS)
    clean = cells[("0x", "dead and noisy")]
    loudest = cells[(f"{channel_masks.NOISE_FACTORS[-1]:g}x", "dead and noisy")]
    assert loudest[0].strip() == "100%"
    # direction error median and p90 (°), PGD, amplitude (robust s.d.s): one electrode fewer
    clean_values, loudest_values = (np.array([float(v) for v in c[1:5]]) for c in (clean, loudest))
    assert (np.abs(loudest_values - clean_values) <= (1.0, 2.0, 0.02, 0.05)).all()
    unmasked = cells[(f"{channel_masks.NOISE_FACTORS[-1]:g}x", "dead only")]
    assert float(unmasked[2]) > 10 * max(clean_values[1], 1.0)  # p90 direction error
