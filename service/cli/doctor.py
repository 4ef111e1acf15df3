"""``corticast doctor``: what this host is, and how it can serve the configured model, without
starting the daemon.

It prints the host's facts (CPU, usable cores, the float32 matrix-multiply peak measured now,
ONNX Runtime and its execution providers, which GPU packages are installed, what the kernel
does to a real-time thread that fills its CPU and how ``[realtime]`` would run), then runs the
serving probe the daemon runs under ``[model] serving = "auto"`` (``service.inference.
serving_probe``) and prints its table and choice, and the warning the daemon would log at start
where the window graph it would serve is below persistence on its held-out check. It reads and
writes the same cache, so a daemon started afterwards on this host with this model uses what the
doctor measured.
"""

from __future__ import annotations

import importlib.util
from typing import Annotated

import typer

from service.config import load_settings
from service.core.cli_options import ConfigOption
from service.core.errors import EXIT_FAILED
from service.core.grid import DEFAULT_GRID
from service.core.realtime_group import RealtimeGroup, read_realtime_group
from service.core.realtime_host import read_realtime_host
from service.core.realtime_refusal import not_available, realtime_available
from service.core.realtime_settings import PlacedThread, RealtimeSettings
from service.core.thread_placement import ThreadPlacement
from service.core.user_errors import fail, or_exit
from service.inference.serving_choice import REASON_WIDTH

GPU_PACKAGES = {"tensorrt": "tensorrt", "cuda-python": "cuda", "torch": "torch"}
"""Distribution -> module: what the ``gpu`` extra (and ``train`` for torch) installs."""
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def doctor(
    config: ConfigOption = None,
    remeasure: Annotated[
        bool, typer.Option("--remeasure", help="Measure again even if this host's cache holds.")
    ] = False,
) -> None:
    """Print this host's facts and how it can serve the configured model: each candidate
    (mode, backend, threads, precision: fp32, and int8 where `corticast export --int8` wrote
    copies beside the model) with its p50, p99, what its accuracy was judged by (fp32: parity
    with ONNX Runtime CPU; int8: its export guard) and the stride it fits, and the choice
    `[model] serving = "auto"` would make, with the daemon's warning where the file it would
    serve is below persistence on its held-out check. Exits 1 when nothing fits."""
    from bench.benchmarks.efficiency import sgemm_peak_gflops
    from service.inference import host
    from service.inference.model_files import ModelFiles
    from service.inference.predictor import StreamSpec
    from service.inference.serving_probe import ServingProbe

    settings = or_exit(lambda: load_settings(config))
    model = settings.model
    if model.mode == "raster":
        fail("corticast doctor probes window and stream mode; [model] mode is 'raster'", 2)
    stream = StreamSpec(grid=DEFAULT_GRID, sample_rate_hz=settings.stream.sample_rate_hz)
    or_exit(lambda: ModelFiles.for_start(model.model_copy(update={"mode": "window"}), stream))
    facts = host.facts()
    cores = facts["cores"]
    peaks = {n: sgemm_peak_gflops(n, seconds=0.5) for n in sorted({1, cores})}
    typer.echo(f"cpu               {host.cpu_model()} ({facts['cpu']})")
    typer.echo(f"usable cores      {cores}")
    typer.echo(
        "sgemm peak        "
        + ", ".join(f"{gflops:.0f} GFLOP/s on {n} thread(s)" for n, gflops in peaks.items())
    )
    typer.echo(f"onnxruntime       {facts['onnxruntime']} ({', '.join(facts['providers'])})")
    typer.echo(f"gpu extra         {_gpu_extra(facts['providers'])}")
    for label, line in realtime_lines(settings.realtime):
        typer.echo(f"{label:<18}{line}")
    typer.echo(f"model             {model.path}")
    probe = or_exit(
        lambda: ServingProbe(
            model,
            stream,
            staleness_limit_s=settings.interlocks.max_sample_age_s,
            min_stride=settings.scheduler.stride,
        )
    )
    cached = "" if remeasure else " (cached if this host measured this model before)"
    typer.echo(f"serving probe     {probe.cache_path}{cached}")
    typer.echo("")
    choice = or_exit(lambda: probe.choose(use_cache=not remeasure))  # out of descriptors: 1
    for line in choice.table():
        typer.echo(line)
    typer.echo("")
    for row in choice.rows:  # the reasons the table cut short, whole
        if not row.fits and len(row.reason) > REASON_WIDTH:
            typer.echo(f"{row.measurement.candidate.label}: {row.reason}")
    typer.echo("")
    if choice.chosen is None:
        fail(choice.why, EXIT_FAILED)
    typer.echo(f"chosen            {choice.why}")
    served = model
    if model.serving == "auto":
        served = probe.settings_for(choice.chosen.measurement.candidate)
    else:
        typer.echo('serving           [model] serving = "fixed": the daemon serves as configured')
    # What the daemon would warn at start: the held-out check of the window graph it serves
    # (an int8 choice's copy carries its own).
    warning = ModelFiles(served.path.expanduser()).below_persistence_warning()
    if warning is not None:
        typer.echo(f"warning           {warning}")


_THREADS: dict[PlacedThread, str] = {
    "ingest": "ingest",
    "inference": "inference",
    "publisher_io": "ZeroMQ I/O",
}
"""The threads ``[realtime]`` raises (``RealtimeSettings.placement``), as the doctor names them."""


def realtime_lines(realtime: RealtimeSettings) -> list[tuple[str, str]]:
    """What the kernel does to a real-time thread that leaves its CPU no idle time, whether it
    gives real-time to a cgroup without a budget, how ``[realtime]`` would run here (each
    priority it asks for tried, the ZeroMQ I/O thread's included), and a warning where they
    meet badly."""
    if not realtime_available():
        applied = "not applied here" if realtime.policy != "off" else "off"
        return [
            ("real-time", not_available()),
            ("[realtime]", f"policy {realtime.policy}, {applied}"),
        ]
    stoppers = read_realtime_host().stoppers()
    kernel = (
        "a real-time thread that leaves its CPU no idle time is stopped by "
        + " and by ".join(stoppers)
        if stoppers
        else "nothing here stops a real-time thread that fills its CPU"
    )
    lines = [("real-time", kernel)]
    group = read_realtime_group()
    if group.checked:
        lines.append(("cgroup real-time", _groups_line(group)))
    cpus = (
        f", CPUs ingest {list(realtime.ingest_cpus)} / inference {list(realtime.inference_cpus)}"
        if realtime.ingest_cpus or realtime.inference_cpus
        else ""
    )
    if realtime.policy == "off":
        lines.append(("[realtime]", f"policy off{cpus}, idle_share {realtime.idle_share:g}"))
    else:
        placements = {name: realtime.placement(name) for name in _THREADS}
        refusals = {
            priority: ThreadPlacement(realtime.policy, priority, frozenset()).realtime_refusal()
            for priority in sorted({p.priority for p in placements.values() if p is not None})
        }
        refused = {
            name: p.priority
            for name, p in placements.items()
            if p is not None and refusals[p.priority] is not None
        }
        priorities = " / ".join(
            f"{_THREADS[name]} {p.priority}" for name, p in placements.items() if p is not None
        )
        verdict = (
            "refused here to " + ", ".join(f"{_THREADS[n]} ({p})" for n, p in refused.items())
            if refused
            else "permitted here"
        )
        lines.append(
            (
                "[realtime]",
                f"policy {realtime.policy}, priorities {priorities}{cpus}, idle_share "
                f"{realtime.idle_share:g}; {verdict}",
            )
        )
        if refused:
            priority = min(refused.values())
            lines.append(
                (
                    "warning",
                    f"SCHED_{realtime.policy.upper()} {priority}: {refusals[priority]}. Those "
                    "threads would run under the process's policy",
                )
            )
    if stoppers and realtime.idle_share == 0:
        lines.append(
            (
                "warning",
                "[realtime] idle_share = 0: where the loop's threads run real-time ([realtime] "
                "policy or the unit's drop-in), one that falls behind fills its CPU and is "
                "stopped ~50 ms, past the staleness limit; 0.1 prevents it",
            )
        )
    return lines


def _groups_line(group: RealtimeGroup) -> str:
    """Under a kernel that refuses real-time to a cgroup without a budget: this process's
    group, and what that means for the unit (its drop-in's ``CPUSchedulingPolicy=``)."""
    if group.version == 1:
        here = f"{group.path}, has {group.budget_us} us a period"
    else:
        here = f"{group.path}, has none (v2)" if group.path else "the root, has it all"
    return (
        "on: real-time only in a cgroup with a budget (CONFIG_RT_GROUP_SCHED); this "
        f"process's, {here}. A systemd unit in a cpu cgroup of its own has none, and "
        "realtime.conf's CPUSchedulingPolicy= then stops it starting (deploy/README.md)"
    )


def _gpu_extra(providers: list[str]) -> str:
    """One line: which GPU execution providers and packages this environment has."""
    eps = [p for p in GPU_PROVIDERS if p in providers]
    packages = [name for name, module in GPU_PACKAGES.items() if importlib.util.find_spec(module)]
    if not eps and not {"tensorrt", "cuda-python"} & set(packages):
        return "not installed (CPU only; on a GPU host: pip install 'corticast[gpu]')"
    return f"execution providers {eps or 'none'}; packages {packages or 'none'}"
