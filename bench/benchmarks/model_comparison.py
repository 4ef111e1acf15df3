"""Every model family side by side on the same held-out windows, clean and with dropped frames.

One run, one set of windows: each model (an exported window graph) and the persistence, linear
and fitted AR baselines (``ar``: ``service.core.autoregressive``, fitted on the training split
of the same sessions with ``--ar-lags`` own lags) are scored on the test split of the same
sessions, per predicted frame, in one shared normalisation (the first model's), PSNR at the
project's one R (``service.core.scores.DATA_RANGE``), so every PSNR in the tables is comparable
with each other and with ``corticast evaluate`` and replays: each window's MSE is over the
channels live in it (``SplitWindows.live``), the ones the daemon and a replay score. Then the
same windows are scored again with frames dropped (``models.drops``: 10 % at random, then 10 %
in bursts of 3–8 frames), each model fed what the daemon would feed it under its missing-frame
policy: a model that takes irregular input gets the 16 frames received with their times (policy
``irregular``), the others and the baselines the nominal window with lost frames held (policy
``hold``). The future is always the true next 16 frames.

Last, the latency of each model on the daemon's predictors (ONNX Runtime CPU; PyTorch eager
when a training run is given), timed as ``bench.benchmarks.inference_latency`` times them.

A model is an exported window graph or a training run directory. ``--raster NAME=PATH`` adds
S-HR-VQVAE's faithful sampler (the raster stages exported beside the window graph PATH): ~1,600
sequential evaluations per prediction, so give it a thinned set of windows (``--window-stride``)
and few latency runs (``--raster-latency-runs``). ``--codec-bound NAME=RUN`` adds the row
"NAME codec bound": a coding family's own reconstruction of the true future (S-HR-VQVAE's
``decode(encode(future))``), the best its predictor could score. An exported graph is scored
with ONNX Runtime a batch per call (``models.batch_graph``: each window's numbers are batch
1's), a run with PyTorch in batches (the export's parity check bounds the difference at 1e-4);
a run's ``model.onnx`` (if exported) is timed with ONNX Runtime, and the run itself with
PyTorch eager.

Usage::

    python -m bench.benchmarks.model_comparison --data synthetic:900-901@60 \\
        --model mr_layer_lstm=models/weights/default.onnx \\
        --model trajgru_attention=runs/trajgru_attention/model.onnx \\
        --checkpoint trajgru_attention=runs/trajgru_attention --out runs/comparison
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torch.utils.data import DataLoader

from bench.benchmarks._options import name_and_path
from bench.benchmarks.inference_latency import time_interleaved, timing_windows
from models.data import SessionWindows
from models.drops import DropModel, DroppedWindows
from models.evaluation import (
    autoregressive,
    fit_autoregressive,
    linear_extrapolation,
    per_horizon,
    persistence,
)
from models.loading import LoadedModel, load_codec_bound, load_predictor
from models.metadata import RASTER_STAGES, raster_stage_path
from models.objective import as_batch
from models.sources import load_sessions
from models.training import load_checkpoint
from service.core.atomic_write import write_atomically
from service.core.autoregressive import DEFAULT_LAGS, FittedAutoregressive
from service.core.checks import repeated
from service.core.scores import DATA_RANGE, PSNR_SCALE, psnr_db
from service.inference.backends import create_predictor
from service.inference.predictor import DEFAULT_STREAM, BackendUnavailableError

HORIZONS = (1, 4, 8, 16)
"""Predicted frames shown in the tables (all 16 enter the pooled column)."""
REACH = 16
"""Frames before each window a drop may reach back into (as in training)."""
BATCH = 32


@dataclass
class Scores:
    """Summed per-horizon MSE of one predictor under one condition, each window's over its
    live channels (``SplitWindows.live``: those the daemon would score)."""

    mse_sum: np.ndarray = field(default_factory=lambda: np.zeros(16))
    windows: int = 0

    def add(self, prediction: torch.Tensor, target: torch.Tensor, live: np.ndarray) -> None:
        mse = per_horizon("mse", prediction, target, live)
        self.mse_sum = self.mse_sum + len(target) * mse
        self.windows += len(target)

    def psnr(self) -> np.ndarray:
        return psnr_db(self.mse_sum / self.windows)

    def pooled_psnr(self) -> float:
        return float(psnr_db(np.mean(self.mse_sum / self.windows)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", required=True, help="session spec; repeat")
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        help="NAME=PATH (.onnx window graph or training run); repeat",
    )
    parser.add_argument(
        "--raster",
        action="append",
        default=[],
        help="NAME=PATH: the raster sampler exported beside window graph PATH; repeat",
    )
    parser.add_argument(
        "--codec-bound",
        action="append",
        default=[],
        help="NAME=RUN: score RUN's reconstruction of the true future as NAME's bound; repeat",
    )
    parser.add_argument(
        "--checkpoint", action="append", default=[], help="NAME=RUN for PyTorch latency; repeat"
    )
    parser.add_argument("--split", default="test")
    parser.add_argument("--window-stride", type=int, default=4)
    parser.add_argument("--drop-rate", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0, help="seed of the drops")
    parser.add_argument(
        "--ar-lags", type=int, default=DEFAULT_LAGS, help="own lags of the fitted AR baseline"
    )
    parser.add_argument("--latency-runs", type=int, default=500)
    parser.add_argument("--raster-latency-runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="directory for comparison.json")
    args = parser.parse_args()

    given = {
        option: [_pair(text, option) for text in texts]
        for option, texts in (
            ("--model", args.model),
            ("--raster", args.raster),
            ("--codec-bound", args.codec_bound),
        )
    }
    _check_columns(given)
    paths, rasters = dict(given["--model"]), dict(given["--raster"])
    checkpoints = dict(_pair(text, "--checkpoint") for text in args.checkpoint)
    checkpoints |= {name: path for name, path in paths.items() if path.is_dir()}
    graphs = {name: _graph_of(path) for name, path in paths.items()}
    models = {name: load_predictor(path) for name, path in paths.items()}
    models |= {name: load_predictor(path, raster=True) for name, path in rasters.items()}
    bounds = {f"{name} codec bound": load_codec_bound(run) for name, run in given["--codec-bound"]}
    reference = next(iter(models.values())).normalisation
    for model in (*models.values(), *bounds.values()):
        model.use_frame_normalisation(reference)
    sessions = load_sessions(args.data)
    windows = SessionWindows(
        sessions, args.split, reference, stride=args.window_stride, extra_past=REACH
    )
    ar = fit_autoregressive(sessions, reference, lags=args.ar_lags)
    conditions = {
        "clean": DropModel(),
        f"{args.drop_rate:.0%} random drops": DropModel(random_rate=args.drop_rate),
        f"{args.drop_rate:.0%} burst drops": DropModel(burst_rate=args.drop_rate),
    }
    # Each window is scored over its live channels, those the daemon would score.
    live = np.stack([windows.live(i) for i in range(len(windows))])
    results = {
        condition: _score(models, bounds, (windows, live), drops, args.seed, ar)
        for condition, drops in conditions.items()
    }
    latency = _latency(graphs, checkpoints, args.threads, args.latency_runs)
    latency |= _raster_latency(rasters, args.threads, args.raster_latency_runs)

    print(
        f"{len(windows)} held-out windows ({args.split} split of {', '.join(args.data)}, "
        f"stride {args.window_stride}); {PSNR_SCALE} in dB (10 log10(R²/MSE), in the first "
        f"model's normalisation, MSE over each window's live channels, {live.mean():.1%} of "
        f"them); pooled = all 16 "
        f"frames. {platform.node()}, {os.cpu_count()} CPUs visible.\n"
    )
    weights = {name: _weight_count(path) for name, path in paths.items()}
    weights |= {
        name: sum(_weight_count(raster_stage_path(path, stage)) for stage in RASTER_STAGES)
        for name, path in rasters.items()
    }
    for condition, scores in results.items():
        print(_table(condition, scores, models, weights))
    print(_latency_table(latency, args.threads, args.latency_runs))
    if rasters:
        print(f"(raster samplers: {args.raster_latency_runs} timed predictions each)\n")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        report = {
            "data": args.data,
            "split": args.split,
            "windows": len(windows),
            "scored_fraction": float(live.mean()),
            "data_range": DATA_RANGE,
            "psnr_scale": PSNR_SCALE,
            "psnr": {
                condition: {name: s.psnr().tolist() for name, s in scores.items()}
                for condition, scores in results.items()
            },
            "weights": weights,
            "latency_ms": latency,
        }
        write_atomically(args.out / "comparison.json", json.dumps(report, indent=2))


def _score(
    models: dict[str, LoadedModel],
    bounds: dict[str, LoadedModel],
    scored: tuple[SessionWindows, np.ndarray],
    drops: DropModel,
    seed: int,
    ar: FittedAutoregressive,
) -> dict[str, Scores]:
    """Every model, codec bound and the three baselines on ``scored``'s windows with
    ``drops``, each window over its live channels ((windows, rows, cols) bool); same drops
    for all (a bound codes the true future, which no drop touches)."""
    windows, masks = scored
    held = DroppedWindows(windows, drops, fill="hold", seed=seed)
    irregular = DroppedWindows(windows, drops, fill="irregular", seed=seed)
    scores = {name: Scores() for name in (*models, *bounds, "persistence", "linear", "ar")}
    loaders = (DataLoader(held, batch_size=BATCH), DataLoader(irregular, batch_size=BATCH))
    done = 0
    with torch.no_grad():
        for held_batch, irregular_batch in zip(*loaders, strict=True):
            hold, received = as_batch(held_batch), as_batch(irregular_batch)
            live = masks[done : done + len(hold.future)]
            done += len(hold.future)
            for name, model in models.items():
                fed = received if model.irregular else hold
                scores[name].add(model.predict(fed.past, fed.past_times), hold.future, live)
            for name, bound in bounds.items():
                scores[name].add(bound.predict(hold.future), hold.future, live)
            scores["persistence"].add(persistence(hold.past, 16), hold.future, live)
            scores["linear"].add(linear_extrapolation(hold.past, 16), hold.future, live)
            scores["ar"].add(autoregressive(ar, hold.past, 16), hold.future, live)
    return scores


def _latency(
    graphs: dict[str, Path | None], checkpoints: dict[str, Path], threads: int, runs: int
) -> dict[str, dict[str, list[float] | str]]:
    """(p50, p99, max) ms per model and backend, or why the backend could not run it."""
    windows = timing_windows()
    out: dict[str, dict[str, list[float] | str]] = {}
    for name, path in graphs.items():
        out[name] = {}
        backends = [] if path is None else [("onnxruntime-cpu", None)]
        if name in checkpoints:
            backends.insert(0, ("torch-cpu", checkpoints[name]))
        for backend, checkpoint in backends:
            try:
                out[name][backend] = _time_backend(
                    backend, "window", path, checkpoint, threads, windows, runs, min(100, runs)
                )
            except (BackendUnavailableError, ValueError) as err:
                out[name][backend] = str(err)
    return out


def _raster_latency(
    rasters: dict[str, Path], threads: int, runs: int
) -> dict[str, dict[str, list[float]]]:
    """(p50, p99, max) ms of each raster sampler on the daemon's raster predictor (ORT CPU)."""
    windows = timing_windows()
    return {
        name: {
            "onnxruntime-cpu (raster)": _time_backend(
                "onnxruntime-cpu", "raster", path, None, threads, windows, runs, warmup=1
            )
        }
        for name, path in rasters.items()
    }


def _time_backend(
    backend: str,
    mode: str,
    path: Path | None,
    checkpoint: Path | None,
    threads: int,
    windows: list[np.ndarray],
    runs: int,
    warmup: int,
) -> list[float]:
    """(p50, p99, max) ms of ``runs`` predictions on the daemon's predictor for ``backend``."""
    predictor = create_predictor(
        backend, mode, model_path=path, step_path=None, checkpoint=checkpoint,
        stream=DEFAULT_STREAM, threads=threads,
        engine_cache_dir=Path("~/.cache/corticast/engines"),
    )  # fmt: skip
    (times,) = time_interleaved([predictor], windows, runs, warmup=warmup)
    predictor.close()
    return [float(v) for v in (*np.percentile(times, [50, 99]), times.max())]


def _table(
    condition: str,
    scores: dict[str, Scores],
    models: dict[str, LoadedModel],
    weights: dict[str, int],
) -> str:
    lines = [
        f"### {condition}\n",
        "| model | input | weights | " + " | ".join(f"f{h}" for h in HORIZONS) + " | pooled |",
        "|---|---|---:|" + "---:|" * (len(HORIZONS) + 1),
    ]
    for name, score in scores.items():
        psnr = score.psnr()
        if name in models:
            fed = "received + times" if models[name].irregular else "hold-last"
            size = f"{weights[name]:,}"
        elif name.endswith("codec bound"):
            fed, size = "true future", "-"
        else:
            fed, size = "hold-last", "-"
        cells = " | ".join(f"{psnr[h - 1]:.2f}" for h in HORIZONS)
        lines.append(f"| {name} | {fed} | {size} | {cells} | {score.pooled_psnr():.2f} |")
    return "\n".join(lines) + "\n"


def _latency_table(latency: dict, threads: int, runs: int) -> str:
    lines = [
        f"### CPU latency ({threads} threads, {runs} timed predictions, batch 1)\n",
        "| model | backend | p50 ms | p99 ms | max ms |",
        "|---|---|---:|---:|---:|",
    ]
    for name, backends in latency.items():
        for backend, value in backends.items():
            if isinstance(value, str):
                lines.append(f"| {name} | {backend} | not run: {value} | | |")
            else:
                lines.append(f"| {name} | {backend} | {value[0]:.3f} | {value[1]:.3f} | "
                             f"{value[2]:.3f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _graph_of(path: Path) -> Path | None:
    """The window graph of a model: the file itself, or a run's exported ``model.onnx``."""
    if not path.is_dir():
        return path
    graph = path / "model.onnx"
    return graph if graph.is_file() else None


def _weight_count(path: Path) -> int:
    """Weights of an exported graph (after its duplicate weights were merged), or of a run's
    generator (all of it: a paper-000 run also holds the decoder the graph leaves out)."""
    if path.is_dir():
        generator = load_checkpoint(path)["generator"]
        return int(sum(t.numel() for t in generator.values()))
    graph = onnx.load(str(path), load_external_data=False).graph
    return int(sum(np.prod(init.dims) for init in graph.initializer))


def _check_columns(given: dict[str, list[tuple[str, Path]]]) -> None:
    """Every row is keyed by its name: refuse two of one name (a second ``--model a=`` would
    replace the first) or one a baseline has (its scores would be added into the baseline's)."""
    names = [name for name, _ in (*given["--model"], *given["--raster"])]
    names += [f"{name} codec bound" for name, _ in given["--codec-bound"]]
    names += ["persistence", "linear", "ar"]
    twice = sorted(repeated(names))
    if twice:
        raise SystemExit(
            f"error: {', '.join(map(repr, twice))} names two columns (a model's, or a "
            f"baseline's): give each model its own name"
        )


def _pair(text: str, option: str) -> tuple[str, Path]:
    try:
        return name_and_path(text, option)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
