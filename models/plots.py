"""The PSNR-per-horizon figure of an evaluation report (the paper's Fig. 6).

Drawn on a bare Agg canvas, never through pyplot: no global backend switch, no figure manager,
so nothing is left open and it runs on headless CI machines.
"""

from __future__ import annotations

import textwrap
from collections.abc import Collection, Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def plot_psnr_curves(
    path: str | Path,
    curves: Mapping[str, np.ndarray],
    labels: Mapping[str, str],
    *,
    dashed: Collection[str],
    caption: str,
) -> None:
    """Write a PNG of PSNR (dB) against predicted frame 1..T, one line per predictor.

    Parameters
    ----------
    path
        Where the PNG goes.
    curves
        Predictor -> (T,) PSNR; infinite values (MSE 0) cannot be drawn and are said so.
    labels
        Predictor -> legend text.
    dashed
        Predictors drawn dashed (the baselines), so models stand out.
    caption
        What the numbers depend on (windows, the PSNR scale); shown under the title.
    """
    figure = Figure(figsize=(8.0, 5.0), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    frames = np.arange(1, len(next(iter(curves.values()))) + 1)
    undrawn = []
    for name, values in curves.items():
        finite = np.isfinite(values)
        if not finite.all():
            undrawn.append(name)
        axes.plot(
            frames[finite],
            values[finite],
            linestyle="--" if name in dashed else "-",
            marker="o",
            markersize=3,
            label=labels[name],
        )
    axes.set_xticks(frames)
    axes.set_xlabel("predicted frame (1 = first frame after the observed window)")
    axes.set_ylabel("PSNR (dB)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    lines = textwrap.wrap(caption, width=110)
    if undrawn:
        lines.append(f"infinite PSNR (MSE 0) not drawn for: {', '.join(undrawn)}")
    figure.suptitle("PSNR of predicted frames against prediction horizon")
    axes.set_title("\n".join(lines), fontsize="small")
    figure.savefig(path, dpi=120)
