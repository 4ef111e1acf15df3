"""``corticast replay``: the command line of :mod:`bench.replay.replay`.

Registered by ``service.cli.app``; this module imports nothing heavy until the command runs, so
``corticast --help`` stays fast and the daemon's commands never load matplotlib.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any

import typer

from service.core.cli_options import ConfigOption
from service.core.user_errors import fail, or_exit


def replay(
    session: Annotated[
        str,
        typer.Argument(
            help="Session file (.xdf, .xdfz, .nwb), synthetic:SEED@SECONDS or "
            "synthetic-mix:SEED@SECONDS[/only=FAMILY]."
        ),
    ],
    report: Annotated[
        Path, typer.Option("--report", "-r", help="Directory for report.html, .json and PNGs.")
    ],
    fast: Annotated[
        bool,
        typer.Option(
            "--fast/--realtime",
            help="--fast: the daemon's stages in-process, no waiting (default). --realtime: "
            "the session over LSL at its recorded pace into a spawned `corticast serve`.",
        ),
    ] = True,
    model: Annotated[
        list[Path] | None,
        typer.Option(
            "--model",
            "-m",
            help="Exported model (.onnx) to compare; repeat for several. Default: the "
            "configured model (\\[model] path).",
        ),
    ] = None,
    config: ConfigOption = None,
    stride: Annotated[
        int | None,
        typer.Option(
            help="Frames between predictions. Default: 32 in --fast (about 20x real time "
            "measured on 2 CPU cores, sessions of 2 min and more); \\[scheduler] stride in "
            "--realtime.",
        ),
    ] = None,
    sweep: Annotated[
        list[str] | None,
        typer.Option(
            help="Policy threshold to sweep, key=v1,v2,... (e.g. min_pgd=0.4,0.5,0.6); repeat "
            "to combine. --fast only.",
        ),
    ] = None,
    stream_name: Annotated[
        str | None,
        typer.Option(
            help="XDF stream name (of type \\[stream] type) or NWB series to replay; or "
            "SESSION::stream=NAME (and ::type=TYPE), as train and evaluate take it."
        ),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    batch: Annotated[
        bool,
        typer.Option(
            help="--fast: compute the predictions ahead in batches on a second thread (ONNX "
            "Runtime CPU; the same predictions as --no-batch, which runs one window per call).",
        ),
    ] = True,
    figures: Annotated[
        bool,
        typer.Option(
            help="Draw the report's figures (PNGs). --no-figures: report.html and report.json "
            "with the same numbers and no figure, written seconds sooner (scripted runs)."
        ),
    ] = True,
) -> None:
    """Replay a session through the closed loop and write an evaluation report.

    Every model runs on exactly the same frames; the report has PSNR/SSIM per horizon beside
    the persistence, linear and fitted AR baselines, prediction strips, wave speed and direction
    against the ground truth, every stimulation request on a timeline with the seizures, latency
    and skipped windows. The bridge is a dry run: nothing is ever sent.
    """
    from models.sources import split_file

    # The file the spec names, '::' in a folder's name read as the folder's (split_file).
    absent = not session.startswith("synthetic") and not Path(split_file(session)[0]).is_file()
    if absent:
        # Said before the replay machinery (matplotlib, ONNX Runtime) takes seconds to import;
        # a file that is there with options after it is refused there, saying where they go.
        missing = "is not a file" if Path(session).exists() else "does not exist"
        fail(f"session file {session!r} {missing}")
    from tqdm.contrib.logging import logging_redirect_tqdm

    from bench.replay.replay import run_replay
    from service.config import load_settings

    settings = or_exit(lambda: load_settings(config))
    # Log lines through tqdm while the bar is drawn, so a warning does not break the bar.
    with logging_redirect_tqdm() if progress else contextlib.nullcontext():
        result = or_exit(
            lambda: run_replay(
                session,
                settings,
                report,
                models=model or (),
                mode="fast" if fast else "realtime",
                config=config,
                stride=stride,
                sweep=sweep or (),
                stream_name=stream_name,
                progress=_progress_bar if progress else None,
                batch=batch,
                figures=figures,
            ),
            RuntimeError,
        )
    run = result.report["run"]
    typer.echo(
        f"replayed {session} ({result.report['session']['duration_s']:.1f} s) through "
        f"{', '.join(run['models'])} in {run['mode']} mode, stride {run['stride']}: "
        f"loop {run['x_realtime']:.1f}x real time"
        + (f" ({run['x_realtime_cpu']:.1f}x by CPU time)" if run["mode"] == "fast" else "")
        + f", {run['x_realtime_total']:.1f}x with reading and report"
    )
    typer.echo(f"report: {result.html}")


def _progress_bar(total: int, models: int) -> Any:
    """A tqdm bar (on stderr) over all slots of all models."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="frame",
        unit_scale=True,
        desc=f"replay ({models} model{'s' if models > 1 else ''})",
        dynamic_ncols=True,
    )
