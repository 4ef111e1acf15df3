"""ONNX Runtime's profile aggregated per op type, kind and node (bench.benchmarks.ort_profile),
on a tiny real graph and on the shipped step graph."""

from pathlib import Path

import pytest

from bench.benchmarks.efficiency import dense_flops
from bench.benchmarks.ort_profile import profile, stream_flops, table, useful_flops
from tests.bench.benchmarks._graphs import conv_gate

SHIPPED = Path(__file__).parents[3] / "models" / "weights"


def test_every_kernel_is_counted_once_per_run_with_the_convolution_flops(tmp_path):
    path = tmp_path / "g.onnx"
    conv_gate(path)
    prof = profile(path, runs=5, warmup=2)
    assert prof.runs == 5 and prof.p50_ms > 0
    conv = {op: row for op, row in prof.by_op.items() if op.endswith("Conv")}
    assert sum(row.calls for row in conv.values()) == 5  # one convolution per run
    # channels are whole NCHWc blocks (8 or 16): nothing padded, so exactly 2 x MACs
    assert sum(row.flops for row in conv.values()) == 5 * 2 * 32 * 8 * 10 * 16 * 9
    assert prof.by_kind["elementwise"].calls >= 5 * 2  # the Muls (Sigmoid may be fused)
    assert sum(r.micros for r in prof.by_kind.values()) == pytest.approx(
        sum(r.micros for r in prof.by_node.values())
    )
    lines = table(prof.by_op, prof, "op type").splitlines()
    shares = [float(line.split("|")[4].strip(" %")) for line in lines[2:]]
    assert sum(shares) == pytest.approx(100, abs=0.1 * len(shares))


def test_a_step_graph_is_profiled_without_its_if_nodes():
    prof = profile(SHIPPED / "default.step.onnx", step=True, runs=2, warmup=1)
    assert "If" not in prof.by_op
    assert prof.by_kind["conv"].calls > 0 and prof.by_kind["conv"].flops > 0


def test_a_missing_graph_is_named():
    with pytest.raises(FileNotFoundError, match=r"nowhere\.onnx"):
        profile("nowhere.onnx")


def test_useful_flops_of_the_window_graph_agree_with_the_static_count():
    window = SHIPPED / "default.onnx"
    # onnx-tool counts each bias add as one more multiply-add per output: 0.5 % here
    assert useful_flops(window) == pytest.approx(dense_flops(window), rel=0.01)
    assert useful_flops(window) < dense_flops(window)
    # the step graph: one encoder step and a 16-frame rollout, about half a window's work
    assert 0.3 < useful_flops(SHIPPED / "default.step.onnx", step=True) / dense_flops(window) < 0.7


def test_a_stream_prediction_counts_the_rollout_and_the_encoder_steps_of_a_rebuild():
    step = SHIPPED / "default.step.onnx"
    rollout = useful_flops(step, step=True)
    encoder = useful_flops(step, step=True, rollout=False)
    assert 0 < encoder < rollout / 5  # one frame through the encoder, no 16-frame rollout
    assert stream_flops(step, 16, None) == pytest.approx(rollout)  # never rebuilt
    # a fresh state every 16 frames is fed beside the carried one for 15 frames of 16
    assert stream_flops(step, 16, 16) == pytest.approx(rollout + 15 / 16 * encoder)
