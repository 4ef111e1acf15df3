"""When a model may trigger stimulation: judged on its own live scores (real LiveAccuracy and
RingBuffer), unproven until ``health_min_scored`` of its predictions have been scored."""

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from service.config import ConfigError, load_settings
from service.inference.scheduler import Prediction
from service.ingest.ring_buffer import RingBuffer
from service.loop.live_accuracy import LiveAccuracy
from service.loop.model_health import ModelHealth
from service.loop.settings import LoopSettings

GRID = (18, 20)


def _signal(seq: np.ndarray) -> np.ndarray:
    """A slow sine per frame: predictable, so an oracle beats persistence."""
    return (np.sin(0.05 * seq)[:, None, None] * np.ones((1, *GRID))).astype(np.float32)


def _scored(count: int, predict, kind: type[LiveAccuracy] = LiveAccuracy) -> LiveAccuracy:
    """Live scores of ``count`` predictions, each ``predict(truth)`` of its 16 true frames."""
    ring = RingBuffer(4096)
    accuracy = kind(
        np.zeros(GRID, np.float32), np.ones(GRID, np.float32), registry=CollectorRegistry()
    )
    frames = np.arange(count + 32)
    ring.write(_signal(frames), frames * 0.0036, np.ones(frames.size, bool), 0.0)
    for seq in range(15, 15 + count):
        truth = _signal(np.arange(seq + 1, seq + 17))
        past = _signal(np.arange(seq - 15, seq + 1))
        stamps = dict.fromkeys(
            ("input_timestamp", "available_at", "started_at", "finished_at", "handed_at"), 0.0
        )
        accuracy.add(
            Prediction(
                predict(truth), past, seq, seq - 15, missing_frames=0, skipped_before=0, **stamps
            )
        )
    assert accuracy.update(ring) == count
    return accuracy


def _oracle(truth: np.ndarray) -> np.ndarray:
    return truth


def _upside_down(truth: np.ndarray) -> np.ndarray:
    return -truth  # far worse than repeating the last frame


def test_a_model_is_unproven_until_enough_is_scored_even_a_perfect_one():
    settings = LoopSettings(health_min_scored=50)
    health = ModelHealth.judge(_scored(49, _oracle), settings, running=True)
    assert health.state == "unproven" and not health.healthy
    assert (health.scored, health.needed) == (49, 50)
    assert health.describe().startswith("unproven: 49 of 50 predictions scored")
    health = ModelHealth.judge(_scored(50, _oracle), settings, running=True)
    assert health.state == "healthy" and health.healthy
    assert health.model_psnr_db > health.persistence_psnr_db


def test_a_proven_model_worse_than_persistence_is_unhealthy_unless_within_the_margin():
    accuracy = _scored(60, _upside_down)
    health = ModelHealth.judge(accuracy, LoopSettings(health_min_scored=60), running=True)
    assert health.state == "unhealthy" and not health.healthy
    assert "unhealthy: live PSNR" in health.describe()
    gap = health.persistence_psnr_db - health.model_psnr_db  # about 15 dB here
    for margin, healthy in ((gap - 0.01, False), (gap + 0.01, True)):
        lenient = LoopSettings(health_min_scored=60, health_margin_db=margin)
        assert ModelHealth.judge(accuracy, lenient, running=True).healthy is healthy


def test_a_model_that_is_not_running_is_never_healthy():
    accuracy = _scored(60, _oracle)
    health = ModelHealth.judge(accuracy, LoopSettings(health_min_scored=1), running=False)
    assert health.state == "not running" and not health.healthy
    assert ModelHealth.judge(None, LoopSettings(), running=True).state == "not running"


def test_a_scored_count_the_live_window_cannot_reach_is_refused(tmp_path):
    path = tmp_path / "corticast.toml"
    path.write_text("[loop]\nhealth_min_scored = 1001\n")
    with pytest.raises(ConfigError, match=r"loop\.health_min_scored: .*less than or equal to 1000"):
        load_settings(path)


class _SwappedWhileJudged(LiveAccuracy):
    """Live scores whose model is hot-swapped (``set_normalisation``, as ``Daemon.swap_model``
    does) at the first read of their figures once ``swap_on_read`` is set: a read of the
    count before it sees the old model, every read from it on the new one."""

    swap_on_read = False

    def _swap_now(self) -> None:
        if self.swap_on_read:
            self.swap_on_read = False
            self.set_normalisation(np.zeros(GRID, np.float32), np.ones(GRID, np.float32))

    def psnr(self):
        self._swap_now()
        return super().psnr()

    def record(self):
        self._swap_now()
        return super().record()


def test_a_swap_between_the_count_and_the_psnr_is_never_judged_on_a_mixed_record():
    """Read apart, the count (60, the old model's) and the PSNR (none yet, the new model's)
    crashed the judgement (None compared with None) in whichever thread asked: the wave stage
    (a spurious fault), ``/status`` and arming. Read together, they are one model's."""
    accuracy = _scored(60, _oracle, _SwappedWhileJudged)
    accuracy.swap_on_read = True
    health = ModelHealth.judge(accuracy, LoopSettings(health_min_scored=60), running=True)
    assert (health.state, health.scored) in (("healthy", 60), ("unproven", 0))
    assert (health.model_psnr_db is None) is (health.scored == 0)


def _ramp(seq: np.ndarray) -> np.ndarray:
    """Frames rising by 0.01 per frame: persistence's error at horizon h is exactly 0.01 h."""
    return (0.01 * seq[:, None, None] * np.ones((1, *GRID))).astype(np.float32)


def test_the_model_is_judged_on_the_pooled_mse_not_on_the_mean_of_its_decibels():
    """Near perfect at 15 horizons and far off at the last, a model's mean of per-horizon dB
    beats persistence's by ~35 dB while its MSE over all horizons is 2.5 times persistence's:
    the README's PSNR over all horizons (of the pooled MSE) says it is worse, so it must not
    trigger stimulation."""
    count, horizons = 40, np.arange(1, 17)
    persistence_mse = np.mean((0.01 * horizons) ** 2)
    error = 1e-5 * horizons  # 60 dB better than persistence at horizons 1-15
    error[-1] = np.sqrt(16 * 2.5 * persistence_mse - np.sum(error[:-1] ** 2))
    ring = RingBuffer(4096)
    accuracy = LiveAccuracy(
        np.zeros(GRID, np.float32), np.ones(GRID, np.float32), registry=CollectorRegistry()
    )
    frames = np.arange(count + 32)
    ring.write(_ramp(frames), frames * 0.0036, np.ones(frames.size, bool), 0.0)
    stamps = dict.fromkeys(
        ("input_timestamp", "available_at", "started_at", "finished_at", "handed_at"), 0.0
    )
    for seq in range(15, 15 + count):
        future = _ramp(np.arange(seq + 1, seq + 17)) + error[:, None, None].astype(np.float32)
        past = _ramp(np.arange(seq - 15, seq + 1))
        accuracy.add(Prediction(future, past, seq, seq - 15, missing_frames=0, skipped_before=0,
                                **stamps))  # fmt: skip
    assert accuracy.update(ring) == count
    per_horizon = accuracy.psnr()
    assert per_horizon["model"].mean() > per_horizon["persistence"].mean() + 30  # the premise
    health = ModelHealth.judge(accuracy, LoopSettings(health_min_scored=count), running=True)
    assert health.state == "unhealthy", health.describe()
    gap = health.persistence_psnr_db - health.model_psnr_db
    assert gap == pytest.approx(10 * np.log10(2.5), abs=0.01)
    assert health.persistence_psnr_db == pytest.approx(10 * np.log10(4 / persistence_mse), abs=0.01)
