"""Leave-one-family-out: how well predictors do on a generator family they never saw.

For each generator family of the mixture (``bench.data.synth.mixture``: ``pink``, ``ou``,
``field``) in turn, a model is trained on mixture sessions drawn without that family
(``synthetic-mix:TRAIN@SECONDS/without=FAMILY``) and scored on sessions of that family only
(``synthetic-mix:TEST@SECONDS/only=FAMILY``), per predicted frame, in PSNR and SSIM, beside
persistence, linear extrapolation, the fitted linear AR model (``ar``: fitted on each held-out
session's own first 60 %, what a user with that recording would try first) and any existing
model given with ``--model`` (scored on every family without training, e.g. the shipped
default; refused if it learnt from a session ``--test`` holds out, the same seed drawn as the
same family, as its file records its data). A model that beats persistence only
on the families it was trained on has learnt its generator, not wave dynamics; this is the
table that says which. Every model also gets a blended column (``NAME blended``): what the
daemon would have served, the model blended per horizon with persistence and the live AR
baseline (refitted on the session's recent frames as the daemon refits it) by the real
``service.loop.blend.Blend`` at the daemon's default settings, fitted causally on each held-out
session's earlier windows and reset per session (:mod:`bench.benchmarks.blended`, which says
what it sees of the windows: one every ``--eval-stride`` frames, where the daemon scores every
prediction it made at its own stride).

Scoring: ``models.evaluation.evaluate`` on every window of every held-out session (stride
``--eval-stride``), each family in a normalisation fitted on its own held-out frames (every
model maps through its own normalisation, so this only sets the units), PSNR and SSIM at the
project's one R (``service.core.scores.DATA_RANGE`` = 2 normalised units). Pooled over families:
PSNR = 10 log10(R² / mean MSE), SSIM the mean, both weighted by windows.

More predictor columns join through
:data:`EXTRA_PREDICTORS`: name -> factory, called once per family with what that family's
run knows (:class:`FamilyData`).

Usage::

    python -m bench.benchmarks.generalisation --train 0-11 --test 1000-1003 --seconds 30 \\
        --steps 300 --model default=models/weights/default.onnx --out runs/generalisation
    # the shipped default only, no training:
    python -m bench.benchmarks.generalisation --no-train \\
        --model default=models/weights/default.onnx --out runs/generalisation
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.benchmarks._options import name_and_path
from bench.benchmarks.blended import SUFFIX, ServedColumns
from bench.data.session import Session
from bench.data.synth.mixture import FAMILIES
from models.data import Normalisation, SessionWindows
from models.evaluation import (
    AR,
    BASELINES,
    EvaluationReport,
    Predictor,
    evaluate,
    fit_autoregressive,
)
from models.loading import LoadedModel, load_predictor
from models.sources import generated_in_common, load_spec
from models.training import RunConfig, train
from service.core.atomic_write import write_atomically
from service.core.checks import repeated
from service.core.scores import DATA_RANGE, PSNR_SCALE, psnr_db
from service.loop.settings import LoopSettings

TRAINED = "lofo"
"""Column of the model trained without the held-out family."""
_FORMAT = "corticast.generalisation/4"
"""Version 4: the blend's final weights per session for the model and the live AR baseline
(version 3: the model's only)."""
_BATCH = 32


@dataclass(frozen=True)
class FamilyData:
    """What one family's run knows, for a predictor factory.

    Attributes
    ----------
    family
        The held-out family.
    train_sessions
        The sessions trained on (every family but this one); empty with ``--no-train``.
    normalisation
        The frame normalisation predictors take and return (fitted on the held-out frames).
    models
        The models already loaded for this family (name -> predictor), trained one included.
    """

    family: str
    train_sessions: tuple[Session, ...]
    normalisation: Normalisation
    models: Mapping[str, LoadedModel]


PredictorFactory = Callable[[FamilyData], Predictor]
"""Builds one predictor column for one family: normalised past -> future (B, T, 1, H, W),
numpy arrays (the windows' batches with their live channels, ``SplitWindows.iter_batches``)."""
_AR_FIT = (0.6, 0.2, 0.2)
"""Each held-out session's share the AR baseline is fitted on (its first 60 %)."""
EXTRA_PREDICTORS: dict[str, PredictorFactory] = {}
"""More predictor columns (name -> factory); empty here, the place for fitted baselines."""


@dataclass(frozen=True)
class Settings:
    """What one run of the bench is asked to do."""

    train: str = "0-11"
    test: str = "1000-1003"
    seconds: float = 30.0
    families: tuple[str, ...] = FAMILIES
    models: tuple[tuple[str, Path], ...] = ()
    steps: int = 300
    model_family: str = "mr_layer_lstm"
    hidden: tuple[int, int] = (8, 8)
    kernel_size: int | None = None
    residual: bool = False
    adversarial: bool = True
    batch_size: int = 8
    window_stride: int = 4
    eval_stride: int = 4
    seed: int = 0
    no_train: bool = False

    def __post_init__(self) -> None:
        unknown = [name for name in self.families if name not in FAMILIES]
        if unknown or not self.families:
            raise ValueError(
                f"'--family' must name families of {list(FAMILIES)}, got {list(self.families)}"
            )
        if self.no_train and not self.models:
            raise ValueError("'--no-train' scores only '--model' models: give at least one")
        taken = [
            name
            for name, _ in self.models
            if name in (TRAINED, *BASELINES, AR) or name.endswith(SUFFIX)
        ]
        if taken:
            raise ValueError(
                f"'--model' names {taken} are reserved for the bench's own columns (names "
                f"ending in {SUFFIX!r} name blended columns)"
            )
        twice = sorted(repeated([name for name, _ in self.models]))
        if twice:  # columns are keyed by name: one model's scores would vanish
            raise ValueError(f"'--model' names {twice} two models each: give each its own")


def run(settings: Settings, out: Path, *, progress: bool = False) -> dict[str, Any]:
    """Score every family (training its held-out model unless ``no_train``); write JSON."""
    given = {name: load_predictor(path) for name, path in settings.models}
    _check_models_held_out(settings, given)
    out.mkdir(parents=True, exist_ok=True)
    reports: dict[str, EvaluationReport] = {}
    trained: dict[str, Any] = {}
    blends: dict[str, Any] = {}
    for family in settings.families:
        held_out = load_spec(_test_spec(settings, family))
        windows = SessionWindows(
            held_out, "train", fractions=(1.0, 0.0, 0.0), guard=0, stride=settings.eval_stride
        )
        models = dict(given)
        train_sessions: tuple[Session, ...] = ()
        if not settings.no_train:
            started = time.monotonic()
            train_sessions, models[TRAINED], trained[family] = _train(
                settings, family, out / "runs" / family, progress
            )
            trained[family]["seconds"] = round(time.monotonic() - started, 1)
        for model in models.values():
            model.use_frame_normalisation(windows.normalisation)
        data = FamilyData(family, train_sessions, windows.normalisation, models)
        served = {name: ServedColumns(model, windows) for name, model in models.items()}
        predictors: dict[str, Predictor] = {}
        for name, columns in served.items():
            predictors |= {name: columns.model, name + SUFFIX: columns.blended}
        predictors |= {name: build(data) for name, build in EXTRA_PREDICTORS.items()}
        # The fitted AR baseline, fitted on each held-out session's own first 60 % (what a
        # user with that recording would try first; its windows there are scored in-sample).
        ar = fit_autoregressive(held_out, windows.normalisation, fractions=_AR_FIT)
        # Each window scored on the channels the daemon would score (its live ones).
        batches = windows.iter_batches(_BATCH, live=True)
        reports[family] = evaluate(predictors, batches, ar=ar)
        for columns in served.values():
            columns.finish()
        blends[family] = {
            name + SUFFIX: {"model": c.final_weights, "ar": c.final_ar_weights}
            for name, c in served.items()
        }
        print(f"{family}: {reports[family].n_windows} held-out windows scored", file=sys.stderr)
        result = _result(settings, trained, reports, blends)
        # Written after every family: a run cut short keeps the families it has scored.
        write_atomically(out / "generalisation.json", json.dumps(result, indent=2, allow_nan=False))
    return result


def _test_spec(settings: Settings, family: str) -> str:
    return f"synthetic-mix:{settings.test}@{settings.seconds:g}/only={family}"


def _check_models_held_out(settings: Settings, given: Mapping[str, LoadedModel]) -> None:
    """ValueError where a ``--model`` learnt from a session the bench would hold out (the same
    seed drawn as the same family): its column would score it on its own training data. What
    each learnt from is read with the model (``LoadedModel.trained_on``), not from its file
    again."""
    held_out = [_test_spec(settings, family) for family in settings.families]
    for name, model in given.items():
        learnt = model.trained_on
        shared = generated_in_common(held_out, learnt)
        if shared:
            raise ValueError(
                f"'--model' {name} was trained on {', '.join(shared)} (its data: "
                f"{', '.join(learnt)}), which '--test' {settings.test!r} holds out: score "
                "it on seeds it did not learn from"
            )


def _result(
    settings: Settings,
    trained: dict[str, Any],
    reports: Mapping[str, EvaluationReport],
    blends: Mapping[str, Any],
) -> dict[str, Any]:
    blend = LoopSettings()
    return {
        "format": _FORMAT,
        "settings": _settings_dict(settings),
        "definitions": {
            "pooled psnr": f"10 log10(R² / mean over families of MSE), weighted by windows, "
            f"R = {DATA_RANGE:g} normalised units",
            "pooled ssim": "mean over families of SSIM, weighted by windows",
            "blended": "NAME blended: the daemon's served prediction, persistence + w (model - "
            "persistence) + v (ar - persistence) per horizon, w and v from "
            "service.loop.blend.Blend fitted on the session's windows whose last future frame "
            "precedes this window's newest past frame, ar the live AR baseline refitted on the "
            "session's recent frames on the daemon's schedule; reset per session; it sees the "
            "windows scored here, one every eval_stride frames",
            "blend final_weights": "family -> blended column -> {model, ar} -> per held-out "
            "session, the model's and the live AR's weights (frames 1..16) at the session's "
            "end",
        },
        "blend": {
            "window": blend.blend_window,
            "min_windows": blend.blend_min_windows,
            "final_weights": dict(blends),
        },
        "trained": trained,
        "families": {family: report.to_dict() for family, report in reports.items()},
        "pooled": pooled(reports),
    }


def pooled(reports: Mapping[str, EvaluationReport]) -> dict[str, dict[str, list[float]]]:
    """Predictor -> per-horizon PSNR and SSIM pooled over families (and over horizons for
    ``pooled_psnr``), of the MSE averaged over families weighted by windows."""
    windows = np.array([r.n_windows for r in reports.values()], dtype=np.float64)
    weights = windows / windows.sum()
    names = next(iter(reports.values())).predictors
    out = {}
    parts = list(zip(weights, reports.values(), strict=True))
    for name in names:
        mse = sum(w * r.mse[name] for w, r in parts)
        ssim = sum(w * r.ssim[name] for w, r in parts)
        out[name] = {
            "psnr": psnr_db(mse).tolist(),
            "ssim": np.asarray(ssim).tolist(),
            "pooled_psnr": float(psnr_db(np.mean(mse))),
        }
    return out


def markdown(result: Mapping[str, Any]) -> str:
    """One table per family and one pooled: rows are predicted frames 1..16 and all frames,
    columns PSNR then SSIM per predictor."""
    parts = []
    for family, report in result["families"].items():
        entries = report["predictors"]
        caption = (
            f"### held out: {family} ({report['n_windows']} windows, {PSNR_SCALE}, MSE over "
            f"{report['scored_fraction']:.1%} of the channels: the live ones)"
        )
        parts.append(_table(caption, entries))
    parts.append(_table(f"### pooled over held-out families ({PSNR_SCALE})", result["pooled"]))
    return "\n".join(parts)


def _table(caption: str, entries: Mapping[str, Mapping[str, Any]]) -> str:
    names = list(entries)
    head = [f"{n} PSNR" for n in names] + [f"{n} SSIM" for n in names]
    lines = [caption, "", "| frame | " + " | ".join(head) + " |", "|---:|" + "---:|" * len(head)]
    horizons = len(entries[names[0]]["psnr"])
    for k in range(horizons):
        psnr = [_db(entries[n]["psnr"][k]) for n in names]
        ssim = [f"{entries[n]['ssim'][k]:.3f}" for n in names]
        lines.append(f"| {k + 1} | " + " | ".join(psnr + ssim) + " |")
    psnr = [_db(entries[n]["pooled_psnr"]) for n in names]
    ssim = [f"{np.mean(entries[n]['ssim']):.3f}" for n in names]
    lines.append("| all | " + " | ".join(psnr + ssim) + " |")
    return "\n".join(lines) + "\n"


def _db(value: float | None) -> str:
    return "inf" if value is None else f"{value:.2f}"


def _train(
    settings: Settings, family: str, run_dir: Path, progress: bool
) -> tuple[tuple[Session, ...], LoadedModel, dict[str, Any]]:
    """Train on the mixture without ``family``; the sessions, the model and what was run."""
    spec = f"synthetic-mix:{settings.train}@{settings.seconds:g}/without={family}"
    sessions = tuple(load_spec(spec))
    windows = SessionWindows(sessions, "train", stride=settings.window_stride)
    model: dict[str, Any] = {"hidden": list(settings.hidden)}
    if settings.kernel_size is not None:
        model["kernel_size"] = settings.kernel_size
    if settings.residual:
        model["residual"] = True
    config = RunConfig(
        family=settings.model_family,
        model=model,
        adversarial=settings.adversarial,
        data=(spec,),
        window_stride=settings.window_stride,
        steps=settings.steps,
        batch_size=settings.batch_size,
        seed=settings.seed,
        checkpoint_every=settings.steps,
        log_every=max(1, settings.steps // 10),
    )
    result = train(config, windows, run_dir, progress=progress)
    families = sorted({s.info["family"] for s in sessions})
    record = {"data": spec, "families": families, "windows": len(windows)}
    return sessions, load_predictor(run_dir), record | {"last_logs": result.last_logs}


def _settings_dict(settings: Settings) -> dict[str, Any]:
    values = dict(settings.__dict__)
    values["models"] = {name: str(path) for name, path in settings.models}
    values["families"] = list(settings.families)
    values["hidden"] = list(settings.hidden)
    return values


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", default=Settings.train, help="training mixture seeds")
    parser.add_argument("--test", default=Settings.test, help="held-out mixture seeds")
    parser.add_argument("--seconds", type=float, default=Settings.seconds, help="per session")
    parser.add_argument(
        "--family", action="append", choices=FAMILIES, help="hold out only these; repeat"
    )
    parser.add_argument(
        "--model", action="append", default=[], help="NAME=PATH (.onnx or run); repeat"
    )
    parser.add_argument("--no-train", action="store_true", help="score --model models only")
    parser.add_argument("--steps", type=int, default=Settings.steps, help="per family")
    parser.add_argument("--model-family", default=Settings.model_family)
    parser.add_argument("--hidden", default="8,8", help="two widths, e.g. 8,8")
    parser.add_argument("--kernel-size", type=int, help="ConvLSTM kernel (default: the paper's)")
    parser.add_argument(
        "--residual", action="store_true", help="train the residual form (models.residual)"
    )
    parser.add_argument("--no-adversarial", action="store_true", help="the paper's L2 loss only")
    parser.add_argument("--batch-size", type=int, default=Settings.batch_size)
    parser.add_argument("--window-stride", type=int, default=Settings.window_stride)
    parser.add_argument("--eval-stride", type=int, default=Settings.eval_stride)
    parser.add_argument("--seed", type=int, default=Settings.seed)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: its choice)")
    parser.add_argument("--progress", action="store_true", help="training progress bars")
    parser.add_argument("--out", type=Path, required=True, help="directory for the JSON")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        settings = Settings(
            train=args.train,
            test=args.test,
            seconds=args.seconds,
            families=tuple(args.family or FAMILIES),
            models=tuple(name_and_path(text, "--model") for text in args.model),
            steps=args.steps,
            model_family=args.model_family,
            hidden=tuple(int(w) for w in args.hidden.split(",")),
            kernel_size=args.kernel_size,
            residual=args.residual,
            adversarial=not args.no_adversarial,
            batch_size=args.batch_size,
            window_stride=args.window_stride,
            eval_stride=args.eval_stride,
            seed=args.seed,
            no_train=args.no_train,
        )
        result = run(settings, args.out, progress=args.progress)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"error: {err}") from None
    print(markdown(result))


if __name__ == "__main__":
    main()
