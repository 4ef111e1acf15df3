"""A model that outputs NaN (a bad export, an overflow) is a predictor fault: the scheduler
hands none of its prediction on. Real ONNX Runtime session on the tiny model's graph with a
Mul by NaN appended (``_fault_injection.non_finite_model``), real ring buffer and scheduler,
driven as the replay drives it (``Scheduler.run_due``); the daemon's fault path is
``tests/service/daemon/test_daemon_supervisor.py``."""

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from service.inference.onnx_predictor import OnnxPredictor
from service.inference.predictor import NonFiniteOutputError
from service.inference.scheduler import Scheduler
from service.ingest.ring_buffer import RingBuffer
from tests.service._fault_injection import non_finite_model

NAN_AT = ((0, 15, 0, 3, 4), (0, 15, 0, 3, 5), (0, 0, 0, 17, 19))
"""Three values of the 16 x 18 x 20 predicted: the last horizon's two, the first's last."""


def test_a_prediction_with_nan_is_never_handed_on_and_names_the_model_and_count(
    tmp_path, exported, session
):
    _, window, _ = exported
    path = non_finite_model(window, tmp_path / "nan.onnx", NAN_AT)
    registry, handed = CollectorRegistry(), []
    ring = RingBuffer(256)
    frames = session.frames[:40].astype(np.float32)
    ring.write(frames, np.arange(40) * 0.0036, np.ones(40, bool), 0.0)
    predictor = OnnxPredictor(path, threads=1)
    scheduler = Scheduler(ring, predictor, handed.append, registry=registry)
    try:
        with pytest.raises(NonFiniteOutputError) as raised:
            scheduler.run_due()
    finally:
        predictor.close()
    message = str(raised.value)
    assert f"model {predictor.info.model!r} ({path}, onnxruntime-cpu)" in message
    assert "output 3 non-finite values (NaN or inf) of 5760" in message
    assert "prediction from frame 39" in message
    assert handed == [] and scheduler.predictions == 0
    assert registry.get_sample_value("corticast_scheduler_non_finite_predictions_total") == 1
    assert registry.get_sample_value("corticast_scheduler_predictions_total") == 0
