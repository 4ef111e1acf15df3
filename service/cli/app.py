"""The `corticast` command line.

Each command reads the same configuration (``--config FILE`` plus ``CORTICAST_*`` variables);
command-line options override it. Problems a user can fix (bad config, no stream) print one
clear message and exit non-zero, without a traceback.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import typer

from bench.replay import cli as replay_commands
from models import cli as model_commands
from service.cli import daemon_commands, doctor, listen
from service.config import Settings, load_settings
from service.core.checks import preview_items
from service.core.cli_options import GRID_OPTION_HELP, ConfigOption
from service.core.errors import EXIT_UNUSABLE
from service.core.progress import progress_bar
from service.core.user_errors import fail, or_exit, warnings_in_one_line

if TYPE_CHECKING:
    from service.ingest.ingestor import Ingestor


app = typer.Typer(
    help="corticast: real-time travelling-wave prediction beside a µECoG rig.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
)


_log = logging.getLogger("corticast")


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version as dist_version

        typer.echo(dist_version("corticast"))
        raise typer.Exit()


_LOOP_COMMANDS = ("serve", "demo")
"""The commands that run the closed loop: their log is written by a thread of its own."""


@app.callback()
def _main(
    ctx: typer.Context,
    log_level: Annotated[
        str, typer.Option(help="Python log level: DEBUG, INFO, WARNING, ERROR or CRITICAL.")
    ] = "INFO",
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    from service.core import log_queue
    from service.core.log_format import configure_logging
    from service.ingest.lsl import quiet_liblsl

    levels = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
    if log_level.upper() not in levels:
        fail(f"--log-level must be one of {', '.join(levels)}, got {log_level!r}", EXIT_UNUSABLE)
    queued = ctx.invoked_subcommand in _LOOP_COMMANDS
    configure_logging(log_level.upper(), queued=queued)
    if queued:  # written before the command returns (a test runner reads its output then);
        ctx.call_on_close(log_queue.flush)  # threads winding down log on, until the end's stop
    warnings_in_one_line()

    quiet_liblsl()


@app.command()
def version() -> None:
    """Print the installed corticast version."""
    from importlib.metadata import version as dist_version

    typer.echo(dist_version("corticast"))


@app.command()
def rig(
    config: ConfigOption = None,
    source: Annotated[
        str | None,
        typer.Option(
            help="'synthetic', 'pattern', or a session file (.xdf/.nwb), its electrode stream "
            "picked as FILE::stream=NAME (XDF stream or NWB series) and FILE::type=TYPE (XDF) "
            "(default: [rig] source, 'synthetic'). " + GRID_OPTION_HELP
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of the synthetic session (default: [rig] seed, 0).")
    ] = None,
    duration: Annotated[
        float | None,
        typer.Option(help="Length of the synthetic session, s (default: [rig] duration_s, 60)."),
    ] = None,
    chunk_size: Annotated[
        int | None, typer.Option(help="Samples per pushed chunk (default: [rig] chunk_size, 4).")
    ] = None,
    speed: Annotated[
        float | None,
        typer.Option(
            help="Multiple of real time. Feed a daemon at 1 only: a daemon reading a rig at "
            "any other speed is never ready (faster, frames are stamped ahead of the LSL clock; "
            "slower, they go stale); other speeds are for measuring ingestion (default: [rig] "
            "speed, 1)."
        ),
    ] = None,
    loop: Annotated[
        bool | None,
        typer.Option(help="Replay the session forever (default: [rig] loop, which is on)."),
    ] = None,
    drop_probability: Annotated[float, typer.Option(help="Chance of dropping a sample.")] = 0.0,
    stall_at: Annotated[
        float | None, typer.Option(help="Session time (s) at which to stall once.")
    ] = None,
    stall_for: Annotated[float, typer.Option(help="Stall length, wall seconds.")] = 0.0,
    scramble_channels: Annotated[
        bool, typer.Option(help="Send channels out of grid order (positions in metadata).")
    ] = False,
    wait_for_consumer: Annotated[
        bool, typer.Option(help="Hold the first sample until an inlet connects.")
    ] = False,
    seconds: Annotated[
        float | None, typer.Option(help="Stop after this many wall seconds.")
    ] = None,
    source_id: Annotated[
        str | None, typer.Option(help="LSL source_id (default: [stream] source_id).")
    ] = None,
) -> None:
    """Run the simulated µECoG rig: an LSL outlet (type ECoG, 360 channels, 277.78 Hz)."""
    from bench.rig.frame_source import source_from_settings
    from bench.rig.rig import SimulatedRig

    settings = _settings(config)
    overrides = {
        "source": source,
        "seed": seed,
        "duration_s": duration,
        "chunk_size": chunk_size,
        "speed": speed,
        "loop": loop,
    }
    rig_settings = settings.rig.model_validate(
        settings.rig.model_dump() | {k: v for k, v in overrides.items() if v is not None}
    )
    ingest = settings.ingest  # the rate the daemon it feeds would judge it by
    frames = or_exit(
        lambda: source_from_settings(
            rig_settings, rate_tolerance=ingest.rate_tolerance, rate_window_s=ingest.rate_window_s
        )
    )
    simulated = SimulatedRig(
        frames,
        name=settings.stream.name,
        source_id=source_id or settings.stream.source_id,
        chunk_size=rig_settings.chunk_size,
        speed=rig_settings.speed,
        drop_probability=drop_probability,
        stall_at_s=stall_at,
        stall_s=stall_for,
        scramble_channels=scramble_channels,
        wait_for_consumer=wait_for_consumer,
        seed=rig_settings.seed,
    )
    with simulated:
        typer.echo(
            f"rig: streaming '{simulated.name}' (source_id {simulated.source_id!r}) "
            f"from {rig_settings.source} at {rig_settings.speed:g}x; Ctrl-C stops",
            err=True,
        )
        if rig_settings.speed != 1.0:
            typer.echo(_off_real_time(rig_settings.speed), err=True)
        with _until_interrupted():
            simulated.wait_finished(seconds)
    typer.echo(
        f"rig: sent {simulated.samples_sent} samples, dropped {len(simulated.dropped)}", err=True
    )


def _off_real_time(speed: float) -> str:
    """Why a rig at ``speed`` (not 1) feeds no daemon: a daemon blames the rig's clock or
    stale data, and only the rig knows the cause is its speed."""
    what = (
        "frames are stamped ahead of the LSL clock"
        if speed > 1.0
        else "frames arrive ever later than stamped (stale)"
    )
    return (
        f"rig: warning: at {speed:g}x {what}, so a daemon reading this stream is never ready; "
        "speeds other than 1 are for measuring ingestion (`corticast ingest`, as "
        "`make bench-ingest` does)"
    )


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Output file: .xdf, .xdfz or .nwb.")],
    seconds: Annotated[float, typer.Option(help="Session length, s.")] = 60.0,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same file.")] = 0,
    artefacts: Annotated[
        str,
        typer.Option(help="'realistic' (line noise, bad channels, dropouts, jitter) or 'none'."),
    ] = "realistic",
) -> None:
    """Generate a synthetic µECoG session with ground truth and write it to a file.

    XDF keeps the ground truth as a second stream; NWB keeps only the electrode data.
    """
    from bench.data.session_io import write_nwb, write_xdf
    from bench.data.synth import Artefacts, SynthConfig, generate_session

    writers = {".xdf": write_xdf, ".xdfz": write_xdf, ".nwb": write_nwb}
    writer = writers.get(out.suffix.lower())
    if writer is None:
        fail(f"OUT must end in one of {', '.join(writers)}, got {out.name!r}", EXIT_UNUSABLE)
    if artefacts not in ("realistic", "none"):
        fail(f"--artefacts must be 'realistic' or 'none', got {artefacts!r}", EXIT_UNUSABLE)
    if not (seconds > 0 and math.isfinite(seconds)):
        fail(f"--seconds must be a finite number > 0, got {seconds!r}", EXIT_UNUSABLE)
    chosen = Artefacts.realistic() if artefacts == "realistic" else Artefacts()
    config = or_exit(lambda: SynthConfig(duration_s=seconds, seed=seed, artefacts=chosen))
    bar = partial(progress_bar, desc="synth", unit="frame")
    session = or_exit(lambda: generate_session(config, progress=bar))
    or_exit(lambda: writer(out, session))  # atomic: stopped half-way, no half a session at OUT
    kinds = sorted({episode["kind"] for episode in session.info["episodes"]})
    typer.echo(
        f"wrote {out}: {session.n_frames} frames ({session.duration_s:.1f} s), "
        f"{len(session.info['episodes'])} episodes ({', '.join(kinds)}), "
        f"{session.info['artefacts']['n_dropped']} samples dropped"
    )


@app.command()
def ingest(
    config: ConfigOption = None,
    seconds: Annotated[float, typer.Option(help="How long to read, s.")] = 5.0,
) -> None:
    """Connect to the stream, read it for a while and print what arrived."""
    from service.ingest.ingestor import Ingestor

    settings = _settings(config)
    ingestor = or_exit(Ingestor(settings.stream, settings.ingest).start)
    try:
        with _until_interrupted():
            _report_progress(ingestor, seconds)
    finally:
        ingestor.stop()
    _print_summary(ingestor)


@app.command()
def demo(
    config: ConfigOption = None,
    seconds: Annotated[float, typer.Option(help="How long to run, s (Ctrl-C stops early).")] = 60.0,
) -> None:
    """The whole loop without hardware: simulated rig, shipped model, firmware emulator.

    The rig plays a scripted session with seizure-like discharges; the daemon predicts,
    estimates the waves and, armed against the emulator, asks for stimulation through every
    interlock. Prints a status line each second and a summary at the end.
    """
    from bench.demo import run_demo

    settings = _settings(config)
    or_exit(lambda: run_demo(settings, seconds, echo=typer.echo))


def _settings(path: Path | None) -> Settings:
    return or_exit(lambda: load_settings(path))


@contextmanager
def _until_interrupted() -> Iterator[None]:
    """Let Ctrl-C end a long-running command cleanly (the context managers still close)."""
    try:
        yield
    except KeyboardInterrupt:
        typer.echo("", err=True)


def _report_progress(ingestor: Ingestor, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        time.sleep(min(1.0, remaining))
        ingestor.raise_if_failed()
        status = ingestor.status()
        state = "fresh" if status.fresh else ("connected, stale" if status.connected else "lost")
        typer.echo(
            f"{state:>16}  frames {status.frames_written:>8}  missing {status.missing_frames:>6}"
            f"  gaps {status.gaps:>4}  reconnects {status.reconnects:>3}"
            f"  age {status.newest_age_s * 1e3:7.1f} ms  rate {status.measured_rate_hz:7.2f} Hz",
            err=True,
        )


def _rate_line(measured_hz: float) -> str:
    return f"{measured_hz:.2f} Hz from the timestamps, within [ingest] rate_tolerance"


def _print_summary(ingestor: Ingestor) -> None:
    status = ingestor.status()
    costs = ingestor.chunk_costs()
    typer.echo(f"stream            {status.stream}")
    positions = "from metadata" if status.positions_from_metadata else "row-major fallback"
    typer.echo(f"positions         {positions}")
    typer.echo(f"samples           {status.samples}")
    typer.echo(f"chunks            {status.chunks}")
    typer.echo(f"frames in ring    {status.frames_written}")
    typer.echo(f"missing frames    {status.missing_frames} in {status.gaps} gaps")
    typer.echo(f"out of order      {status.out_of_order}")
    held = preview_items(status.held_electrodes) if status.held_electrodes else "none"
    typer.echo(f"held (NaN/inf)    {held}")
    typer.echo(f"reconnects        {status.reconnects}")
    typer.echo(f"measured rate     {status.rate_problem or _rate_line(status.measured_rate_hz)}")
    if status.stamp_lead_problem is not None:
        typer.echo(f"clock             {status.stamp_lead_problem}")
    if costs.size:
        p50, p99 = np.percentile(costs, [50, 99]) * 1e6
        typer.echo(f"chunk cost        p50 {p50:.1f} µs, p99 {p99:.1f} µs")
    if status.frames_written:
        window = ingestor.ring.latest(1)
        typer.echo(
            f"newest frame      t={window.timestamps[0]:.4f}  "
            f"mean {window.frames.mean():.2f} µV  range [{window.frames.min():.1f}, "
            f"{window.frames.max():.1f}] µV"
        )


app.command()(daemon_commands.serve)
app.command("firmware-emulator")(daemon_commands.firmware_emulator)
app.command()(listen.listen)
app.command()(doctor.doctor)
app.command()(replay_commands.replay)
# Model commands live with the models; they import torch only when run.
app.command("models")(model_commands.list_models)
app.command()(model_commands.train)
app.command()(model_commands.evaluate)
app.command()(model_commands.export)
app.command()(model_commands.adapt)


if __name__ == "__main__":
    app()
