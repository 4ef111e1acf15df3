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

With ``--int8`` the int8 copies of the graphs (``models.quantize``: the files beside
``--model`` that ``corticast export --int8`` writes, or quantized in this run when there are
none) are timed beside ONNX Runtime's fp32 CPU rows, the two interleaved in blocks of
``BLOCK`` calls so that load from other processes falls on both alike; the "fp32 p50 / p50"
column is their ratio.

Usage::

    python -m bench.benchmarks.inference_latency --model models/weights/default.onnx \
        --step models/weights/default.step.onnx --checkpoint models/weights/default.run

(``make bench-inference``, with ``--int8``). Without ``--checkpoint`` the torch baselines are
left out.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.benchmarks.efficiency import dense_flops, sgemm_peak_gflops
from bench.benchmarks.ort_profile import stream_flops
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
INT8_BACKEND = "onnxruntime-cpu"
"""The backend whose rows get an int8 twin with ``--int8``."""
BLOCK = 50
"""Consecutive calls of one predictor before the interleaved timing switches to its twin."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="window graph (.onnx)")
    parser.add_argument("--step", type=Path, help="step graph, for stream mode")
    parser.add_argument("--checkpoint", type=Path, help="training run, for the torch backends")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--runs", type=int, default=2000, help="timed predictions per backend")
    parser.add_argument("--warmup", type=int, default=200, help="untimed predictions first")
    parser.add_argument(
        "--int8", action="store_true", help="also time the int8 copies (see the docstring)"
    )
    args = parser.parse_args()

    windows = timing_windows()
    rows, unavailable, baseline, fp32 = [], [], {}, {}
    scratch = Path(tempfile.mkdtemp(prefix="corticast-int8-"))
    int8 = int8_graphs(args.model, args.step, scratch) if args.int8 else None
    for backend, mode in CANDIDATES:

        def build(model: Path, step: Path | None, backend: str = backend, mode: str = mode):
            return create_predictor(
                backend, mode, model_path=model, step_path=step, checkpoint=args.checkpoint,
                stream=DEFAULT_STREAM, threads=args.threads,
                engine_cache_dir=Path("~/.cache/corticast/engines"),
                reprime_every_frames=ModelSettings().reprime_every_frames,  # as the daemon runs
            )  # fmt: skip

        try:
            twins = [build(args.model, args.step)]
            if int8 is not None and backend == INT8_BACKEND and (mode == "window" or int8[1]):
                twins.append(build(*int8))
        except (BackendUnavailableError, ValueError) as err:
            unavailable.append(f"{backend} ({mode}): {err}")
            continue
        timed = time_interleaved(twins, windows, args.runs, args.warmup)
        device = "cpu" if twins[0].info.device == "cpu" else "gpu"
        for predictor, times in zip(twins, timed, strict=True):
            predictor.close()
            if backend in ("torch-cpu", "torch-cuda"):
                baseline[device] = np.percentile(times, 50)
            if len(twins) > 1 and predictor.info.precision == "fp32":
                fp32[mode] = np.percentile(times, 50)
            rows.append((predictor, mode, device, times))
    shutil.rmtree(scratch)

    flops = {
        "window": dense_flops(args.model),
        "stream": None
        if args.step is None
        else stream_flops(
            args.step, DEFAULT_STREAM.past_frames, ModelSettings().reprime_every_frames
        ),
    }
    peak = sgemm_peak_gflops(args.threads)
    window_flops = "not countable" if flops["window"] is None else f"{flops['window'] / 1e9:.3f}"
    stream_line = (
        "" if flops["stream"] is None else f", {flops['stream'] / 1e9:.3f} per stream prediction"
    )
    print(
        f"{platform.node()}: {platform.processor() or platform.machine()}, {os.cpu_count()} "
        f"CPUs visible, {args.threads} thread(s) per model; {args.runs} timed predictions "
        f"after {args.warmup} warm-up; model {args.model.name}: {window_flops} GFLOP per "
        f"window{stream_line} (dense ops); host sgemm peak {peak:.1f} GFLOP/s on {args.threads} "
        f"thread(s), measured in this run\n"
    )
    print(
        "| backend | device | precision | mode | p50 ms | p99 ms | max ms | p99 < 3.6 ms | "
        "eager p50 / p50 | fp32 p50 / p50 | GFLOP/s at p50 | % of sgemm peak |"
    )
    print("|---|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|")
    for predictor, mode, device, times in rows:
        p50, p99 = np.percentile(times, [50, 99])
        ratio = f"{baseline[device] / p50:.2f}x" if device in baseline else "n/a"
        info = predictor.info
        achieved = None if flops[mode] is None else flops[mode] / (p50 / 1e3) / 1e9
        fp32_ratio = (
            f"{fp32[mode] / p50:.2f}x" if info.backend == INT8_BACKEND and mode in fp32 else "n/a"
        )
        int8_row = info.precision == "int8"
        efficiency = (
            "n/a"
            if achieved is None or device != "cpu" or int8_row
            else f"{100 * achieved / peak:.0f} %"
        )
        print(
            f"| {info.backend} | {info.device} | {info.precision} | {mode} | {p50:.3f} | "
            f"{p99:.3f} | {times.max():.3f} | {'yes' if p99 < FRAME_PERIOD_MS else 'NO'} | "
            f"{ratio} | {fp32_ratio} | {'n/a' if achieved is None else f'{achieved:.1f}'} | "
            f"{efficiency} |"
        )
    print(
        "\nGFLOP/s counts the dense operators (Conv, MatMul, Gemm) per prediction: the window "
        "graph's statically; stream mode's from ONNX Runtime's profile of the step graph, for "
        "the steps the daemon's schedule makes per prediction at stride 1 (the rollout, and the "
        "encoder steps of a state being rebuilt). % of peak is for CPU "
        "backends against the sgemm throughput measured above; an int8 row's GFLOP/s counts "
        "the same operations, and has no % (int8 has another peak). fp32 p50 / p50: an "
        "onnxruntime-cpu row's fp32 p50 over its own, the two timed interleaved."
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


def int8_graphs(model: Path, step: Path | None, scratch: Path) -> tuple[Path, Path | None]:
    """The int8 window and step graphs of ``model`` (``step``): the files beside it, or
    quantized into ``scratch`` here (guard included) where there are none."""
    from models.quantize import export_int8, int8_path, int8_step_path

    if int8_path(model).is_file() and (step is None or int8_step_path(model).is_file()):
        return int8_path(model), None if step is None else int8_step_path(model)
    copy = scratch / model.name
    shutil.copy(model, copy)
    for line in export_int8(copy, step):
        print(line)
    return int8_path(copy), None if step is None else int8_step_path(copy)


def time_interleaved(
    predictors: list[Predictor], windows: list[np.ndarray], runs: int, warmup: int
) -> list[np.ndarray]:
    """Per-call latency in ms of each predictor, ``BLOCK`` calls of one then of the next, so
    that they share whatever load the machine had; each sees consecutive sequence numbers,
    as the scheduler passes at stride 1 (stream mode feeds one frame per call)."""
    for predictor in predictors:
        for k in range(warmup):
            predictor.predict(windows[k % len(windows)], newest_seq=k + 15)
    times = [np.empty(runs) for _ in predictors]
    for first in range(0, runs, BLOCK):
        for predictor, timed in zip(predictors, times, strict=True):
            for k in range(first, min(first + BLOCK, runs)):
                window = windows[k % len(windows)]
                start = time.perf_counter_ns()
                predictor.predict(window, newest_seq=warmup + k + 15)
                timed[k] = (time.perf_counter_ns() - start) / 1e6
    return times


if __name__ == "__main__":
    main()
