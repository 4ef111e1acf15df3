"""Fine-tune a trained model on a rig's own recordings (``corticast adapt``).

A model trained on generated sessions meets a rig whose background, waveforms and artefacts it
has never seen. A few minutes of fine-tuning on that rig's recordings is what a user would try
first, so it is one command. Each session is split by time, never shuffled across the split:
the first 60 % fine-tunes, the next 20 % decides when to stop (the prediction error on it,
checked every ``check_every`` steps; the best weights seen are kept), and the last 20 % scores
the model before and after, per horizon, beside the baselines (persistence, linear
extrapolation, and the linear AR model fitted on the same 60 %). Neither fine-tuning nor
stopping sees the scored part, so the table says what the daemon would gain on more of the
same recording.

The model's normalisation and everything else in its metadata are kept: the daemon serves the
adapted model exactly as it served the original. The adversarial term (paper 000's energy-based
discriminator) is off: a fresh discriminator would need its own warm-up, and fine-tuning only
needs the prediction and reconstruction losses to move the generator a little.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from itertools import chain, repeat
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from bench.data.session import Session
from models.data import WINDOW_FRAMES, Normalisation, SessionWindows, normalisation_from_dict
from models.evaluation import EvaluationReport, evaluate, fit_autoregressive
from models.loading import generator_predictor
from models.objective import ObjectiveSettings, as_batch
from models.registry import family
from models.stream_fit import misfits
from models.training import (
    CHECKPOINT,
    generator_from_checkpoint,
    load_checkpoint,
    write_checkpoint,
)
from models.windows import source_note
from service.core.atomic_write import write_atomically
from service.core.checks import check_int, check_positive
from service.core.grid import ElectrodeGrid

ADAPT_FRACTIONS = (0.6, 0.2, 0.2)
"""Per session, in time order: fine-tune, decide when to stop, score."""
ADAPTED_FILE = "adaptation.json"
"""What an adapted run directory says about its fine-tuning, beside its checkpoint."""


@dataclass(frozen=True)
class AdaptSettings:
    """How long and how gently to fine-tune.

    Attributes
    ----------
    minutes
        Wall-clock budget of the fine-tuning (checks included); the best weights so far are
        kept when it runs out.
    max_steps
        Upper bound on updates, whatever the budget (also sets the family's learning-rate
        schedule, which may drop at half of it).
    batch_size, window_stride
        Training batches, and frames between the windows taken from each split.
    learning_rate
        Adam's rate: a tenth of a typical training rate, so a short run moves the weights a
        little rather than forgetting what the mixture taught.
    check_every, patience
        Steps between checks of the held-out error, and how many checks without a new best
        end the run early.
    check_stride
        Frames between the held-out windows a check scores: windows 2 frames apart are
        nearly the same window, and at the training stride a check of a 16-16 model on a
        2-minute session took longer than 50 steps of training.
    seed
        Seed of batch order and any sampling in the objective.
    """

    minutes: float = 10.0
    max_steps: int = 5000
    batch_size: int = 8
    window_stride: int = 2
    learning_rate: float = 1e-4
    check_every: int = 50
    check_stride: int = 8
    patience: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive("minutes", self.minutes)
        check_positive("learning_rate", self.learning_rate)
        for name, low in (
            ("max_steps", 2),
            ("batch_size", 1),
            ("window_stride", 1),
            ("check_every", 1),
            ("check_stride", 1),
            ("patience", 1),
            ("seed", 0),
        ):
            check_int(name, getattr(self, name), low)


@dataclass(frozen=True)
class AdaptResult:
    """What the fine-tuning did and how the model scores before and after it.

    ``report`` holds ``"before"``, ``"after"`` and the baselines on the scored part of every
    session (the last 20 %) that holds a window there; ``left_out`` names any that does not.
    """

    run_dir: Path
    steps: int
    best_step: int
    stopped_because: str
    validation_mse: tuple[float, float]
    report: EvaluationReport
    left_out: tuple[str, ...] = ()
    """One line per session with no window in some part, naming what it was left out of."""


def check_new_run_dir(run_dir: Path) -> None:
    """Refuse ``run_dir`` as :func:`adapt`'s ``run_dir`` now, not once the data is loaded and
    the budget spent: it, or the nearest of its folders that exists, must be a directory
    holding no run.

    Raises
    ------
    FileExistsError
        If ``run_dir`` already holds a checkpoint.
    NotADirectoryError
        If ``run_dir`` or a folder above it is a file.
    """
    existing = next(path for path in (run_dir, *run_dir.parents) if path.exists())
    if not existing.is_dir():
        raise NotADirectoryError(
            f"{str(existing)!r} is a file, not a run directory; choose a new directory"
        )
    if (run_dir / CHECKPOINT).exists():
        raise FileExistsError(f"{str(run_dir)!r} already holds a run; choose a new directory")


def adapt(
    source: str | Path,
    sessions: Session | Sequence[Session],
    run_dir: str | Path,
    settings: AdaptSettings = AdaptSettings(),
    *,
    progress: bool = True,
    clock: Callable[[], float] = time.monotonic,
    specs: Sequence[str] = (),
) -> AdaptResult:
    """Fine-tune the run ``source`` on ``sessions``; write the adapted run into ``run_dir``.

    ``run_dir`` gets a checkpoint in the training format (``corticast export`` exports it) and
    ``adaptation.json``; it must not hold a run already. ``specs``, the data specs the sessions
    were loaded from (``models.sources``), are recorded in it, so that an export of the run
    checks it on the same scored tail; none: the export has no data to check it on.

    Raises
    ------
    FileNotFoundError
        If ``source`` has no checkpoint.
    FileExistsError
        If ``run_dir`` already holds a checkpoint.
    NotADirectoryError
        If ``run_dir`` is a file.
    ValueError
        If a session's splits hold no complete window, or its grid or rate differ from the
        model's.
    """
    run_dir = Path(run_dir)
    check_new_run_dir(run_dir)
    state = load_checkpoint(source)
    try:
        generator = generator_from_checkpoint(state)
    except ValueError as err:
        raise ValueError(f"checkpoint {str(Path(source) / CHECKPOINT)!r}: {err}") from None
    original = copy.deepcopy(generator)
    name = state["config"]["family"]
    sessions = [sessions] if isinstance(sessions, Session) else list(sessions)
    _check_fits(state, sessions)
    normalisation = normalisation_from_dict(state["normalisation"])
    splits = {
        split: SessionWindows(
            sessions,
            split,
            normalisation,
            fractions=ADAPT_FRACTIONS,
            stride=settings.check_stride if split == "val" else settings.window_stride,
        )
        for split in ("train", "val", "test")
    }
    irregular = family(name).irregular
    tuning = _fine_tune(generator, name, splits, settings, clock, progress, source)
    generator.load_state_dict(tuning.best_state)
    generator.eval()
    # Batches made as they are scored, not held: an hour's recording has 100 000 windows of
    # 46 kB in its last 20 % at stride 2 (evaluate keeps only sums). Each window is scored
    # over its live channels, as the daemon will score the model on this rig.
    scored = (
        (torch.from_numpy(past), torch.from_numpy(future), live)
        for past, future, live in splits["test"].iter_batches(32, live=True)
    )
    # The fitted AR baseline, fitted on the part that tuned the model: what a careful user
    # would try first with the same recordings (a robust-online model's units change with
    # every window, so there it is left out).
    ar = (
        fit_autoregressive(sessions, normalisation, fractions=ADAPT_FRACTIONS)
        if isinstance(normalisation, Normalisation)
        else None
    )
    report = evaluate(
        {
            "before": generator_predictor(original.eval(), irregular),
            "after": generator_predictor(generator, irregular),
        },
        scored,
        ar=ar,
    )
    result = AdaptResult(
        run_dir,
        tuning.steps,
        tuning.best_step,
        tuning.stopped_because,
        tuning.validation_mse,
        report,
        _left_out(sessions, splits),
    )
    # Written once everything is scored: a run that fails leaves no checkpoint behind, which
    # would refuse the rerun and which `corticast export` would export.
    run_dir.mkdir(parents=True, exist_ok=True)
    _save(run_dir, state, generator, source, settings, tuning.best_step, splits["train"], specs)
    write_atomically(run_dir / ADAPTED_FILE, _summary_json(source, settings, result))
    return result


@dataclass(frozen=True)
class _Tuning:
    """What :func:`_fine_tune` reached: the best weights and when and why it stopped."""

    steps: int
    best_step: int
    best_state: dict[str, Any]
    stopped_because: str
    validation_mse: tuple[float, float]


def _fine_tune(
    generator: torch.nn.Module,
    name: str,
    splits: dict[str, SessionWindows],
    settings: AdaptSettings,
    clock: Callable[[], float],
    progress: bool,
    source: str | Path,
) -> _Tuning:
    """Update ``generator`` on the train split, checking the val split every
    ``check_every`` steps (and when time runs out); keep the best weights seen, the
    starting ones included. A start that predicts NaN/inf is refused: no error compares
    below NaN, so its broken weights would be kept whatever tuning reached."""
    torch.manual_seed(settings.seed)
    objective = family(name).objective(
        generator,
        ObjectiveSettings(
            settings.max_steps, adversarial=False, learning_rate=settings.learning_rate
        ),
        distributed=False,
        device=torch.device("cpu"),
    )
    irregular = family(name).irregular
    validation = DataLoader(splits["val"], batch_size=32)  # batched anew at each check, not held
    before = _mse(generator_predictor(generator, irregular), validation)
    if not math.isfinite(before):
        raise ValueError(
            f"the model in {str(source)!r} predicts NaN/inf on the held-out part of the "
            f"sessions (its error there is {before}): its weights are broken; start from "
            "another run"
        )
    best = (before, 0, copy.deepcopy(generator.state_dict()))
    loader = DataLoader(
        splits["train"],
        batch_size=settings.batch_size,
        shuffle=True,
        drop_last=len(splits["train"]) >= settings.batch_size,
        generator=torch.Generator().manual_seed(settings.seed),
    )
    batches = chain.from_iterable(repeat(loader))  # a fresh shuffle every pass
    deadline = clock() + 60.0 * settings.minutes
    checks_without_gain, step = 0, 0
    bar = tqdm(total=settings.max_steps, disable=not progress, desc="adapt")
    while True:
        generator.train()
        logs = objective.step(as_batch(next(batches)), step)
        step += 1
        bar.update(1)
        out_of_time = clock() >= deadline
        if step % settings.check_every and step < settings.max_steps and not out_of_time:
            continue
        error = _mse(generator_predictor(generator.eval(), irregular), validation)
        bar.set_postfix(loss=f"{logs['loss']:.4f}", held_out=f"{error:.4g}")
        if error < best[0]:
            best, checks_without_gain = (error, step, copy.deepcopy(generator.state_dict())), 0
        else:
            checks_without_gain += 1
        if step >= settings.max_steps:
            stopped_because = f"all {settings.max_steps} steps done"
        elif checks_without_gain >= settings.patience:
            stopped_because = f"no better held-out error in {settings.patience} checks"
        elif out_of_time:
            stopped_because = f"the {settings.minutes:g}-minute budget ran out"
        else:
            continue
        bar.close()
        return _Tuning(step, best[1], best[2], stopped_because, (before, best[0]))


def _check_fits(state: dict[str, Any], sessions: Sequence[Session]) -> None:
    """Every session must have the grid, pitch and rate the model was trained on."""
    trained = state["provenance"]
    grid = ElectrodeGrid(**trained["grid"])
    problems = misfits(sessions, grid, trained["sample_rate_hz"])
    if problems:
        raise ValueError("the sessions do not fit the model: " + "; ".join(problems))


_USES = {"train": "the tuning", "val": "the early stopping", "test": "the scored table and check"}
"""What each part of a session is used for, as :func:`_left_out` says it."""


def _left_out(sessions: Sequence[Session], splits: dict[str, SessionWindows]) -> tuple[str, ...]:
    """A line for each session with no whole window in some part (shorter than a window, or
    cut up by gaps and stimulation artefact): the runs on the others are not refused, but the
    table must not be read as covering it."""
    counts = {name: windows.provenance["sessions"] for name, windows in splits.items()}
    lines = []
    for index, session in enumerate(sessions):
        empty = [name for name in counts if counts[name][index]["n_windows"] == 0]
        if empty:
            uses = " and of ".join(_USES[name] for name in empty)
            lines.append(
                f"session {index}{source_note(session)}: no window of {WINDOW_FRAMES} gap-free "
                f"frames in its {' and '.join(empty)} part{'s' if len(empty) > 1 else ''}: "
                f"left out of {uses}"
            )
    return tuple(lines)


def _mse(predict: Callable, batches: Iterable) -> float:
    """Mean squared prediction error over every held-out window, in model units."""
    total, count = 0.0, 0
    with torch.no_grad():
        for past, future in batches:
            total += float(torch.sum((predict(past, None) - future) ** 2))
            count += future.numel()
    return total / count


def _save(
    run_dir: Path,
    source_state: dict[str, Any],
    generator: torch.nn.Module,
    source: str | Path,
    settings: AdaptSettings,
    best_step: int,
    train_set: SessionWindows,
    specs: Sequence[str],
) -> None:
    """A checkpoint in the training format: the source's config and normalisation, the adapted
    weights, and provenance that says both where the model came from and what tuned it (the
    specs of the sessions too, which an export reloads for its held-out check)."""
    state = {
        "config": source_state["config"],
        "steps_done": int(source_state["steps_done"]) + best_step,
        "last_logs": {},
        "generator": generator.state_dict(),
        "normalisation": source_state["normalisation"],
        "provenance": {
            **source_state["provenance"],
            "adapted": {
                "from": str(source),
                "settings": asdict(settings),
                "steps": best_step,
                "data": train_set.provenance,
                "specs": list(specs),
            },
        },
    }
    write_checkpoint(run_dir, state)


def _summary_json(source: str | Path, settings: AdaptSettings, result: AdaptResult) -> str:
    before, after = result.validation_mse
    return json.dumps(
        {
            "from": str(source),
            "settings": asdict(settings),
            "steps": result.steps,
            "best_step": result.best_step,
            "stopped_because": result.stopped_because,
            "validation_mse": {"before": before, "after": after},
            "left_out": list(result.left_out),
            "scored": result.report.to_dict(),
        },
        indent=2,
    )
