"""The one training loop every model family uses: data, distribution, checkpoints, progress.

Runs unchanged on one process or under ``torchrun`` (DistributedDataParallel: gloo on CPU,
NCCL on GPU); under torchrun every rank trains on its own shard of each batch order and rank 0
writes the checkpoints. A run directory holds ``run.json`` (what was asked), ``checkpoint.pt``
(the newest state, written atomically) and ``log.jsonl`` (losses every ``log_every`` steps);
running again with the same directory resumes from the checkpoint (a log line torn by the
crash goes to ``log.jsonl.torn`` first, so the resumed run's records read back whole; then the
records of steps past the checkpoint, which the resumed run logs again, go to
``log.jsonl.superseded``, so the log holds each step once). A run whose loss or weights stop
being finite stops there, its last finite checkpoint kept.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from models.data import SessionWindows
from models.objective import ObjectiveSettings, as_batch
from models.registry import build_model, family
from models.sources import recorded_spec
from service.core.atomic_write import write_atomically, written_atomically
from service.core.torn_line import keep_aside, set_torn_line_aside

CHECKPOINT = "checkpoint.pt"
RUN_FILE = "run.json"
LOG_FILE = "log.jsonl"
SUPERSEDED_SUFFIX = ".superseded"
"""``log.jsonl.superseded``: the records a resumed run logged again, one a line, oldest first."""

_log = logging.getLogger("corticast")


@dataclass(frozen=True)
class RunConfig:
    """What a training run is asked to do; saved with the run and compared on resume.

    ``data`` names what the training windows were built from (``models.sources`` specs),
    ``window_stride`` how densely, ``drops`` which simulated frame losses
    (``models.drops.DropModel`` fields; empty for none) and ``normalisation`` which input
    scaling (``{"kind": "fixed"}`` or a ``RobustScale.to_dict()``); all are recorded for
    provenance, the caller builds the set.
    """

    family: str
    model: dict[str, Any] = field(default_factory=dict)
    data: tuple[str, ...] = ()
    window_stride: int = 1
    drops: dict[str, float] = field(default_factory=dict)
    normalisation: dict[str, Any] = field(default_factory=lambda: {"kind": "fixed"})
    steps: int = 1000
    batch_size: int = 8
    seed: int = 0
    adversarial: bool = True
    adversarial_weight: float | None = None
    margin: float = 0.1
    learning_rate: float | None = None
    checkpoint_every: int = 100
    log_every: int = 10

    def __post_init__(self) -> None:
        if self.steps < 2:
            raise ValueError(
                f"'steps' must be >= 2 (the learning rate drops at half), got {self.steps!r}"
            )
        for name in ("batch_size", "checkpoint_every", "log_every", "window_stride"):
            if getattr(self, name) < 1:
                raise ValueError(f"'{name}' must be >= 1, got {getattr(self, name)!r}")
        for name in ("model", "normalisation"):
            object.__setattr__(self, name, json.loads(json.dumps(getattr(self, name))))
        object.__setattr__(self, "data", tuple(self.data))


@dataclass(frozen=True)
class RunResult:
    """Where the run left its state, what it reached, and the trained (unwrapped) generator."""

    run_dir: Path
    steps_done: int
    last_logs: dict[str, float]
    generator: torch.nn.Module


def train(
    config: RunConfig, train_set: SessionWindows, run_dir: str | Path, *, progress: bool = True
) -> RunResult:
    """Train ``config.family`` on ``train_set`` for ``config.steps`` iterations (resuming).

    Raises
    ------
    ValueError
        If ``run_dir`` holds a run with a different configuration.
    """
    run_dir = Path(run_dir)
    distributed = dist.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if distributed else 0
    device = _device(distributed)
    _seed_everything(config.seed)

    generator = build_model(config.family, config.model).to(device)
    model = DistributedDataParallel(generator) if distributed else generator
    settings = ObjectiveSettings(
        config.steps,
        config.adversarial,
        config.adversarial_weight,
        config.margin,
        config.learning_rate,
    )
    training = family(config.family).objective(
        model, settings, distributed=distributed, device=device
    )
    start = _resume_or_start(run_dir, config, generator, training, rank)
    if rank == 0:  # a line torn by a crash would swallow this run's first record
        set_torn_line_aside(run_dir / LOG_FILE)
        _set_records_past_aside(run_dir / LOG_FILE, start)

    loader = _loader(train_set, config, rank, dist.get_world_size() if distributed else 1)
    batches = _forever(loader, start)
    logs: dict[str, float] = {}
    bar = tqdm(total=config.steps, initial=start, disable=not progress or rank != 0, desc="train")
    saved = start
    for iteration in range(start, config.steps):
        logs = training.step(as_batch(next(batches)).to(device), iteration)
        bar.update(1)
        done = iteration + 1
        if rank == 0 and (done % config.log_every == 0 or done == config.steps):
            bar.set_postfix(loss=f"{logs['loss']:.4f}")
            with (run_dir / LOG_FILE).open("a") as log:
                log.write(json.dumps({"step": done, **logs}) + "\n")
        saving = rank == 0 and (done % config.checkpoint_every == 0 or done == config.steps)
        if saving or not math.isfinite(logs["loss"]):
            _check_finite(generator, logs, done, saved)
        if saving:
            _save(run_dir, config, generator, training, done, train_set, logs)
            saved = done
    bar.close()
    if distributed:
        dist.barrier()
    return RunResult(
        run_dir=run_dir, steps_done=config.steps, last_logs=logs, generator=generator.eval()
    )


CHECKPOINT_KEYS = ("config", "steps_done", "generator", "normalisation", "provenance")
"""What every checkpoint written here holds (:func:`copy_weights` keeps them all)."""


def load_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    """The newest checkpoint of a run (on the CPU).

    Raises
    ------
    FileNotFoundError
        If the run has none.
    ValueError
        If the file cannot be read (cut short, overwritten) or is not a checkpoint of
        corticast's: named, in one line, not a traceback from the unpickler.
    """
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint in {str(run_dir)!r}: has the run saved one yet?")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(
            f"checkpoint {str(path)!r} cannot be read as a checkpoint ({reason}): was it cut "
            "short or overwritten?"
        ) from None
    missing = [key for key in CHECKPOINT_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise ValueError(
            f"checkpoint {str(path)!r} is not a corticast checkpoint: it lacks {missing}"
        )
    return state


def generator_from_checkpoint(state: dict[str, Any]) -> torch.nn.Module:
    """The generator a checkpoint (:func:`load_checkpoint`) holds, rebuilt from its run's
    family and config, with its weights, in eval mode, on the CPU."""
    run = state["config"]
    generator = build_model(run["family"], run["model"])
    try:
        generator.load_state_dict(state["generator"])
    except RuntimeError as err:  # torch's message lists every key: the first line says what
        raise ValueError(
            f"the checkpoint's weights do not fit its model's configuration ({run['family']} "
            f"{run['model']}): {str(err).splitlines()[-1].strip()}"
        ) from None
    return generator.eval()


def _resume_or_start(
    run_dir: Path, config: RunConfig, generator: torch.nn.Module, training: Any, rank: int
) -> int:
    state = load_checkpoint(run_dir) if (run_dir / CHECKPOINT).is_file() else None
    if state is not None and not all(key in state for key in TRAINING_ONLY):
        # Before run.json is written: the directory is left as it was.
        raise ValueError(
            f"{str(run_dir)!r} holds weights only (an adapted run or a weights copy: no "
            "optimiser state), not a run that can resume; train into a new directory"
        )
    run_file = run_dir / RUN_FILE
    recorded = [_read_run_file(run_file)] if run_file.is_file() else []
    new_run = not recorded
    if state is not None:  # a checkpoint moved into a folder without run.json is compared too
        recorded.append(json.loads(json.dumps(state["config"])))
    asked = json.loads(json.dumps(asdict(config)))  # tuples as lists, as in the file
    # A file spec named as typed (a run begun before the command line recorded them
    # absolute, or one given here by the Python API) is the file in this folder, as before.
    for run in (*recorded, asked):
        run["data"] = [recorded_spec(spec) for spec in run.get("data", [])]
    for saved in recorded:
        if saved != asked:
            changed = sorted(k for k in saved.keys() | asked.keys() if saved.get(k) != asked.get(k))
            raise ValueError(
                f"{str(run_dir)!r} holds a run with a different configuration ({changed}); "
                f"use a new run directory"
            )
    if new_run and rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_atomically(run_file, json.dumps(asdict(config), indent=2))
    if state is None:
        return 0
    generator.load_state_dict(state["generator"])
    training.load_state_dict(state["training"])
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])
    return int(state["steps_done"])


def _check_finite(
    generator: torch.nn.Module, logs: dict[str, float], done: int, saved: int
) -> None:
    """Stop a run whose loss or weights are no longer finite (a learning rate too large): it
    would train on NaN to its end and overwrite the last good checkpoint with NaN weights."""
    if not math.isfinite(logs["loss"]):
        what = f"its loss is {logs['loss']}"
    elif not all(bool(p.isfinite().all()) for p in generator.parameters()):
        what = "its weights are no longer finite"
    else:
        return
    kept = f"the checkpoint of step {saved} is kept" if saved else "no checkpoint was saved"
    raise ValueError(
        f"training diverged at step {done} ({what}): stopped, and {kept}; train with a smaller "
        "learning rate into a new run directory"
    )


def _set_records_past_aside(log: Path, checkpoint_step: int) -> None:
    """Move ``log``'s records of steps past the checkpoint resumed from (0: a run that saved
    none, started again) to its :data:`SUPERSEDED_SUFFIX` side file, and warn: the run logs
    those steps again, and the records logged after the checkpoint came from a state the crash
    lost. The side file is
    made durable before ``log`` is rewritten (atomically): a crash in between leaves them in
    both, and the next resume sets them aside again (a copy too many, none lost). Lines that
    are not records stay where they are."""
    try:
        lines = log.read_bytes().splitlines(keepends=True)  # each ends whole: torn line set aside
    except FileNotFoundError:
        return
    steps = [_logged_step(line) for line in lines]
    past = [step for step in steps if step > checkpoint_step]
    if not past:
        return
    records = list(zip(lines, steps, strict=True))
    side = log.with_name(log.name + SUPERSEDED_SUFFIX)
    keep_aside(side, b"".join(line for line, step in records if step > checkpoint_step))
    write_atomically(log, b"".join(line for line, step in records if step <= checkpoint_step))
    resumed = (
        f"past step {checkpoint_step}, the checkpoint this run resumes from"
        if checkpoint_step
        else "and no checkpoint: this run starts again"
    )
    held = (
        f"1 record (step {past[0]})"
        if len(past) == 1
        else f"{len(past)} records (steps {min(past)}-{max(past)})"
    )
    _log.warning(
        "%s held %s %s: moved to %s, as the run logs those steps again", log, held, resumed, side
    )


def _logged_step(line: bytes) -> int:
    """The step a log line records; -1 for a line that is not a record (it stays put)."""
    try:
        record = json.loads(line)
    except ValueError:  # not JSON, or not UTF-8
        return -1
    step = record.get("step") if isinstance(record, dict) else None
    return step if isinstance(step, int) else -1


def _read_run_file(path: Path) -> dict[str, Any]:
    """The configuration a run directory records; a file that is not one (cut short by a
    run stopped while writing it, which wrote it in place) is named, not a bare JSON error."""
    try:
        saved = json.loads(path.read_bytes())
    except ValueError as err:  # not JSON, or not UTF-8
        problem = str(err)
    else:
        if isinstance(saved, dict):
            return saved
        problem = f"a JSON {type(saved).__name__}, not an object"
    raise ValueError(
        f"{str(path)!r} is not a run's configuration ({problem}): was it cut short? Train "
        "into a new run directory"
    )


def _save(
    run_dir: Path,
    config: RunConfig,
    generator: torch.nn.Module,
    training: Any,
    steps_done: int,
    train_set: SessionWindows,
    last_logs: dict[str, float],
) -> None:
    state = {
        "config": asdict(config),
        "steps_done": steps_done,
        "last_logs": dict(last_logs),
        "generator": generator.state_dict(),
        "training": training.state_dict(),
        "normalisation": train_set.normalisation.to_dict(),
        "provenance": train_set.provenance,
        "rng": {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),
            "python": random.getstate(),
        },
    }
    write_checkpoint(run_dir, state)


TRAINING_ONLY = ("training", "rng")
"""Checkpoint entries only resuming needs (optimisers, discriminator, random states): 94 % of
the default's checkpoint, which :func:`copy_weights` leaves out."""


def copy_weights(run_dir: str | Path, destination: str | Path) -> Path:
    """``run_dir``'s checkpoint without what only resuming needs, as the checkpoint of the run
    directory ``destination``: what fine-tuning (``corticast adapt --from``), export and the
    torch backends read, small enough to ship beside the ONNX files. Returns its path."""
    state = load_checkpoint(run_dir)
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    write_checkpoint(destination, {k: v for k, v in state.items() if k not in TRAINING_ONLY})
    return destination / CHECKPOINT


def write_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    """``state`` as ``run_dir``'s checkpoint, atomically and durably (``written_atomically``):
    a crash or a power loss mid-write leaves the last checkpoint whole, and a failed write
    leaves no scratch file beside it."""
    with written_atomically(run_dir / CHECKPOINT) as scratch:
        torch.save(state, scratch)


def _loader(train_set: SessionWindows, config: RunConfig, rank: int, world: int) -> DataLoader:
    """Shuffled batches; the order of epoch ``e`` depends only on (seed, e), so a resumed run
    sees exactly the batches an uninterrupted one would have. The loader draws a seed from its
    own generator each time it starts an epoch (torch's default: the global one): a resumed
    run starts one mid-epoch, which would shift every random draw training makes after it."""
    sampler = DistributedSampler(
        train_set, num_replicas=world, rank=rank, shuffle=True, seed=config.seed, drop_last=True
    )
    return DataLoader(
        train_set,
        batch_size=config.batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=0,
        generator=torch.Generator().manual_seed(config.seed),
    )


def _forever(loader: DataLoader, skip: int) -> Iterator[Any]:
    """Batches across epochs; resuming skips the batches already trained on."""
    per_epoch = len(loader)
    if per_epoch == 0:
        raise ValueError(
            f"the training set ({len(loader.dataset)} windows) is smaller than one batch "
            f"({loader.batch_size})"
        )
    epoch, offset = divmod(skip, per_epoch)
    while True:
        loader.sampler.set_epoch(epoch)
        for index, batch in enumerate(loader):
            if index >= offset:
                yield batch
        epoch, offset = epoch + 1, 0


def _device(distributed: bool) -> torch.device:
    if not torch.cuda.is_available():
        return torch.device("cpu")
    local = int(os.environ.get("LOCAL_RANK", "0")) if distributed else 0
    torch.cuda.set_device(local)
    return torch.device("cuda", local)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
