"""The ONNX Runtime session options the daemon runs its CPU graphs with, in one place: what an
offline batch (``models.batch_graph``) and the graph benchmarks run must match it, or they
measure, or compute, another graph than the one served."""

from __future__ import annotations


def session_options(threads: int):
    """The daemon's ``onnxruntime.SessionOptions``: ``threads`` intra-op threads, sequential,
    full graph optimisation (also what ``bench.benchmarks.ort_profile`` profiles)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options
