"""Two or more exports of one model timed against each other: p50 as a ratio to the first,
achieved GFLOP/s and its fraction of the host's sgemm peak, and how far each output is from
the first's.

A change to how a model is exported (``models/convlstm``, ``models/export.py``) is judged
here: the graphs run in sessions configured as the daemon's
(``service.core.ort_options.session_options``), interleaved in blocks of ``BLOCK``
calls so that load from other processes falls on all alike, on the same inputs
(``bench.benchmarks.ort_profile.feeds_for``). A graph may carry ONNX Runtime session config
entries after its path (``NAME=PATH,KEY=VALUE,...``), so one file under different session
settings is compared the same way. FLOPs are the first graph's convolutions as
exported (``ort_profile.useful_flops``: a step graph's If branches included, no NCHWc
padding), so every row's GFLOP/s counts the same useful work.

Usage::

    python -m bench.benchmarks.graph_ab --graph shipped=OLD.onnx --graph new=NEW.onnx
    python -m bench.benchmarks.graph_ab --step --graph shipped=OLD.step.onnx --graph new=...
    python -m bench.benchmarks.graph_ab --graph daemon=M.onnx \
        --graph no-spin=M.onnx,session.intra_op.allow_spinning=0
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bench.benchmarks.efficiency import sgemm_peak_gflops
from bench.benchmarks.ort_profile import feeds_for, useful_flops
from service.core.ort_options import session_options

BLOCK = 25
"""Consecutive calls of one graph before the timing moves on to the next."""


def time_graphs(
    paths: list[Path],
    *,
    step: bool,
    threads: int,
    runs: int,
    warmup: int,
    configs: list[dict[str, str]] | None = None,
) -> tuple[list[np.ndarray], list[float]]:
    """Per-call ms of each graph (its session given ``configs``' entries), interleaved, and
    each graph's largest |output - the first graph's output| on one input."""
    import onnxruntime as ort

    sessions = []
    for path, config in zip(paths, configs or [{}] * len(paths), strict=True):
        options = session_options(threads)
        for key, value in config.items():
            options.add_session_config_entry(key, value)
        sessions.append(
            ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        )
    feeds = [feeds_for(sessions[0], step, k) for k in range(2)]
    outputs = [s.run(None, feeds[1]) for s in sessions]
    gaps = [
        max(float(np.abs(a - b).max()) for a, b in zip(out, outputs[0], strict=True))
        for out in outputs
    ]
    for session in sessions:
        for k in range(warmup):
            session.run(None, feeds[k % 2])
    times = [np.empty(runs) for _ in sessions]
    for first in range(0, runs, BLOCK):
        for session, timed in zip(sessions, times, strict=True):
            for k in range(first, min(first + BLOCK, runs)):
                start = time.perf_counter_ns()
                session.run(None, feeds[k % 2])
                timed[k] = (time.perf_counter_ns() - start) / 1e6
    return times, gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--graph", action="append", required=True, metavar="NAME=PATH",
        help="a graph to time, NAME=PATH[,KEY=VALUE...] with session config entries (repeat; "
        "the first is the baseline)",
    )  # fmt: skip
    parser.add_argument("--step", action="store_true", help="step graphs (fed as streamed)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    parser.add_argument("--runs", type=int, default=1000, help="timed calls per graph")
    parser.add_argument("--warmup", type=int, default=100, help="untimed calls first")
    args = parser.parse_args()
    named = [_named(text) for text in args.graph]
    paths = [path for _, path, _ in named]
    flops = useful_flops(paths[0], step=args.step)
    times, gaps = time_graphs(
        paths, step=args.step, threads=args.threads, runs=args.runs, warmup=args.warmup,
        configs=[config for _, _, config in named],
    )  # fmt: skip
    peak = sgemm_peak_gflops(args.threads)
    print(
        f"{'step' if args.step else 'window'} graphs, {args.threads} thread(s), {args.runs} "
        f"calls each, interleaved in blocks of {BLOCK}; {flops / 1e9:.3f} GFLOP per call "
        f"(convolutions as exported); host sgemm peak {peak:.1f} GFLOP/s on {args.threads} "
        "thread(s), measured in this run\n"
    )
    print(
        "| graph | p50 ms | p99 ms | GFLOP/s at p50 | % of sgemm peak | "
        f"{named[0][0]} p50 / p50 | max abs diff from {named[0][0]} |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    base = np.percentile(times[0], 50)
    for (name, _, _), timed, gap in zip(named, times, gaps, strict=True):
        p50, p99 = np.percentile(timed, [50, 99])
        achieved = flops / (p50 / 1e3) / 1e9
        print(
            f"| {name} | {p50:.3f} | {p99:.3f} | {achieved:.1f} | {100 * achieved / peak:.0f} % "
            f"| {base / p50:.2f}x | {gap:.1e} |"
        )


def _named(text: str) -> tuple[str, Path, dict[str, str]]:
    name, sep, rest = text.partition("=")
    path, *entries = rest.split(",")
    pairs = [entry.partition("=") for entry in entries]
    if not sep or not name or not Path(path).is_file() or not all(k and s for k, s, _ in pairs):
        raise SystemExit(
            f"--graph wants NAME=PATH[,KEY=VALUE...] with PATH an ONNX file, got {text!r}"
        )
    return name, Path(path), {key: value for key, _, value in pairs}


if __name__ == "__main__":
    main()
