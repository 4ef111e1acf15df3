"""The ``wave`` topic's payload keeps the ranges the topic promises once cast to float32."""

from __future__ import annotations

import numpy as np

from service.core.grid import DEFAULT_GRID, NOMINAL_RATE_HZ
from service.loop.closed_loop import WAVE_FIELDS, wave_table
from service.waves.estimator import WaveEstimate

DIRECTIONS = np.array([179.999999, 179.99, -180.0, 0.0, -179.999999])


def _estimate() -> WaveEstimate:
    n = DIRECTIONS.shape[0]
    return WaveEstimate(
        speed_mps=np.full(n, 0.2),
        direction_deg=DIRECTIONS,
        pgd=np.full(n, 0.9),
        amplitude_uv=np.full(n, 300.0),
        frequency_hz=np.full(n, 8.0),
        pattern=np.zeros(n, dtype=np.int8),
        phase_distance_corr=np.zeros(n),
        phase_angle_corr=np.zeros(n),
        envelope_uv=np.ones((n, *DEFAULT_GRID.shape)),
        delay_s=np.zeros(n),
        channel_valid=np.ones(DEFAULT_GRID.shape, dtype=bool),
        n_predicted=2,
        sample_rate_hz=NOMINAL_RATE_HZ,
    )


def test_a_direction_just_under_180_degrees_is_sent_as_minus_180_not_180():
    """179.999999 rounds to 180.0 in float32: before, the payload said 180.0."""
    table = wave_table(_estimate())
    direction = table[:, WAVE_FIELDS.index("direction_deg")]
    assert table.dtype == np.float32 and table.flags.c_contiguous
    assert ((direction >= -180.0) & (direction < 180.0)).all(), direction
    np.testing.assert_allclose(direction, [-180.0, 179.99, -180.0, 0.0, -180.0], atol=1e-4)
    np.testing.assert_array_equal(table[:, WAVE_FIELDS.index("speed_mps")], np.float32(0.2))
