"""The figures of a replay report, each a PNG drawn on a bare Agg canvas.

Never through pyplot (as ``models.plots``): no global backend, nothing left open, and it
runs headless. Every figure states its units on its axes; seizures from the ground truth are
shaded the same way in every time plot.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_SEIZURE_COLOUR = "#f4a3a3"
_DPI = 110


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _shade(axes: Any, episodes: Sequence[tuple[float, float]] | None, label: bool = True) -> None:
    for index, (onset, offset) in enumerate(episodes or ()):
        axes.axvspan(
            onset,
            offset,
            color=_SEIZURE_COLOUR,
            alpha=0.5,
            lw=0,
            label="seizure (ground truth)" if label and index == 0 else None,
        )


def plot_ssim(
    path: Path, curves: Mapping[str, np.ndarray], baselines: Sequence[str], frame_ms: float
) -> None:
    """SSIM against predicted frame (``frame_ms`` apart), one line per model and baseline
    (dashed)."""
    figure = _figure(8.0, 4.5)
    axes = figure.add_subplot()
    for name, values in curves.items():
        frames = np.arange(1, len(values) + 1)
        axes.plot(frames, values, "--" if name in baselines else "-", marker="o", ms=3, label=name)
    axes.set_xlabel(
        f"predicted frame (1 = first frame after the newest measured one; {frame_ms:.1f} ms each)"
    )
    axes.set_ylabel("SSIM (1 = identical)")
    axes.set_title("Structural similarity of predicted and true frames, per horizon")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.savefig(path, dpi=_DPI)


def plot_strips(
    path: Path,
    frames: np.ndarray,
    times_s: np.ndarray,
    examples: Sequence[tuple[str, int]],
    predictions: Mapping[str, Mapping[int, tuple[int, np.ndarray]]],
    horizons: Sequence[int],
    frame_ms: float,
) -> Figure:
    """True vs predicted frames at chosen horizons for a few windows; a window the session
    ends within (no true frame at some horizon shown) is left out.

    Parameters
    ----------
    frames, times_s
        The session slot by slot (µV, s).
    examples
        (title, requested slot) per example window.
    predictions
        Model -> requested slot -> (the prediction's newest input slot, its 16 frames).
    horizons
        Predicted frames to show (1-based), ``frame_ms`` apart.
    """
    rows: list[tuple[str, np.ndarray, float]] = []
    for title, requested in examples:
        by_seq: dict[int, list[tuple[str, np.ndarray]]] = {}
        for model, kept in predictions.items():
            if requested in kept:
                seq, future = kept[requested]
                by_seq.setdefault(seq, []).append((model, future))
        for seq, predicted in sorted(by_seq.items()):
            truth = frames[seq + 1 : seq + 1 + max(horizons)]
            if len(truth) < max(horizons):
                continue
            limit = float(np.percentile(np.abs(truth), 99.5)) or 1.0
            where = f"{title}, t={times_s[seq]:.2f} s"
            rows.append((f"{where}\ntrue", truth, limit))
            rows.extend((f"{where}\n{model}", future, limit) for model, future in predicted)
    columns = len(horizons)
    figure = _figure(1.7 * columns + 2.6, 1.45 * max(len(rows), 1) + 0.6)
    grid = figure.add_gridspec(max(len(rows), 1), columns)
    for r, (label, shown, limit) in enumerate(rows):
        for c, horizon in enumerate(horizons):
            axes = figure.add_subplot(grid[r, c])
            image = axes.imshow(shown[horizon - 1], cmap="RdBu_r", vmin=-limit, vmax=limit)
            axes.set_xticks([])
            axes.set_yticks([])
            if r == 0:
                axes.set_title(f"+{horizon} ({horizon * frame_ms:.1f} ms)", fontsize="small")
            if c == 0:
                axes.set_ylabel(label, fontsize="x-small", rotation=0, ha="right", va="center")
            if c == columns - 1:
                figure.colorbar(image, ax=axes, shrink=0.8, label="µV")
    figure.suptitle("True and predicted frames at chosen horizons (18x20 electrodes)")
    figure.savefig(path, dpi=_DPI)
    return figure


def plot_waves(
    path: Path,
    series: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    episodes: Sequence[tuple[float, float]] | None,
    *,
    xlim: tuple[float, float] | None = None,
    title: str,
) -> None:
    """Speed (log scale) and direction over time.

    Parameters
    ----------
    series
        Label -> (time s, speed m/s, direction deg); ground truth first (drawn black). A
        window whose frames carry no wave has NaN (``bench.replay._waves.block_summary``);
        where none has one, the speed axes say so (no speed to scale logarithmically).
    """
    figure = _figure(11.0, 6.0)
    speed_axes = figure.add_subplot(2, 1, 1)
    direction_axes = figure.add_subplot(2, 1, 2, sharex=speed_axes)
    speeds = 0
    for index, (label, (time, speed, direction)) in enumerate(series.items()):
        inside = np.ones(time.shape, dtype=bool)
        if xlim is not None:
            inside = (time >= xlim[0]) & (time <= xlim[1])
        style: dict[str, Any] = {"s": 4, "alpha": 0.7, "label": label, "lw": 0}
        if index == 0 and label.startswith("ground truth"):
            style.update(color="black", s=2, alpha=0.9)
        ok = inside & np.isfinite(speed) & (speed > 0)
        speed_axes.scatter(time[ok], speed[ok], **style)
        speeds += int(np.count_nonzero(ok))
        style["label"] = None
        ok = inside & np.isfinite(direction)
        direction_axes.scatter(time[ok], direction[ok], **style)
    for axes in (speed_axes, direction_axes):
        _shade(axes, episodes, label=axes is speed_axes)
        axes.grid(alpha=0.3)
        if xlim is not None:
            axes.set_xlim(*xlim)
    if speeds:
        speed_axes.set_yscale("log")
    else:
        speed_axes.text(0.5, 0.5, "no window's frames carry a wave", ha="center",
                        transform=speed_axes.transAxes)  # fmt: skip
    speed_axes.set_ylabel("speed (m/s)")
    direction_axes.set_ylabel("direction (deg, from +x toward +y)")
    direction_axes.set_ylim(-180, 180)
    direction_axes.set_yticks([-180, -90, 0, 90, 180])
    direction_axes.set_xlabel("session time (s)")
    speed_axes.legend(fontsize="small", markerscale=3, loc="upper right")
    speed_axes.set_title(title)
    figure.savefig(path, dpi=_DPI)


def plot_decisions(
    path: Path,
    rows: Mapping[str, Sequence[dict[str, Any]]],
    episodes: Sequence[tuple[float, float]] | None,
    duration_s: float,
    *,
    none_because: str,
) -> Figure:
    """Every stimulation request on a timeline, one lane per model, over seizure shading.

    With no request at all, ``none_because`` is written across the plot: an empty timeline
    must say why it is empty (no target region configured, or no wave met the policy). Returns
    the figure written."""
    figure = _figure(11.0, 1.2 + 0.7 * max(len(rows), 1))
    axes = figure.add_subplot()
    _shade(axes, episodes)
    labelled: set[str] = set()
    for lane, decisions in enumerate(rows.values()):
        triggers = [row["time_s"] for row in decisions if row["trigger"]]
        blocked = [row for row in decisions if not row["trigger"]]
        label = "trigger (passed every interlock)"
        axes.scatter(
            triggers,
            [lane] * len(triggers),
            marker="v",
            s=60,
            color="tab:green",
            label=None if label in labelled else label,
            zorder=3,
        )
        labelled.add(label)
        by_reason: dict[str, list[float]] = {}
        for row in blocked:
            reason = row["interlocks"][0] if row["interlocks"] else row["outcome"]
            by_reason.setdefault(reason, []).append(row["time_s"])
        for reason, times in sorted(by_reason.items()):
            label = f"blocked: {reason}"
            axes.scatter(
                times,
                [lane + 0.15] * len(times),
                marker="x",
                s=18,
                label=None if label in labelled else label,
            )
            labelled.add(label)
    axes.set_yticks(range(len(rows)), list(rows))
    axes.set_ylim(-0.6, len(rows) - 0.4)
    axes.set_xlim(0, duration_s)
    axes.set_xlabel("session time (s)")
    axes.set_title("Stimulation requests (policy said stimulate) and what the interlocks did")
    axes.grid(alpha=0.3, axis="x")
    if any(rows.values()):
        axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    else:
        axes.text(0.5, 0.5, none_because, transform=axes.transAxes, ha="center", va="center",
                  wrap=True, bbox={"facecolor": "white", "alpha": 0.9})  # fmt: skip
    figure.savefig(path, dpi=_DPI)
    return figure


def plot_latency(path: Path, samples: Mapping[str, Mapping[str, np.ndarray]]) -> None:
    """Histograms of each latency (ms), one panel per quantity, one line per model."""
    quantities = [q for q in ("inference", "age", "lsl_to_received") if _any(samples, q)]
    titles = {
        "inference": "inference (predictor call)",
        "age": "newest frame in the ring -> prediction published",
        "lsl_to_received": "LSL timestamp of newest frame -> received on ZeroMQ",
    }
    figure = _figure(4.0 * max(len(quantities), 1), 3.6)
    for index, quantity in enumerate(quantities):
        axes = figure.add_subplot(1, len(quantities), index + 1)
        for model, values in samples.items():
            data = values.get(quantity)
            if data is None or not np.isfinite(data).any():
                continue
            data = data[np.isfinite(data)]
            top = np.percentile(data, 99.5)
            axes.hist(data[data <= top], bins=60, histtype="step", label=model)
        axes.set_xlabel("ms")
        axes.set_ylabel("predictions")
        axes.set_title(titles[quantity], fontsize="small")
        axes.grid(alpha=0.3)
        axes.legend(fontsize="x-small")
    figure.savefig(path, dpi=_DPI)


def plot_sweep(path: Path, points: Mapping[str, Sequence[dict[str, Any]]]) -> Figure:
    """Sensitivity against false triggers per hour, one point per policy variant (variants
    that land on the same point share one label); the configured policy's point is ringed
    and labelled: the reference each variant is read against. A variant without a rate (no
    time outside seizures: null in report.json) is left out, and the title says how many: at
    0 false triggers per hour it would read as a perfect one."""
    figure = _figure(8.5, 5.0)
    axes = figure.add_subplot()
    left_out = 0
    for model, variants in points.items():
        at: dict[tuple[float, float], list[str]] = {}
        configured = None
        for p in variants:
            where = (p["false_triggers_per_hour"], p["sensitivity"])
            if not all(value is not None and math.isfinite(value) for value in where):
                left_out += 1
                continue
            text = ", ".join(f"{k}={v:g}" for k, v in p["values"].items())
            if p["configured"]:
                configured, text = where, f"{text} (configured)"
            at.setdefault(where, []).append(text)
        if not at:
            continue
        x, y = zip(*at, strict=True)
        (line,) = axes.plot(x, y, "o", label=model)
        if configured is not None:
            axes.plot(
                *configured,
                "o",
                markersize=14,
                markerfacecolor="none",
                color=line.get_color(),
                label=f"{model}: configured policy",
            )
        for (px, py), texts in at.items():
            axes.annotate(
                "\n".join(texts),
                (px, py),
                fontsize="x-small",
                xytext=(4, -4),
                textcoords="offset points",
                va="top",
            )
    axes.set_xlabel("false triggers per hour (outside seizures)")
    axes.set_ylabel("sensitivity (fraction of seizures triggered on)")
    axes.set_ylim(-0.1, 1.1)
    title = "Policy sweep: sensitivity / false-trigger trade-off"
    if left_out:
        title += f"\n({left_out} variant(s) without a sensitivity or false-trigger rate left out)"
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if axes.get_lines():
        axes.legend(fontsize="small")
    figure.savefig(path, dpi=_DPI)
    return figure


def _any(samples: Mapping[str, Mapping[str, np.ndarray]], quantity: str) -> bool:
    return any(
        values.get(quantity) is not None and np.isfinite(values[quantity]).any()
        for values in samples.values()
    )
