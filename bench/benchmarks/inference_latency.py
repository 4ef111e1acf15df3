"""Inference latency of every backend this machine can run, through the daemon's predictors.

Each backend is built exactly as the daemon builds it (``service.inference.backends``), warmed up,
and timed over ``--runs`` predictions of real windows from a generated session, each call timed
alone with ``perf_counter_ns`` (normalisation and copies included: what the loop pays). The
PyTorch eager run of the same checkpoint is the baseline column: the ratio says how much
faster a backend is than what a user would do otherwise. Each row also gives the achieved
GFLOP/s and its fraction of the host's sgemm peak measured in the same run
(``bench.benchmarks.efficiency``), a figure that carries from one machine to another where a
latency does not. Backends that cannot run here are listed with the reason. One table per
run, with the machine named.

Usage::

    python -m bench.benchmarks.inference_latency --model models/weights/default.onnx \
        --step models/weights/default.step.onnx --checkpoint models/weights/default.run

(``make bench-inference``). Without ``--checkpoint`` the torch baselines are left out.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

from bench.benchmarks.efficiency import dense_flops, sgemm_peak_gflops
from service.inference.backends import create_predictor
from service.inference.predictor import DEFAULT_STREAM, BackendUnavailableError, Predictor
from service.inference.settings import ModelSettings

FRAME_PERIOD_MS = 1000 / 277.78
CANDIDATES = (
    ("torch-cpu", "window"),
    ("onnxruntime-cpu", "window"),
    ("onnxruntime-cpu", "stream"),
    ("torch-cuda", "window"),
    ("torch-cudagraph", "window"),
    ("onnxruntime-cuda", "window"),
    ("onnxruntime-cuda", "stream"),
    ("onnxruntime-tensorrt", "window"),
    ("tensorrt", "window"),
)
"""(backend, mode) pairs; the eager torch runs come first: they are the baselines."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="window graph (.onnx)")
    parser.add_argument("--step", type=Path, help="step graph, for stream mode")
    parser.add_argument("--checkpoint", type=Path, help="training run, for the torch backends")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--runs", type=int, default=2000, help="timed predictions per backend")
    parser.add_argument("--warmup", type=int, default=200, help="untimed predictions first")
    args = parser.parse_args()

    windows = timing_windows()
    rows, unavailable, baseline = [], [], {}
    for backend, mode in CANDIDATES:
        try:
            predictor = create_predictor(
                backend, mode, model_path=args.model, step_path=args.step,
                checkpoint=args.checkpoint, stream=DEFAULT_STREAM, threads=args.threads,
                engine_cache_dir=Path("~/.cache/corticast/engines"),
                reprime_every_frames=ModelSettings().reprime_every_frames,  # as the daemon runs
            )  # fmt: skip
        except (BackendUnavailableError, ValueError) as err:
            unavailable.append(f"{backend} ({mode}): {err}")
            continue
        times = time_predictions(predictor, windows, args.runs, args.warmup)
        predictor.close()
        device = "cpu" if predictor.info.device == "cpu" else "gpu"
        if backend in ("torch-cpu", "torch-cuda"):
            baseline[device] = np.percentile(times, 50)
        rows.append((predictor, mode, device, times))

    flops = {"window": dense_flops(args.model), "stream": None}
    peak = sgemm_peak_gflops(args.threads)
    window_flops = "not countable" if flops["window"] is None else f"{flops['window'] / 1e9:.3f}"
    print(
        f"{platform.node()}: {platform.processor() or platform.machine()}, {os.cpu_count()} "
        f"CPUs visible, {args.threads} thread(s) per model; {args.runs} timed predictions "
        f"after {args.warmup} warm-up; model {args.model.name}: {window_flops} GFLOP per "
        f"window (dense ops); host sgemm peak {peak:.1f} GFLOP/s on {args.threads} "
        f"thread(s), measured in this run\n"
    )
    print(
        "| backend | device | precision | mode | p50 ms | p99 ms | max ms | p99 < 3.6 ms | "
        "eager p50 / p50 | GFLOP/s at p50 | % of sgemm peak |"
    )
    print("|---|---|---|---|---:|---:|---:|---|---:|---:|---:|")
    for predictor, mode, device, times in rows:
        p50, p99 = np.percentile(times, [50, 99])
        ratio = f"{baseline[device] / p50:.2f}x" if device in baseline else "n/a"
        info = predictor.info
        achieved = None if flops[mode] is None else flops[mode] / (p50 / 1e3) / 1e9
        efficiency = (
            "n/a" if achieved is None or device != "cpu" else f"{100 * achieved / peak:.0f} %"
        )
        print(
            f"| {info.backend} | {info.device} | {info.precision} | {mode} | {p50:.3f} | "
            f"{p99:.3f} | {times.max():.3f} | {'yes' if p99 < FRAME_PERIOD_MS else 'NO'} | "
            f"{ratio} | {'n/a' if achieved is None else f'{achieved:.1f}'} | {efficiency} |"
        )
    print(
        "\nGFLOP/s counts the window graph's dense operators (Conv, MatMul, Gemm) per prediction; "
        "the step graph's If branches are not counted statically (n/a). % of peak is for CPU "
        "backends against the sgemm throughput measured above."
    )
    if unavailable:
        print("\nNot run here:")
        for line in unavailable:
            print(f"- {line}")


def timing_windows() -> list[np.ndarray]:
    """Real µV windows (a generated session), cycled through so no cache sees one input."""
    from bench.data.synth import SynthConfig, generate_session

    frames = generate_session(SynthConfig(duration_s=2.0, seed=1)).frames
    return [frames[k : k + 16] for k in range(0, 400, 4)]


def time_predictions(
    predictor: Predictor, windows: list[np.ndarray], runs: int, warmup: int
) -> np.ndarray:
    """Per-call latency in ms; consecutive sequence numbers, as the scheduler passes at
    stride 1 (stream mode feeds one frame per call)."""
    for k in range(warmup):
        predictor.predict(windows[k % len(windows)], newest_seq=k + 15)
    times = np.empty(runs)
    for k in range(runs):
        window = windows[k % len(windows)]
        start = time.perf_counter_ns()
        predictor.predict(window, newest_seq=warmup + k + 15)
        times[k] = (time.perf_counter_ns() - start) / 1e6
    return times


if __name__ == "__main__":
    main()
