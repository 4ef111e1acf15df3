"""The committed tiny model with int8 copies beside its graphs, as the tests make them."""

from __future__ import annotations

from pathlib import Path

from models.quantize import Int8Settings, export_int8
from tests.data.tiny_model import STEP, WINDOW, copy_tiny_model

SETTINGS = Int8Settings(
    calibration_data="synthetic-mix:9000@4",
    guard_data="synthetic-mix:9101@4",
    calibration_windows=16,
    guard_windows=32,
)
"""A few seconds of data each (``corticast export --int8``'s defaults take ~18 s): the tiny
model needs no more to be calibrated and pass the guard. Guard windows on which the tiny model
is 5 dB or more from persistence at every frame (either side): on ``synthetic-mix:9100@4`` it
was 0.01 dB above at frame 3, and whether int8 stayed above there was a coin's toss."""


def build(folder: Path) -> list[str]:
    """Copy the tiny model into ``folder`` and write the int8 copies of its window and step
    graphs (about 5-10 s); returns what :func:`models.quantize.export_int8` printed."""
    _, window, step = copy_tiny_model(folder)
    return export_int8(window, step, SETTINGS)


def graphs(folder: Path) -> tuple[Path, Path]:
    """The fp32 window and step graphs in a folder :func:`build` filled."""
    return folder / WINDOW, folder / STEP
