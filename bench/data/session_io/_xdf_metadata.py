"""The desc elements corticast writes into XDF stream headers, and how they are read back.

The ECoG stream's desc follows the layout in ``service.core.channel_map`` (one ``channel`` per
stream channel with label/unit/type/row/col, then ``grid``) so the same parser reads LSL and XDF; it
adds ``corticast_info``, the session's ``info`` as JSON text. The ground-truth stream's desc names
the ECoG stream it annotates (by source_id) and the pattern names its ``label`` channel indexes.
Keeping writer and reader of these elements in one module keeps the two from drifting apart.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np

from bench.data.ground_truth import PATTERN_LABELS, GroundTruth
from service.core.grid import ElectrodeGrid

TRUTH_CHANNELS = ("vx_mps", "vy_mps", "speed_mps", "label", "seizure")
"""Ground-truth stream channels, in order; all float64 (label as index, seizure as 0/1)."""

_TRUTH_UNITS = ("m/s", "m/s", "m/s", "index", "bool")


def ecog_desc(grid: ElectrodeGrid, channel_order: np.ndarray, info: dict[str, Any]) -> ET.Element:
    """Desc of an ECoG stream whose channel ``i`` carries electrode ``channel_order[i]``."""
    desc = ET.Element("desc")
    channels = ET.SubElement(desc, "channels")
    for electrode in channel_order.tolist():
        row, col = divmod(electrode, grid.cols)
        channel = ET.SubElement(channels, "channel")
        _text(channel, "label", grid.label(row, col))
        _text(channel, "unit", "microvolts")
        _text(channel, "type", "ECoG")
        _text(channel, "row", str(row))
        _text(channel, "col", str(col))
    grid_element = ET.SubElement(desc, "grid")
    _text(grid_element, "rows", str(grid.rows))
    _text(grid_element, "cols", str(grid.cols))
    _text(grid_element, "pitch_mm", repr(grid.pitch_m * 1e3))
    try:
        _text(desc, "corticast_info", json.dumps(info))
    except TypeError as err:
        raise TypeError(f"'session.info' must be JSON-serialisable: {err}") from None
    return desc


def truth_desc(ecog_source_id: str) -> ET.Element:
    """Desc of the ground-truth stream annotating the ECoG stream with ``ecog_source_id``."""
    desc = ET.Element("desc")
    channels = ET.SubElement(desc, "channels")
    for label, unit in zip(TRUTH_CHANNELS, _TRUTH_UNITS, strict=True):
        channel = ET.SubElement(channels, "channel")
        _text(channel, "label", label)
        _text(channel, "unit", unit)
    patterns = ET.SubElement(desc, "pattern_labels")
    for name in PATTERN_LABELS:
        _text(patterns, "label", name)
    _text(desc, "annotates_source_id", ecog_source_id)
    return desc


def truth_values(truth: GroundTruth) -> np.ndarray:
    """Ground truth as the (T, 5) float64 samples of the ground-truth stream."""
    return np.column_stack(
        [truth.velocity_mps, truth.speed_mps, truth.label.astype(np.float64), truth.seizure]
    ).astype(np.float64)


def annotated_source_id(header: ET.Element) -> str | None:
    """The source_id of the ECoG stream a ground-truth stream header annotates."""
    return header.findtext("desc/annotates_source_id")


def truth_from_values(header: ET.Element, values: np.ndarray) -> GroundTruth:
    """Rebuild GroundTruth from ground-truth samples, mapping label indices by pattern name.

    Raises ValueError when the channels or pattern names are not the ones corticast writes.
    """
    labels = tuple(ch.findtext("label") for ch in header.findall("desc/channels/channel"))
    if labels != TRUTH_CHANNELS:
        raise ValueError(f"ground-truth channels must be {TRUTH_CHANNELS}, got {labels}")
    names = [el.text or "" for el in header.findall("desc/pattern_labels/label")]
    unknown = sorted(set(names) - set(PATTERN_LABELS))
    if unknown:
        raise ValueError(f"ground truth uses pattern names {unknown} not in {PATTERN_LABELS}")
    to_ours = np.array([PATTERN_LABELS.index(name) for name in names], dtype=np.int8)
    index = values[:, 3]
    valid = np.isfinite(index) & (index == np.round(index)) & (index >= 0) & (index < len(names))
    if not np.all(valid):
        bad = values[int(np.argmin(valid)), 3]
        raise ValueError(
            f"ground-truth label must index the {len(names)} pattern names, got {bad!r}"
        )
    return GroundTruth(
        velocity_mps=np.ascontiguousarray(values[:, :2]),
        speed_mps=np.ascontiguousarray(values[:, 2]),
        label=to_ours[index.astype(np.intp)],
        seizure=values[:, 4] != 0,
    )


def info_from_header(header: ET.Element) -> dict[str, Any]:
    """The session ``info`` stored in an ECoG stream header; empty for other recorders' files."""
    text = header.findtext("desc/corticast_info")
    if text is None:
        return {}
    try:
        info = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"desc/corticast_info is not valid JSON: {err}") from None
    if not isinstance(info, dict):
        raise ValueError(f"desc/corticast_info must hold a JSON object, got {type(info).__name__}")
    return info


def _text(parent: ET.Element, tag: str, text: str) -> None:
    ET.SubElement(parent, tag).text = text
