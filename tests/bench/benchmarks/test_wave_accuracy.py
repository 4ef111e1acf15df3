"""The wave-accuracy benchmark's phase-reversal table: at 10 dB no reversal passes the
policy's checks in any block, and the run length it counts (the policy's own) is the longest
run of passes."""

from __future__ import annotations

import numpy as np

from bench.benchmarks import wave_accuracy
from service.waves.estimator import WaveEstimator


def test_no_block_of_a_phase_reversal_passes_at_10_db():
    results = wave_accuracy.reversal_blocks(WaveEstimator(), 10.0, seed=0)
    assert set(results) == set(wave_accuracy.REVERSALS)
    for blocks, passing, share in results.values():
        assert blocks > 50
        assert passing == 0 and share < 0.01


def test_the_longest_run_counts_consecutive_passes_only():
    flags = np.array([True, True, False, True, True, True, False, True])
    assert wave_accuracy.longest_run(flags)[1] == 3
    assert wave_accuracy.longest_run(np.zeros(4, dtype=bool))[1] == 0
