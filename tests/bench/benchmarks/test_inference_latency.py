"""The interleaved timing behind the int8 / fp32 ratio of ``bench.benchmarks.inference_latency``."""

from bench.benchmarks.inference_latency import BLOCK, time_interleaved, timing_windows
from service.inference.streaming_predictor import StreamingPredictor
from tests.data.tiny_model import copy_tiny_model


def test_interleaved_timing_feeds_each_predictor_consecutive_frames(tmp_path):
    _, _, step = copy_tiny_model(tmp_path)
    twins = [StreamingPredictor(step, threads=1, reprime_every_frames=16) for _ in range(2)]
    runs = 2 * BLOCK + 7  # a last block shorter than the others
    times = time_interleaved(twins, timing_windows(), runs, warmup=5)
    assert [t.shape for t in times] == [(runs,), (runs,)]
    assert all((t > 0).all() for t in times)
    for predictor in twins:
        # Re-primed once, at the first call: every later call continued the frames it had.
        assert predictor.reprimes == 1
        assert predictor.handovers > 0
