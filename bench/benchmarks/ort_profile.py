"""Where an ONNX graph's time goes on ONNX Runtime's CPU provider: its profiler, aggregated.

The graph runs in a session configured as the daemon configures it
(``service.core.ort_options.session_options``), first unprofiled (the p50 a caller
sees), then with ``SessionOptions.enable_profiling``; every kernel's time is summed per
operator type (NCHWc kernels named apart: ``nchwc.Conv``, ``nchwc.ReorderInput``), per kind
(convolutions, the elementwise gate chain, NCHWc layout reorders, copies; for an int8 graph
also its int8 convolutions and the (de)quantizations around them) and per node. A
convolution's FLOPs are counted from the shapes it ran with (blocked channels included, so an
NCHWc convolution's padding counts as work it did), giving each row's achieved GFLOP/s. The
profiler adds a fixed cost to every kernel, so small elementwise kernels weigh more in the
shares than in an unprofiled run: both totals are printed.

A step graph (``--step``) is fed as the streaming predictor feeds it: a rollout at every call,
``upper_due`` alternating. Its ``If`` nodes time their branches, whose kernels are also listed:
they are left out of the sums.

Usage::

    python -m bench.benchmarks.ort_profile --model models/weights/default.onnx
    python -m bench.benchmarks.ort_profile --model models/weights/default.step.onnx --step
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.export import ROLLOUT, UPPER_DUE
from service.core.ort_options import session_options
from service.inference.streaming_predictor import steps_per_prediction

CONTROL_FLOW = frozenset({"If", "Loop", "Scan"})
KINDS = {
    "conv": {"Conv", "FusedConv", "nchwc.Conv", "ConvTranspose", "MatMul", "Gemm", "FusedGemm"},
    "elementwise": {"Add", "Sub", "Mul", "Div", "Sigmoid", "Tanh", "Relu", "Neg", "Where"},
    "layout": {"nchwc.ReorderInput", "nchwc.ReorderOutput", "Transpose"},
    "copy": {"Concat", "Split", "Slice", "Gather", "Unsqueeze", "Squeeze", "Reshape", "Expand"},
    # An int8 graph (models.quantize): ONNX Runtime runs its QLinearConv channels-last, a
    # Transpose either side (counted as layout). Its FLOPs are not counted: the profile leaves
    # out the shape of its pre-packed weight.
    "int8 conv": {"QLinearConv"},
    "int8 copy": {"QLinearConcat"},
    "quantize": {"QuantizeLinear", "DequantizeLinear"},
}
"""Kinds of kernel; any other operator counts as "other"."""


@dataclass
class Row:
    """Summed kernel time (µs) of one group over all profiled runs."""

    calls: int = 0
    micros: float = 0.0
    flops: float = 0.0


@dataclass
class Profile:
    """One graph's aggregated profile; times are per run."""

    runs: int
    p50_ms: float
    profiled_ms: float
    kernels_ms: float
    by_op: dict[str, Row]
    by_kind: dict[str, Row]
    by_node: dict[str, Row]


def feeds_for(
    session, step: bool, call: int, seed: int = 0, *, rollout: bool = True
) -> dict[str, np.ndarray]:
    """Inputs for one call: seeded values in [-1, 1] (the range of normalised frames and
    LSTM states); a step graph's ``rollout`` as given (1 by default, the call that predicts)
    and ``upper_due`` alternating by ``call``."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for node in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in node.shape]
        if step and node.name == ROLLOUT:
            feeds[node.name] = np.full(shape, float(rollout), np.float32)
        elif step and node.name == UPPER_DUE:
            feeds[node.name] = np.full(shape, float(call % 2), np.float32)
        else:
            feeds[node.name] = rng.uniform(-1, 1, shape).astype(np.float32)
    return feeds


def profile(
    path: str | Path,
    *,
    step: bool = False,
    threads: int = 1,
    runs: int = 200,
    warmup: int = 20,
    optimized: bool = True,
    rollout: bool = True,
) -> Profile:
    """Time ``runs`` calls of the graph at ``path`` unprofiled, then profile as many;
    ``optimized`` False runs it with ONNX Runtime's graph optimisations off (as exported)
    and its weights not pre-packed (a pre-packed weight's shape is not in the profile);
    ``rollout`` is a step graph's flag in every call."""
    import onnxruntime as ort

    if runs < 1 or warmup < 0:
        raise ValueError(f"'runs' must be >= 1 and 'warmup' >= 0, got {runs} and {warmup}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX graph at {str(path)!r}")
    plain = ort.InferenceSession(
        str(path), _options(threads, optimized), providers=["CPUExecutionProvider"]
    )
    inputs = [feeds_for(plain, step, k, rollout=rollout) for k in range(2)]
    times = _timed(plain, inputs, runs, warmup)
    with tempfile.TemporaryDirectory(prefix="corticast-ort-profile-") as scratch:
        options = _options(threads, optimized)
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(scratch) / "profile")
        profiled = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        _timed(profiled, inputs, runs, warmup)
        events = json.loads(Path(profiled.end_profiling()).read_text())
    return aggregate(events, warmup, float(np.percentile(times, 50)))


def aggregate(events: list[dict], skip_runs: int, p50_ms: float) -> Profile:
    """Sum an ORT profile's kernel events per op type, kind and node, leaving out the
    first ``skip_runs`` runs (warm-up) and control-flow nodes (their branches are listed)."""
    runs = sorted(
        (e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"),
        key=lambda e: e["ts"],
    )[skip_runs:]
    if not runs:
        raise ValueError("the profile holds no timed run")
    start = runs[0]["ts"]
    by_op: dict[str, Row] = defaultdict(Row)
    by_kind: dict[str, Row] = defaultdict(Row)
    by_node: dict[str, Row] = defaultdict(Row)
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        if event["ts"] < start:
            continue
        op = _op_name(event)
        if op in CONTROL_FLOW:
            continue
        flops = conv_flops(event["args"]) if op in KINDS["conv"] else 0.0
        node = event["name"].removesuffix("_kernel_time")
        for row in (by_op[op], by_kind[kind_of(op)], by_node[f"{node} ({op})"]):
            row.calls += 1
            row.micros += event["dur"]
            row.flops += flops
    n = len(runs)
    return Profile(
        runs=n,
        p50_ms=p50_ms,
        profiled_ms=sum(e["dur"] for e in runs) / n / 1e3,
        kernels_ms=sum(r.micros for r in by_op.values()) / n / 1e3,
        by_op=dict(by_op),
        by_kind=dict(by_kind),
        by_node=dict(by_node),
    )


def useful_flops(path: str | Path, *, step: bool = False, rollout: bool = True) -> float:
    """Dense FLOPs of one call of the graph as exported (no NCHWc padding, no fusion), from
    the shapes its convolutions ran with; a step graph's averaged over both ``upper_due``
    phases (its If branches run only the layers due, which no static count can know), with
    ``rollout`` as given."""
    prof = profile(path, step=step, runs=2, warmup=0, optimized=False, rollout=rollout)
    return prof.by_kind["conv"].flops / prof.runs if "conv" in prof.by_kind else 0.0


def stream_flops(
    step_path: str | Path, window_frames: int, reprime_every_frames: int | None
) -> float:
    """Dense FLOPs per stream-mode prediction at stride 1, as the daemon's predictor runs the
    step graph: the steps its schedule makes per prediction
    (``streaming_predictor.steps_per_prediction``), each counted as :func:`useful_flops`
    counts a call with its ``rollout`` flag."""
    steps = steps_per_prediction(window_frames, reprime_every_frames)
    return sum(
        n * useful_flops(step_path, step=True, rollout=rollout) for rollout, n in steps.items() if n
    )


def kind_of(op: str) -> str:
    return next((kind for kind, ops in KINDS.items() if op in ops), "other")


def conv_flops(args: dict) -> float:
    """2 x multiply-adds of a Conv kernel from the shapes it ran with: output elements times
    the weight's input channels per group times its kernel area (a MatMul's or Gemm's: times
    the inner dimension K, from the left operand: a pre-packed right one is not listed; a
    ConvTranspose's: input elements times its weights' (Cout / group) x kernel area); 0 where
    a shape is missing."""
    shapes = [next(iter(s.values())) for s in args.get("input_type_shape", [])]
    outputs = [next(iter(s.values())) for s in args.get("output_type_shape", [])]
    if not shapes or not outputs:
        return 0.0
    op = args.get("op_name")
    if op == "MatMul":
        per_output = float(shapes[0][-1])  # (..., M, K) @ (..., K, N)
    elif op in ("Gemm", "FusedGemm"):
        per_output = float(np.prod(shapes[0])) / outputs[0][0]  # A: (M, K) or transposed
    elif len(shapes) < 2 or len(shapes[1]) < 3:
        return 0.0  # a convolution whose weight is pre-packed: not listed
    elif op == "ConvTranspose":  # each input element meets (Cout/group) x kernel area weights
        return 2.0 * float(np.prod(shapes[0])) * float(np.prod(shapes[1][1:]))
    else:
        per_output = float(np.prod(shapes[1][1:]))  # (Cin/group) x kernel area
    return 2.0 * float(np.prod(outputs[0])) * per_output


def _op_name(event: dict) -> str:
    op = event["args"]["op_name"]
    # NCHWc kernels share op names with their ONNX twins; their nodes are named ..._nchwc.
    if "nchwc" in event["name"].lower() or op in ("ReorderInput", "ReorderOutput"):
        return f"nchwc.{op}"
    return op


def _options(threads: int, optimized: bool):
    import onnxruntime as ort

    options = session_options(threads)
    if not optimized:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.add_session_config_entry("session.disable_prepacking", "1")
    return options


def _timed(session, inputs: list[dict], runs: int, warmup: int) -> np.ndarray:
    for k in range(warmup):
        session.run(None, inputs[k % 2])
    times = np.empty(runs)
    for k in range(runs):
        start = time.perf_counter_ns()
        session.run(None, inputs[k % 2])
        times[k] = (time.perf_counter_ns() - start) / 1e6
    return times


def table(rows: dict[str, Row], profile: Profile, title: str, top: int | None = None) -> str:
    """A markdown table of ``rows``, largest total first: calls and ms per run, share of the
    summed kernel time, FLOP share and achieved GFLOP/s where FLOPs are known."""
    total_us = sum(r.micros for r in rows.values())
    total_flops = sum(r.flops for r in rows.values())
    lines = [
        f"| {title} | calls/run | ms/run | share | FLOP share | GFLOP/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    ordered = sorted(rows.items(), key=lambda kv: -kv[1].micros)
    for name, row in ordered[:top]:
        flop_share = f"{100 * row.flops / total_flops:.1f} %" if row.flops else ""
        rate = f"{row.flops / row.micros / 1e3:.1f}" if row.flops else ""
        lines.append(
            f"| {name} | {row.calls / profile.runs:g} | {row.micros / profile.runs / 1e3:.3f} | "
            f"{100 * row.micros / total_us:.1f} % | {flop_share} | {rate} |"
        )
    return "\n".join(lines)


def report(path: Path, prof: Profile, top: int) -> Iterable[str]:
    """The tables ``main`` prints for one graph."""
    yield (
        f"{path}: unprofiled p50 {prof.p50_ms:.3f} ms; profiled run {prof.profiled_ms:.3f} ms, "
        f"of which kernels {prof.kernels_ms:.3f} ms ({prof.runs} profiled runs)\n"
    )
    yield table(prof.by_kind, prof, "kind") + "\n"
    yield table(prof.by_op, prof, "op type") + "\n"
    yield table(prof.by_node, prof, f"node (top {top})", top) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="ONNX graph")
    parser.add_argument("--step", action="store_true", help="feed it as a step graph")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    parser.add_argument("--runs", type=int, default=200, help="timed and profiled runs")
    parser.add_argument("--warmup", type=int, default=20, help="untimed runs first")
    parser.add_argument("--top", type=int, default=15, help="nodes listed (default 15)")
    args = parser.parse_args()
    prof = profile(
        args.model, step=args.step, threads=args.threads, runs=args.runs, warmup=args.warmup
    )
    for block in report(args.model, prof, args.top):
        print(block)


if __name__ == "__main__":
    main()
