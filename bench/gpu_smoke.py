"""GPU smoke test: every inference backend that can run here, on the shipped model and a tiny
trained checkpoint, checked against ONNX Runtime on the CPU and timed.

Made for a GPU machine that is lent for minutes, with PyTorch and nothing else preinstalled
and no network: it installs nothing, and whatever cannot run (a package missing, no GPU, a
build that fails) is a row that says "not run" and why, never an abort. It prints

1. which GPU-related packages import, their versions, and the GPU;
2. one row per (model, backend, precision): the precision the backend reports, the largest
   |prediction - ONNX Runtime CPU| in normalised units against that precision's tolerance
   (``service.inference.predictor.PARITY_TOLERANCE``), p50 and p99 latency of one
   ``predict`` call, and the speed-up over eager PyTorch on the same checkpoint (torch-cuda
   on a GPU, torch-cpu elsewhere; the shipped model's checkpoint is
   ``models/weights/default.run``, used when ``--model`` is the shipped window graph).

Run from the repository root: ``python -m bench.gpu_smoke`` (``--help`` for the options).
With ``--paper`` it adds the paper's model size (mr_layer_lstm at its published widths, 64-64),
built on the spot (two training steps on a short synthetic session, then exported): its
latency, not its accuracy, is what is measured. The CPU backends run ``--cpu-runs`` calls
(a paper-sized model takes long on a CPU; they are the parity reference, not the subject).
It stops starting new backends after ``--budget-s`` (TensorRT builds take minutes). The
models and the torch backends need ``onnx``, ``onnx-ir`` and ``onnxruntime`` (and ``tqdm``);
on a machine without them and without a network, ``--wheels DIR`` installs every wheel in DIR
first (``pip install --no-index``), e.g. wheels carried with the working tree.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("numpy", "torch", "onnx", "onnxruntime", "tensorrt", "cuda.bindings")
CASES = (
    ("onnxruntime-cpu", "fp32"),
    ("torch-cpu", "fp32"),
    ("torch-cuda", "fp32"),
    ("torch-cudagraph", "fp32"),
    ("onnxruntime-cuda", "fp32"),
    ("onnxruntime-tensorrt", "fp32"),
    ("onnxruntime-tensorrt", "fp16"),
    ("tensorrt", "fp32"),
    ("tensorrt", "auto"),
)
"""(backend, requested precision) pairs, the CPU reference first."""


@dataclass(frozen=True)
class Target:
    """A model to run: its window graph and, when there is one, its training checkpoint."""

    name: str
    model: Path
    checkpoint: Path | None


@dataclass
class Row:
    target: str
    backend: str
    asked: str
    precision: str = "-"
    device: str = "-"
    error: float | None = None
    tolerance: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    speedup: float | None = None
    note: str = ""


def package_report() -> list[str]:
    """One line per package: its version, or why it does not import."""
    lines = []
    for name in PACKAGES:
        try:
            module = importlib.import_module(name)
        except Exception as err:  # ImportError, or a library that fails to load
            lines.append(f"  {name:<14} not importable: {type(err).__name__}: {err}")
            continue
        version = getattr(module, "__version__", None)
        if version is None and name == "cuda.bindings":
            from importlib.metadata import version as dist_version

            version = dist_version("cuda-bindings")
        lines.append(f"  {name:<14} {version}")
    return lines


def install_wheels(folder: Path) -> None:
    """``pip install --no-index`` every wheel in ``folder`` (no network needed), reported."""
    wheels = sorted(str(w) for w in folder.glob("*.whl"))
    if not wheels:
        print(f"--wheels: no *.whl in {str(folder)!r}; installing nothing")
        return
    command = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(folder)]
    done = subprocess.run([*command, *wheels], capture_output=True, text=True)
    tail = (done.stdout + done.stderr).strip().splitlines()[-1:]
    print(f"--wheels: installed {len(wheels)} wheels, pip exit {done.returncode}: {tail}")


def gpu_report() -> str:
    try:
        import torch
    except ImportError:
        return "GPU: unknown (torch does not import)"
    if not torch.cuda.is_available():
        return f"GPU: none visible to torch {torch.__version__} (CUDA build: {torch.version.cuda})"
    props = torch.cuda.get_device_properties(0)
    return (
        f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, compute capability "
        f"{props.major}.{props.minor}, torch {torch.__version__} CUDA {torch.version.cuda}"
    )


def windows(model: Path, count: int) -> tuple[list[np.ndarray], np.ndarray]:
    """``count`` windows in µV with structure (a travelling wave under noise, as the TensorRT
    parity check uses), and the model's per-electrode scale (µV per normalised unit)."""
    from models.metadata import read_model_metadata
    from service.core.grid import ElectrodeGrid
    from service.inference.predictor import StreamSpec
    from service.inference.tensorrt_predictor import parity_window

    metadata = read_model_metadata(model)
    stream = stream_of(metadata, ElectrodeGrid, StreamSpec)
    mean = np.asarray(metadata.normalisation["mean"], dtype=np.float32)
    scale = np.asarray(metadata.normalisation["scale"], dtype=np.float32)
    made = [parity_window(stream, seed=seed) * scale + mean for seed in range(count)]
    return [w.astype(np.float32) for w in made], scale


def stream_of(metadata, grid_class, stream_class):
    """The stream a model was made for (its own grid, rate and windows)."""
    grid = grid_class(rows=metadata.grid_rows, cols=metadata.grid_cols, pitch_m=metadata.pitch_m)
    return stream_class(
        grid=grid,
        sample_rate_hz=metadata.sample_rate_hz,
        past_frames=metadata.past_frames,
        future_frames=metadata.future_frames,
    )


def paper_target(workdir: Path) -> Target:
    """The paper-sized model (the family's default widths), trained two steps and exported.

    Through the CLI, as a user would make it, so the checkpoint and the ONNX pair are what
    ``corticast train`` and ``corticast export`` write.
    """
    cli = [sys.executable, "-c", "from service.cli.app import app; app()"]
    run_dir, model = workdir / "paper-run", workdir / "paper.onnx"
    steps = [
        [*cli, "train", "mr_layer_lstm", "--data", "synthetic:0@10", "--run", str(run_dir),
         "--steps", "2", "--checkpoint-every", "2", "--no-adversarial"],
        [*cli, "export", str(run_dir), str(model)],
    ]  # fmt: skip
    for command in steps:
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            raise RuntimeError(f"{command[3]} failed: {done.stderr.strip()[-500:]}")
    return Target("paper-64-64", model, run_dir)


def run_case(target: Target, backend: str, asked: str, inputs, runs: int, cache: Path):
    """(info, predictions on ``inputs``, per-call seconds over ``runs`` calls)."""
    from models.metadata import read_model_metadata
    from service.core.grid import ElectrodeGrid
    from service.inference.backends import create_predictor
    from service.inference.predictor import StreamSpec

    stream = stream_of(read_model_metadata(target.model), ElectrodeGrid, StreamSpec)
    predictor = create_predictor(
        backend,
        "window",
        model_path=target.model,
        checkpoint=target.checkpoint,
        stream=stream,
        threads=2,
        precision=asked,
        engine_cache_dir=cache,
        keep_warm_s=None,
    )
    try:
        outputs = [predictor.predict(window) for window in inputs]
        seconds = []
        for k in range(runs):
            window = inputs[k % len(inputs)]
            start = time.perf_counter()
            predictor.predict(window)
            seconds.append(time.perf_counter() - start)
        return predictor.info, outputs, np.asarray(seconds)
    finally:
        predictor.close()


def smoke(targets: list[Target], runs: int, cpu_runs: int, budget_s: float) -> list[Row]:
    from service.inference.predictor import parity_tolerance

    deadline = time.monotonic() + budget_s
    rows: list[Row] = []
    for target in targets:
        try:
            inputs, scale = windows(target.model, 4)
        except Exception as err:
            rows.append(Row(target.name, "all", "-", note=f"not run: {type(err).__name__}: {err}"))
            continue
        reference: list[np.ndarray] | None = None
        target_rows = []
        for backend, asked in CASES:
            row = Row(target.name, backend, asked)
            target_rows.append(row)
            if time.monotonic() > deadline:
                row.note = f"not run: the {budget_s:g} s budget is spent"
                continue
            with tempfile.TemporaryDirectory() as cache:
                try:
                    calls = cpu_runs if backend.endswith("-cpu") else runs
                    info, outputs, seconds = run_case(
                        target, backend, asked, inputs, calls, Path(cache)
                    )
                except Exception as err:
                    row.note = f"not run: {type(err).__name__}: {err}"
                    continue
            row.precision, row.device = info.precision, info.device
            row.p50_ms = float(np.percentile(seconds, 50) * 1e3)
            row.p99_ms = float(np.percentile(seconds, 99) * 1e3)
            if backend == "onnxruntime-cpu" or (reference is None and backend == "torch-cpu"):
                reference = reference or outputs
                row.note = "reference" if backend == "onnxruntime-cpu" else "reference (no ORT)"
            if reference is not None and row.note == "":
                row.error = max(
                    float(np.max(np.abs(got - want) / scale))
                    for got, want in zip(outputs, reference, strict=True)
                )
                row.tolerance = parity_tolerance(row.precision)
                row.note = "ok" if row.error <= row.tolerance else "PARITY FAILED"
            elif reference is None:
                row.note = "no reference ran"
        eager = next(
            (r for r in target_rows if r.backend == "torch-cuda" and r.p50_ms is not None),
            next((r for r in target_rows if r.backend == "torch-cpu" and r.p50_ms), None),
        )
        for row in target_rows:
            if eager is not None and row.p50_ms:
                row.speedup = eager.p50_ms / row.p50_ms
        rows += target_rows
    return rows


def table(rows: list[Row]) -> str:
    def number(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    header = ("model", "backend", "asked", "runs as", "device", "max|d|", "tol", "p50 ms",
              "p99 ms", "x eager", "result")  # fmt: skip
    lines = [header]
    for r in rows:
        lines.append((
            r.target, r.backend, r.asked, r.precision, r.device[:24], number(r.error, ".1e"),
            number(r.tolerance, ".0e"), number(r.p50_ms, ".3f"), number(r.p99_ms, ".3f"),
            number(r.speedup, ".2f"), r.note,
        ))  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line[:-1], widths, strict=True))
        + "  "
        + line[-1]
        for line in lines
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models/weights/default.onnx")
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "tests/data/tiny_model/run")
    parser.add_argument(
        "--checkpoint-model",
        type=Path,
        default=ROOT / "tests/data/tiny_model/model.onnx",
        help="the checkpoint's exported window graph",
    )
    parser.add_argument("--runs", type=int, default=300, help="timed predict calls per backend")
    parser.add_argument("--cpu-runs", type=int, default=100, help="... per CPU backend")
    parser.add_argument("--paper", action="store_true", help="add the paper-sized model")
    parser.add_argument("--budget-s", type=float, default=420.0, help="start no backend after")
    parser.add_argument("--wheels", type=Path, help="install the wheels in this folder first")
    args = parser.parse_args(argv)
    if min(args.runs, args.cpu_runs) < 2:
        parser.error(f"'--runs' and '--cpu-runs' must be >= 2, got {args.runs}, {args.cpu_runs}")
    if args.wheels is not None:
        install_wheels(args.wheels)
    print(f"python {platform.python_version()} on {platform.platform()}")
    print("packages:")
    print("\n".join(package_report()))
    print(gpu_report())
    shipped_run = ROOT / "models/weights/default.run"
    shipped = args.model.resolve() == (ROOT / "models/weights/default.onnx").resolve()
    targets = [
        Target("default", args.model, shipped_run if shipped and shipped_run.exists() else None),
        Target("tiny", args.checkpoint_model, args.checkpoint),
    ]
    with tempfile.TemporaryDirectory() as workdir:
        if args.paper:
            try:
                targets.append(paper_target(Path(workdir)))
            except RuntimeError as err:
                print(f"paper-sized model not built: {err}")
        rows = smoke(targets, args.runs, args.cpu_runs, args.budget_s)
    print()
    print(table(rows))
    return 1 if any(r.note.startswith("PARITY FAILED") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
