"""The model commands of ``corticast``: train, evaluate, export, adapt.

Registered on the main command line by ``service.cli.app``; torch and the training stack are
imported inside each command, so the daemon's commands never load them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from service.core.autoregressive import DEFAULT_LAGS
from service.core.checks import repeated
from service.core.cli_options import GRID_OPTION_HELP
from service.core.errors import EXIT_UNUSABLE
from service.core.grid import DEFAULT_GRID, ElectrodeGrid
from service.core.net import DEFAULT_API_HOST, DEFAULT_API_PORT
from service.core.progress import progress_bar
from service.core.user_errors import fail, or_exit

if TYPE_CHECKING:
    from bench.data.session import Session
    from models._staged_export import StagedExport
    from models.training import RunConfig

DROP_REACH = 16
"""Frames before each training window that a simulated drop may reach back into."""
EVALUATION_BATCH = 32
"""Windows per batch that ``corticast evaluate`` scores at once."""

DataOption = Annotated[
    list[str],
    typer.Option(
        "--data",
        "-d",
        help="Session file (.xdf/.nwb), synthetic:SEEDS@SECONDS (e.g. synthetic:100-109@60) or "
        "synthetic-mix:SEEDS@SECONDS[/without=FAMILY|/only=FAMILY] (the generator mixture: "
        "families pink, ou, field); repeat for more. An XDF file made beside another tool that "
        "stimulated names its marker streams: FILE::markers=NAME[@SOURCE_ID][,...][::blank_ms=MS]; "
        "a file of several electrode streams the one to read: FILE::stream=NAME, and an XDF "
        "stream of another type than ECoG its type: FILE::type=TYPE. " + GRID_OPTION_HELP,
    ),
]


def train(
    model: Annotated[str, typer.Argument(help="Model family (see `corticast models`).")],
    data: DataOption,
    run: Annotated[
        Path, typer.Option(help="Run directory: checkpoints, log; resumes if it exists.")
    ],
    steps: Annotated[int, typer.Option(help="Training iterations.")] = 1000,
    hidden: Annotated[
        str | None, typer.Option(help="ConvLSTM widths, lower,upper (default: the paper's).")
    ] = None,
    kernel_size: Annotated[
        int | None, typer.Option(help="ConvLSTM kernel, odd (default: the paper's).")
    ] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Any config key of the family as KEY=JSON, e.g. --set 'hidden=[8,8]'; repeat.",
        ),
    ] = None,
    learning_rate: Annotated[
        float | None, typer.Option(help="Generator's Adam rate (default: the paper's).")
    ] = None,
    drop_random: Annotated[
        float, typer.Option(help="Train on windows losing this fraction of frames at random.")
    ] = 0.0,
    drop_burst: Annotated[
        float, typer.Option(help="... and this fraction in bursts of 3-8 frames.")
    ] = 0.0,
    batch_size: Annotated[int, typer.Option(help="Windows per batch (per process).")] = 16,
    window_stride: Annotated[int, typer.Option(help="Frames between training windows.")] = 1,
    adversarial: Annotated[
        bool, typer.Option(help="Energy-based adversarial loss (off: the paper's L2 only).")
    ] = True,
    residual: Annotated[
        bool,
        typer.Option(
            "--residual/--absolute",
            help="Predict the departure from the last past frame (falls back to persistence) "
            "or the frames themselves.",
        ),
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of weights and batch order.")] = 0,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints.")] = 100,
    threads: Annotated[int, typer.Option(help="CPU threads per process (0: torch's choice).")] = 0,
    normalisation: Annotated[
        str,
        typer.Option(
            help="Input scaling: 'fixed' (fitted on the training split, frozen into the model) "
            "or 'robust-online' (per-electrode median / MAD of the recent past, as served)."
        ),
    ] = "fixed",
    normalisation_window_s: Annotated[
        float, typer.Option(help="robust-online: seconds the median / MAD are taken over.")
    ] = 30.0,
    normalisation_update_s: Annotated[
        float, typer.Option(help="robust-online: seconds between refreshes.")
    ] = 1.0,
) -> None:
    """Train a model on the training split of the data (resumable; runs under torchrun).

    Every session is split by time (80/10/10 train/val/test); with the fixed normalisation it is
    fitted on the training split and stored with the checkpoint; with robust-online each window
    is scaled by the statistics the daemon would have had at its newest frame. With
    --drop-random/--drop-burst the model sees what the daemon would feed it when frames are
    lost: the frames received with their times for a family that takes irregular input, held
    frames for the others. For several processes:
    ``torchrun --nproc-per-node 2 --no-python corticast train ...``.
    """
    _require_train_extra()
    import torch

    from models.data import SessionWindows
    from models.drops import DropModel, DroppedWindows
    from models.registry import family
    from models.sources import recorded_spec
    from models.training import RunConfig
    from models.training import train as run_training

    if threads < 0:
        fail(f"--threads must be >= 0 (0: torch's choice), got {threads}")
    if threads:
        torch.set_num_threads(threads)
    values = _config_values(settings or [])
    if hidden is not None:
        values["hidden"] = _widths(hidden)
    if kernel_size is not None:
        values["kernel_size"] = kernel_size
    if residual:  # absolute runs keep the config they had, so older run directories resume
        values["residual"] = True
    drops = _or_exit(lambda: DropModel(random_rate=drop_random, burst_rate=drop_burst))
    scaling = _or_exit(
        lambda: _normalisation(normalisation, normalisation_window_s, normalisation_update_s)
    )
    dropping = drop_random > 0 or drop_burst > 0
    config = _or_exit(
        lambda: RunConfig(
            family=model,
            model=values,
            data=tuple(map(recorded_spec, data)),
            drops={"random_rate": drop_random, "burst_rate": drop_burst} if dropping else {},
            normalisation={"kind": "fixed"} if scaling is None else scaling.to_dict(),
            window_stride=window_stride,
            steps=steps,
            batch_size=batch_size,
            seed=seed,
            adversarial=adversarial,
            learning_rate=learning_rate,
            checkpoint_every=checkpoint_every,
        )
    )
    sessions = _load_sessions(data)
    windows = _or_exit(
        lambda: SessionWindows(
            sessions,
            "train",
            scaling,
            stride=window_stride,
            extra_past=DROP_REACH if dropping else 0,
        )
    )
    config = _on_the_datas_array(config, sessions[0].grid)
    train_set = windows
    if dropping:
        fill = "irregular" if family(model).irregular else "hold"
        train_set = DroppedWindows(windows, drops, fill=fill, seed=seed)
    typer.echo(
        f"train: {model} on {len(train_set)} windows from {len(sessions)} session(s); "
        f"{train_set.provenance['coverage']:.4%} of training values inside the tanh range",
        err=True,
    )
    result = _or_exit(lambda: run_training(config, train_set, run))
    if not result.last_logs:  # resumed at its last step: nothing was trained now
        typer.echo(f"{run} has trained its {result.steps_done} steps already: nothing to do")
        return
    losses = ", ".join(f"{k} {v:.4g}" for k, v in sorted(result.last_logs.items()))
    typer.echo(f"trained {result.steps_done} steps into {run}: {losses}")


def evaluate(
    models: Annotated[
        list[Path], typer.Argument(help="Run directories (checkpoints) or exported .onnx files.")
    ],
    data: DataOption,
    out: Annotated[Path, typer.Option(help="Directory for evaluation.json and psnr.png.")],
    split: Annotated[
        str, typer.Option(help="Which split of each session: test, val or train.")
    ] = "test",
    window_stride: Annotated[int, typer.Option(help="Frames between scored windows.")] = 4,
    names: Annotated[
        str | None, typer.Option(help="Comma-separated names for the models (default: paths).")
    ] = None,
    ar_lags: Annotated[
        int, typer.Option(help="Own past frames of the fitted AR baseline (0: leave it out).")
    ] = DEFAULT_LAGS,
) -> None:
    """Score models against persistence, linear extrapolation and a fitted AR model, per frame.

    All models are scored on the same windows, in the normalisation of the first model (each
    model sees its own); the AR baseline (``ar``) is fitted on each session's training split
    in that normalisation. Writes ``evaluation.json``, ``psnr.png`` and prints the PSNR table.
    An exported .onnx file is scored with ONNX Runtime and needs no PyTorch; a run directory
    does.
    """
    if any(path.is_dir() for path in models):
        _require_train_extra()
    from models.evaluation import evaluate as score
    from models.evaluation import fit_autoregressive
    from models.loading import load_predictor
    from models.stream_fit import misfits
    from models.windows import SplitWindows

    labels = [str(path) for path in models] if names is None else names.split(",")
    if len(labels) != len(models):
        fail(f"--names gives {len(labels)} names for {len(models)} models")
    twice = sorted(repeated(labels))
    if twice:  # scored by name: one of the two would vanish from the table
        fail(f"{', '.join(map(repr, twice))} names two models: give each its own with --names")
    loaded = [_or_exit(lambda path=path: load_predictor(path)) for path in models]
    reference = loaded[0].normalisation
    for label, predictor in zip(labels, loaded, strict=True):
        predictor.use_frame_normalisation(reference)
        typer.echo(f"evaluate: {label}: {predictor.description}", err=True)
    sessions = _load_sessions(data)
    for label, predictor in zip(labels, loaded, strict=True):
        problems = misfits(sessions, *predictor.stream) if predictor.stream else []
        if problems:  # scored, it would be on a stream the daemon never serves it
            fail(f"the data do not fit the model {label}: " + "; ".join(problems))
    windows = _or_exit(lambda: SplitWindows(sessions, split, reference, stride=window_stride))
    # One in memory at a time, each window scored on the channels the daemon would score.
    batches = windows.iter_batches(EVALUATION_BATCH, live=True)
    ar = None
    if ar_lags:
        norm = windows.normalisation
        ar = _or_exit(lambda: fit_autoregressive(sessions, norm, lags=ar_lags))
        typer.echo(
            f"evaluate: ar: {ar.lags} lags, coefficients {ar.coefficients.round(3)}", err=True
        )
    predictors = dict(zip(labels, (p.predict for p in loaded), strict=True))
    bar = progress_bar(math.ceil(len(windows) / EVALUATION_BATCH), desc="evaluate", unit="batch")
    first = labels[0]
    predictors[first] = _counting(predictors[first], bar)  # called once per batch
    try:
        report = _or_exit(lambda: score(predictors, batches, ar=ar))
    finally:
        bar.close()
    out.mkdir(parents=True, exist_ok=True)
    report.write_json(out / "evaluation.json")
    report.plot_psnr(out / "psnr.png")
    typer.echo(report.to_markdown())
    for label in labels:
        verdict = "beats" if report.beats_baselines(label) else "does NOT beat"
        typer.echo(f"{label} {verdict} every baseline at every horizon")
    typer.echo(f"wrote {out / 'evaluation.json'} and {out / 'psnr.png'}")


def export(
    run: Annotated[Path, typer.Argument(help="Run directory holding checkpoint.pt.")],
    out: Annotated[Path, typer.Argument(help="The window graph: 16 past -> 16 future frames.")],
    step_out: Annotated[
        Path | None,
        typer.Option("--step", help="Also write the single-step graph (state in/out) here."),
    ] = None,
    raster: Annotated[
        bool,
        typer.Option(
            "--raster",
            help="Also write the raster sampler's graphs beside OUT (S-HR-VQVAE's faithful "
            'mode, served with [model] mode = "raster").',
        ),
    ] = False,
    weights_copy: Annotated[
        Path | None,
        typer.Option(
            "--weights-copy",
            help="Also copy the run's weights (no optimiser or discriminator state) into this "
            "run directory: what `corticast adapt --from` and the torch backends read.",
        ),
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--held-out-check/--no-held-out-check",
            help="Score the exported graph against persistence on the validation split of the "
            "run's data (about 512 windows) and record it in the files (the int8 copies: "
            "their own graph's score, on the same windows), so the daemon warns about a model "
            "below persistence at some frame when it is configured.",
        ),
    ] = True,
    int8: Annotated[
        bool,
        typer.Option(
            "--int8",
            help="Also write int8 copies beside OUT (OUT.int8.onnx, and OUT.int8.step.onnx "
            "with --step): ONNX Runtime static quantization, refused with nothing written if "
            "they lose more than 0.1 dB pooled PSNR, fall below persistence at a horizon "
            "where fp32 does not, or lose more than 0.5 dB at one where fp32 is below it "
            "(held-out generated windows).",
        ),
    ] = False,
) -> None:
    """Export a trained model to ONNX with self-describing metadata and a parity check.

    The files are written beside where they go and moved there only once their held-out
    check is recorded in them: stopped before, the files that were there stay as they were.
    """
    _require_train_extra()
    from models.export import export_from_checkpoint

    if step_out is not None:
        _or_exit(lambda: _check_step_has_its_own_file(out, step_out, raster=raster, int8=int8))
    if int8:  # a model int8 cannot calibrate is refused before any file is written
        from models.export import metadata_from_checkpoint
        from models.quantize import check_quantizable
        from models.training import load_checkpoint

        _or_exit(lambda: check_quantizable(metadata_from_checkpoint(load_checkpoint(run))))
    _quiet_exporter()
    with _published_once_checked(out, step_out) as staged:
        window, step = staged.window, staged.step
        said = staged.as_published  # the lines name the files where they will be

        def stage(line: str) -> None:
            _stage(said(line))

        reports = _or_exit(
            lambda: export_from_checkpoint(run, window, step, raster=raster, progress=stage)
        )
        for report in reports:
            typer.echo(said(report))
        refused = None
        if int8:  # before the check, which scores the int8 copies through their own graph too
            from models.quantize import QuantizationRefusedError, export_int8

            def quantize() -> tuple[list[str], QuantizationRefusedError | None]:
                try:
                    return export_int8(window, step, progress=stage), None
                except QuantizationRefusedError as err:  # the fp32 files are written: finish
                    return [], err

            lines, refused = _or_exit(quantize)
            for line in lines:
                typer.echo(said(line))
        if check:
            copies = int8 and refused is None
            for line in _record_held_out_checks(run, window, step, raster, int8=copies):
                typer.echo(said(line))
    if weights_copy is not None:
        from models.training import copy_weights

        copied = _or_exit(lambda: copy_weights(run, weights_copy))
        typer.echo(f"wrote {copied} (weights, {copied.stat().st_size / 1e6:.1f} MB)")
    if refused is not None:
        fail(str(refused), refused.exit_code)


def _check_step_has_its_own_file(out: Path, step_out: Path, *, raster: bool, int8: bool) -> None:
    """Refuse a ``--step`` that names a file the same export writes as another graph: the
    step graph would overwrite it (or it the step graph) and be served as it.

    Raises
    ------
    ValueError
        Naming the file and what the export writes there.
    """
    from models.metadata import RASTER_STAGES, int8_path, int8_step_path, raster_stage_path

    others = {out: "OUT, the window graph"}
    if int8:
        others[int8_path(out)] = "the int8 copy of the window graph"
        others[int8_step_path(out)] = "the int8 copy of the step graph"
    if raster:
        others.update({raster_stage_path(out, s): f"the raster {s} stage" for s in RASTER_STAGES})
    step = Path(os.path.realpath(step_out))
    for path, what in others.items():
        if Path(os.path.realpath(path)) == step:
            raise ValueError(
                f"--step {str(step_out)!r} is where this export writes {what}: give the step "
                f"graph a file of its own (e.g. {out.with_suffix('')}.step{out.suffix})"
            )


def _record_held_out_checks(
    run: Path, out: Path, step_out: Path | None, raster: bool, *, int8: bool
) -> list[str]:
    """Check the exported window graph on the run's validation split, record the result in
    every file written, and say what it found. With ``int8`` (the copies were written), the
    int8 window graph is checked on the same windows through its own graph, and the int8 files
    record that: the daemon may serve them, and they may fall below persistence where fp32
    does not."""
    from models.held_out_check import held_out_check
    from models.metadata import (
        CHECK_DATA,
        RASTER_STAGES,
        int8_path,
        int8_step_path,
        raster_stage_path,
        read_model_metadata,
    )

    specs, where = _held_out_data(read_model_metadata(out).provenance)
    if not specs:
        return ["held-out check skipped: the run records no data it can reload"]
    skipped = _check_skipped(out)
    if skipped is not None:
        return [skipped]
    sessions = _load_sessions(specs)
    stages = [raster_stage_path(out, stage) for stage in RASTER_STAGES] if raster else []
    checked = [("", [out, *([step_out] if step_out else []), *stages])]
    if int8:
        checked.append(
            ("int8 copies: ", [int8_path(out), *([int8_step_path(out)] if step_out else [])])
        )
    lines = []
    for label, paths in checked:  # each window graph (paths[0]) scored through itself
        window = paths[0]
        _stage(
            f"checking {window} against persistence on {CHECK_DATA[where['data']]} "
            f"({', '.join(specs)})"
        )
        result = _or_exit(lambda window=window: held_out_check(window, sessions, **where))
        lines.append(label + _stamp_verdict(paths, result))
    return lines


def _check_skipped(window: Path) -> str | None:
    """Why the held-out check cannot score the window graph ``window`` here, or None where it
    can: a robust-online model scales each window by its own recent past, which windows in one
    fixed normalisation do not carry (``models.loading``). Said, not an error: its files are
    written and serve as they are, without a recorded check."""
    from models.metadata import read_model_metadata
    from service.core.robust_scale import FIXED, normalisation_kind

    kind = normalisation_kind(read_model_metadata(window).normalisation)
    if kind == FIXED:
        return None
    return (
        f"held-out check skipped: a {kind} model scales each window by its own recent past, "
        f"which a check in one fixed normalisation cannot; score it with "
        f"`corticast replay --fast {window}`"
    )


def _held_out_data(provenance: dict) -> tuple[list[str], dict]:
    """The data specs a model's held-out check reloads, and where in them it scores: the
    validation split of a trained run's data; for an adapted run the scored tail of the rig's
    sessions it was adapted on, as ``corticast adapt`` checks it (not the data the run it was
    adapted from was trained on, which would be named as its own)."""
    from models.adaptation import ADAPT_FRACTIONS
    from models.metadata import ADAPTED_TAIL, RUN_VALIDATION

    adapted = provenance.get("training_data", {}).get("adapted")
    if adapted is None:
        return list(provenance.get("run", {}).get("data") or []), {"data": RUN_VALIDATION}
    tail = {"split": "test", "fractions": ADAPT_FRACTIONS, "data": ADAPTED_TAIL}
    return list(adapted.get("specs") or []), tail


def _stamp_verdict(paths: list[Path], check: dict) -> str:
    """Record ``check`` in every file of ``paths`` and say what it found, in one line."""
    from models.held_out_check import stamp_check
    from models.metadata import check_shortfall, describe_check_data, describe_shortfall

    stamp_check(paths, check)
    shortfall = check_shortfall(check) or {}
    verdict = (
        describe_shortfall(shortfall)
        if shortfall
        else "at or above persistence at every predicted frame"
    )
    return f"held-out check on {describe_check_data(check)} ({check['windows']} windows): {verdict}"


SHIPPED_RUN = Path(__file__).parent / "weights" / "default.run"
"""The shipped default's training checkpoint, what ``corticast adapt --from default`` tunes."""


def adapt(
    data: Annotated[
        list[str],
        typer.Argument(
            help="The rig's own recordings: session files (.xdf/.xdfz/.nwb) or "
            "synthetic:SEEDS@SECONDS. An XDF file made beside another tool that stimulated "
            "names its marker streams: FILE::markers=NAME[@SOURCE_ID][,...][::blank_ms=MS]; "
            "FILE::stream=NAME and FILE::type=TYPE pick its electrode stream. " + GRID_OPTION_HELP
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(help="New run directory: the adapted checkpoint, its ONNX files, a report."),
    ],
    source: Annotated[
        str,
        typer.Option(
            "--from", help="Training run directory to start from; 'default': the shipped model."
        ),
    ] = "default",
    minutes: Annotated[float, typer.Option(help="Fine-tuning budget, wall-clock minutes.")] = 10.0,
    max_steps: Annotated[int, typer.Option(help="Most updates, whatever the budget.")] = 5000,
    learning_rate: Annotated[float, typer.Option(help="Adam's rate.")] = 1e-4,
    seed: Annotated[int, typer.Option(help="Seed of the batch order.")] = 0,
    step_graph: Annotated[
        bool,
        typer.Option(
            "--step/--no-step",
            help="Also export the step graph that stream mode serves (families that stream).",
        ),
    ] = True,
) -> None:
    """Fine-tune a model on a rig's own recordings, export it, and score it before and after.

    Each session is split by time: the first 60 % fine-tunes, the next 20 % stops it when the
    held-out error no longer falls (the best weights are kept), the last 20 % scores the model
    before and after, per predicted frame, beside persistence, linear extrapolation and a linear
    AR model fitted on the same 60 %. Writes OUT/adapted.onnx (and OUT/adapted.step.onnx for a
    family that streams), records in them the exported graph's check against persistence on
    that last 20 % (what the daemon warns from; skipped, said so, for a robust-online model)
    before it moves them into OUT, and prints how to swap it into a running daemon.
    """
    _require_train_extra()
    from models.adaptation import AdaptSettings, check_new_run_dir
    from models.adaptation import adapt as run_adaptation
    from models.sources import recorded_spec

    run = _source_run(source)
    _refuse_unexported_run(out)
    _or_exit(lambda: check_new_run_dir(out))  # before the data: loading it may take minutes
    settings = _or_exit(
        lambda: AdaptSettings(
            minutes=minutes, max_steps=max_steps, learning_rate=learning_rate, seed=seed
        )
    )
    sessions = _load_sessions(data)
    specs = [recorded_spec(spec) for spec in data]
    result = _or_exit(lambda: run_adaptation(run, sessions, out, settings, specs=specs))
    for line in result.left_out:
        typer.echo(line, err=True)
    typer.echo(
        f"adapted {run} for {result.steps} steps ({result.stopped_because}); kept step "
        f"{result.best_step}: held-out MSE {result.validation_mse[0]:.4g} -> "
        f"{result.validation_mse[1]:.4g}"
    )
    typer.echo(result.report.to_markdown())
    family_streams = bool(getattr(_generator(out), "streaming", False))
    step_out = out / ADAPTED_STEP if step_graph and family_streams else None
    # Stopped before the check is recorded in them: no adapted.onnx for a swap to name.
    with _published_once_checked(out / ADAPTED_WINDOW, step_out) as staged:
        _export_checked_adaptation(out, staged, sessions)
    typer.echo(_swap_instructions(out / ADAPTED_WINDOW, step_out, family_streams))


ADAPTED_WINDOW = "adapted.onnx"
ADAPTED_STEP = "adapted.step.onnx"


@contextmanager
def _published_once_checked(out: Path, step_out: Path | None) -> Iterator[StagedExport]:
    """Where to export ``out`` (and ``step_out``): the files are moved there, and said so,
    when the block ends without an error, their held-out check recorded in them; else the
    files that were there stay as they were (``models._staged_export``)."""
    from models._staged_export import StagedExport

    with _or_exit(lambda: StagedExport(out, step_out)) as staged:
        yield staged
        moved = _or_exit(staged.publish)
    typer.echo(f"moved into place: {', '.join(str(path) for path in moved)}")


def _export_checked_adaptation(out: Path, staged: StagedExport, sessions: list[Session]) -> None:
    """Export the adapted run ``out`` where ``staged`` says, and record in the files its
    check against persistence on the scored tail of ``sessions``."""
    from models.adaptation import ADAPT_FRACTIONS
    from models.export import export_from_checkpoint
    from models.held_out_check import held_out_check
    from models.metadata import ADAPTED_TAIL

    window, step = staged.window, staged.step
    said = staged.as_published  # the lines name the files where they will be
    _quiet_exporter()
    exported = _or_exit(
        lambda: export_from_checkpoint(out, window, step, progress=lambda s: _stage(said(s)))
    )
    for line in exported:
        typer.echo(said(line))
    skipped = _check_skipped(window)
    if skipped is not None:
        typer.echo(said(skipped))
        return
    tail = f"{ADAPT_FRACTIONS[-1]:.0%}"
    _stage(said(f"checking {window} against persistence on the scored last {tail} of each session"))
    check = _or_exit(
        lambda: held_out_check(
            window, sessions, split="test", fractions=ADAPT_FRACTIONS, data=ADAPTED_TAIL
        )
    )
    typer.echo(_stamp_verdict([window, *([step] if step else [])], check))


def _refuse_unexported_run(out: Path) -> None:
    """Refuse, saying how to finish it, a run directory an earlier ``adapt`` tuned but stopped
    in before its files were exported and checked (killed, or its check failed)."""
    from models.training import CHECKPOINT

    if not (out / CHECKPOINT).is_file() or (out / ADAPTED_WINDOW).exists():
        return
    streams = getattr(_or_exit(lambda: _generator(out)), "streaming", False)
    step = f" --step {out / ADAPTED_STEP}" if streams else ""
    fail(
        f"{str(out)!r} holds a run an earlier `corticast adapt` tuned and stopped in before its "
        f"files were exported and checked; `corticast export {out} {out / ADAPTED_WINDOW}"
        f"{step}` writes them with their check, or choose a new directory to adapt again"
    )


def _swap_instructions(window: Path, step_out: Path | None, family_streams: bool) -> str:
    """How to swap the adapted files into a running daemon. Without a step graph a daemon in
    stream mode (the default) refuses the swap, so the text says what serves it instead."""
    files = f"{window.name} and {step_out.name}" if step_out else window.name
    text = (
        f"To serve it: copy {files} into the daemon's [model] directory, then "
        f'PUT /control/model with {{"path": "{window.name}"}} (bearer token), e.g. '
        'curl -X PUT -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" '
        f'-d \'{{"path": "{window.name}"}}\' '
        f"http://{DEFAULT_API_HOST}:{DEFAULT_API_PORT}/control/model"
    )
    if step_out is not None:
        return text
    why = "--step exports it" if family_streams else "its family does not stream"
    return (
        f"{text}\n{window.name} has no step graph ({why}): a daemon in stream mode (the "
        'default) refuses it; a daemon started with [model] mode = "window" serves it'
    )


def _source_run(source: str) -> Path:
    """The run directory ``--from`` names; the shipped default's when it says ``default``."""
    if source != "default":
        return Path(source)
    if not (SHIPPED_RUN / "checkpoint.pt").is_file():
        fail(
            f"no training checkpoint ships beside the default model ({SHIPPED_RUN} is missing); "
            "pass --from RUN_DIR, a `corticast train` run directory",
            EXIT_UNUSABLE,
        )
    return SHIPPED_RUN


def _generator(run: Path):
    from models.training import generator_from_checkpoint, load_checkpoint

    return generator_from_checkpoint(load_checkpoint(run))


def list_models() -> None:
    """List the model families that can be trained: name, design paper, input."""
    from models.catalogue import CATALOGUE

    for name, entry in sorted(CATALOGUE.items()):
        given = "irregular (frames received + times)" if entry.irregular else "regular window"
        typer.echo(f"{name:<24} paper {entry.paper}  {given}")


def _quiet_exporter() -> None:
    """The ONNX exporter's libraries log a line per graph node at INFO: keep warnings only."""
    import logging

    for chatty in ("onnxscript", "onnx_ir", "torch.onnx"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


def _stage(text: str) -> None:
    """A slow stage about to start, on stderr (the results go to stdout)."""
    typer.echo(f"{text} ...", err=True)


def _counting(predict, bar):
    """``predict`` that advances ``bar`` by one each call."""

    def counted(*args):
        bar.update(1)
        return predict(*args)

    return counted


def _require_train_extra() -> None:
    """One line instead of a ModuleNotFoundError where PyTorch is not installed."""
    try:
        import torch  # noqa: F401
    except ImportError:
        fail(
            "this command needs PyTorch, which comes with the train extra: "
            "pip install 'corticast[train]' (`make test` installs it; `make demo` does not)",
            EXIT_UNUSABLE,
        )


def _load_sessions(specs: list[str]) -> list[Session]:
    """The sessions to train on or score (exits naming what could not be read), saying on
    stderr what of each recording was left out as stimulation artefact."""
    from models.sources import artefact_left_out, load_sessions

    sessions = _or_exit(lambda: load_sessions(specs))
    for line in artefact_left_out(sessions):
        typer.echo(line, err=True)
    return sessions


def _on_the_datas_array(config: RunConfig, grid: ElectrodeGrid) -> RunConfig:
    """``config`` with the family's ``grid_shape`` the data's (every session's, as the windows
    checked): it defaults to the rig's 18x20, and a model of it failed on its first batch of
    another array's windows ("'past' must have shape (batch, 16, 1, 18, 20), got ..."). A run
    on the rig's array records none, as runs did before, so that they resume (their configs are
    compared); one set with ``--set grid_shape`` must be the data's."""
    asked = config.model.get("grid_shape")
    if asked is None:
        if grid.shape == DEFAULT_GRID.shape:
            return config
        return dataclasses.replace(config, model={**config.model, "grid_shape": list(grid.shape)})
    if asked != list(grid.shape):
        fail(
            f"--set grid_shape={json.dumps(asked)} is not the data's array, {grid.describe()}: "
            f"leave it out, a model takes the shape of the array it learns"
        )
    return config


def _config_values(settings: list[str]) -> dict:
    """``KEY=JSON`` pairs as a dict (a bare word that is not JSON is taken as a string)."""
    values = {}
    for item in settings:
        key, sep, text = item.partition("=")
        if not sep or not key:
            fail(f"--set must be KEY=VALUE, got {item!r}")
        try:
            values[key] = json.loads(text)
        except json.JSONDecodeError:
            values[key] = text
    return values


def _widths(text: str) -> tuple[int, int]:
    try:
        lower, upper = (int(part) for part in text.split(","))
    except ValueError:
        fail(f"--hidden must be two widths 'lower,upper', got {text!r}")
    return lower, upper


def _normalisation(kind: str, window_s: float, update_s: float):
    """None for the fixed normalisation (fitted by the training set), else the online schedule.

    The first statistics need ``update_s`` of frames, as the daemon's first refresh does.
    """
    from service.core.robust_scale import NORMALISATION_KINDS, ROBUST_ONLINE, RobustScale

    if kind not in NORMALISATION_KINDS:
        raise ValueError(f"--normalisation must be one of {NORMALISATION_KINDS}, got {kind!r}")
    if kind != ROBUST_ONLINE:
        return None
    return RobustScale(window_s=window_s, update_s=update_s, min_s=min(update_s, window_s))


def _or_exit(make):
    """The CLI convention (:func:`service.core.user_errors.or_exit`), with ``TypeError`` too: a
    ``--set`` value of the wrong type reaches a config's constructor."""
    return or_exit(make, TypeError)
