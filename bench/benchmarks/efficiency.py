"""How much of the host's arithmetic a model's inference uses: its dense FLOPs against the
sgemm peak measured in the same run.

An absolute latency means little across machines (the same code runs 4-5x slower on some
2-core VMs than on others); the fraction of the machine's own matrix-multiply throughput that a
prediction achieves means the same everywhere. FLOPs are counted from the ONNX graph with
onnx-tool (its per-node MACs, from shape inference), dense operators only (Conv,
ConvTranspose, MatMul, Gemm: what sgemm does, 2 FLOPs per multiply-add); the elementwise gate
arithmetic around them is not counted, so the fraction is of the work a BLAS could do.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from threadpoolctl import threadpool_limits

if TYPE_CHECKING:
    import onnx_tool

DENSE_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})


def dense_flops(path: str | Path) -> float | None:
    """FLOPs of one run of the graph at ``path`` in its dense operators; None when the graph
    cannot be profiled statically (a step graph's ``If`` branches run data-dependently)."""
    import onnx_tool

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "node If is not registered": handled below
        model = onnx_tool.Model(str(path))
        try:
            model.graph.shape_infer()
            model.graph.profile()
        except NotImplementedError:
            return None
    if any(node.op_type in ("If", "Loop", "Scan") for node in model.graph.nodemap.values()):
        return None
    graph = model.graph
    macs = sum(
        _transposed_macs(graph, node) if node.op_type == "ConvTranspose" else _first(node.macs)
        for node in graph.nodemap.values()
        if node.op_type in DENSE_OPS
    )
    return 2.0 * macs


def sgemm_peak_gflops(threads: int, size: int = 1024, seconds: float = 1.0) -> float:
    """The host's float32 matrix-multiply throughput on ``threads`` BLAS threads, GFLOP/s:
    the best of repeated ``size`` x ``size`` products over about ``seconds``."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((size, size), dtype=np.float32) for _ in range(2))
    out = np.empty_like(a)
    best = np.inf
    with threadpool_limits(threads):
        np.matmul(a, b, out=out)  # first call: allocation, thread start
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            np.matmul(a, b, out=out)
            best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best / 1e9


def _transposed_macs(graph: onnx_tool.Graph, node: onnx_tool.Node) -> float:
    """Multiply-adds of a ConvTranspose: every input element times its (Cout / group) x
    kernel-area weights (onnx-tool counts them per output element, as for a Conv, which
    overcounts by the square of the stride)."""
    inputs, weight = (graph.tensormap[name].get_shape() for name in node.input[:2])
    return float(np.prod(inputs)) * float(np.prod(weight[1:]))


def _first(value: object) -> float:
    return float(value[0] if isinstance(value, list | tuple) else value)
