"""The keep-warm thread of a real ONNX Runtime predictor (on CPU, where it is started here as
it is on a GPU), and what its failure does: the model's runs fail under it (the fault injected
around the real session), and the next real prediction says so."""

import pytest

from service.inference.onnx_predictor import OnnxPredictor
from service.inference.predictor import StreamSpec
from tests.service._loop_harness import wait_until

_WAIT_S = 30.0
"""Generous: the suite runs on a loaded 2-core machine."""


def test_a_keep_warm_run_that_fails_fails_the_next_prediction_naming_it(exported, session):
    """The keep-warm thread ended at its first failed run, and nothing said so: the model ran
    cold after every quiet spell from then on (its clocks down on a GPU), or met the same
    fault at its next real run without it being tied to this one. Now the next prediction
    raises it, so the scheduler ends and the supervisor reports and repairs it as any failed
    run (disarm, a ``predictor`` fault, the model reloaded with a keep-warm thread of its own),
    even where the fault has gone by then."""
    _, window_graph, _ = exported
    predictor = OnnxPredictor(window_graph, StreamSpec(), threads=1, warm=False)
    try:
        predictor._warm(0.05)  # as on a GPU: warmed up, then kept warm after 50 ms idle
        keep_warm = predictor._keep_warm
        window = session.frames[100:116]
        predictor.predict(window)
        run = predictor._run

        def failing_run():
            raise RuntimeError("simulated CUDA failure: an illegal memory access")

        predictor._run = failing_run  # every run of the model fails, as on a faulted GPU
        wait_until(lambda: not keep_warm.running, _WAIT_S, "the keep-warm run to fail")
        predictor._run = run  # the fault gone: the model itself would run again
        with pytest.raises(RuntimeError, match="corticast-keep-warm stopped: simulated CUDA"):
            predictor.predict(window)
    finally:
        predictor.close()
