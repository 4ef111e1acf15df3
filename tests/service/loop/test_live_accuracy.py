import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from service.inference.scheduler import Prediction
from service.ingest.ring_buffer import RingBuffer
from service.loop.live_accuracy import LiveAccuracy

GRID = (18, 20)


def _signal(seq: np.ndarray) -> np.ndarray:
    """A slow sine per frame: predictable, so an oracle beats persistence."""
    return np.sin(0.05 * seq)[:, None, None] * np.ones((1, *GRID), dtype=np.float32)


def _prediction(seq: int, future: np.ndarray) -> Prediction:
    past = _signal(np.arange(seq - 15, seq + 1)).astype(np.float32)
    return Prediction(future, past, seq, seq - 15, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0)


def _write(ring: RingBuffer, first: int, count: int, invalid=()) -> None:
    seqs = np.arange(first, first + count)
    valid = np.array([s not in invalid for s in seqs])
    ring.write(_signal(seqs).astype(np.float32), seqs * 0.0036, valid, 0.0)


def test_an_oracle_scores_infinite_psnr_and_beats_persistence():
    registry = CollectorRegistry()
    ring = RingBuffer(512)
    accuracy = LiveAccuracy(np.zeros(GRID, np.float32), np.ones(GRID, np.float32),
                            registry=registry)  # fmt: skip
    _write(ring, 0, 40)
    for seq in range(15, 40):
        truth = _signal(np.arange(seq + 1, seq + 17)).astype(np.float32)
        accuracy.add(_prediction(seq, truth))
    assert accuracy.update(ring) == 40 - 16 - 15  # only those whose 16 true frames exist
    _write(ring, 40, 30)
    assert accuracy.update(ring) == 40 - 15 - 9
    psnr = accuracy.psnr()
    assert np.isinf(psnr["model"]).all()
    assert np.all(np.isfinite(psnr["persistence"]))
    assert np.all(np.diff(psnr["persistence"]) < 0)  # persistence worsens with horizon
    value = registry.get_sample_value(
        "corticast_accuracy_psnr_db", {"predictor": "persistence", "horizon": "1"}
    )
    assert value == pytest.approx(psnr["persistence"][0])


def test_predictions_with_missing_truth_are_not_scored():
    registry = CollectorRegistry()
    ring = RingBuffer(512)
    accuracy = LiveAccuracy(np.zeros(GRID, np.float32), np.ones(GRID, np.float32),
                            registry=registry)  # fmt: skip
    _write(ring, 0, 16)
    accuracy.add(_prediction(15, np.zeros((16, *GRID), np.float32)))
    _write(ring, 16, 16, invalid={20})
    assert accuracy.update(ring) == 0
    assert registry.get_sample_value("corticast_accuracy_unscorable_predictions_total") == 1
    assert accuracy.psnr()["model"].size == 0


def test_rolling_mean_is_the_mean_of_the_last_window_vectors():
    from service.loop.live_accuracy import _RollingMean

    rng = np.random.default_rng(0)
    values = rng.random((2500, 16)) * 1e3
    rolling = _RollingMean(window=700, horizons=16)
    for k, value in enumerate(values):
        rolling.append(value)
        if k in (0, 699, 700, 1399, 1400, 2499):
            expected = values[max(0, k - 699) : k + 1].mean(axis=0)
            np.testing.assert_allclose(rolling.mean(), expected, rtol=1e-12)
    assert len(rolling) == 700
    rolling.clear()
    rolling.append(values[0])
    np.testing.assert_allclose(rolling.mean(), values[0])
