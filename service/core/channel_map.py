"""Map a stream's channel order onto the electrode grid.

Stream metadata layout (the same XML in an LSL stream's ``desc`` and an XDF stream header)::

    <desc>
      <channels>
        <channel><label>R00C00</label><unit>microvolts</unit><type>ECoG</type>
                 <row>0</row><col>0</col></channel>
        ...
      </channels>
      <grid><rows>18</rows><cols>20</cols><pitch_mm>0.5</pitch_mm></grid>
    </desc>

A stream whose ``grid`` describes another array (rows, cols or pitch) than the one configured is
refused: its channels would fill the grid scrambled, or every wave speed would be off by the ratio
of the pitches; a stream with no ``grid`` element is taken to be on the configured array. A stream
with no ``row``/``col`` on any channel falls back to row-major order. A stream that
gives positions for some channels but not others, or places two channels on one electrode, is
refused: guessing an electrode layout would silently scramble the waves. So is a stream without
``row``/``col`` whose labels, in the grid's own form (``R03C17``), name other electrodes than the
row-major fallback reads its channels on. Where ``row``/``col`` are given they place the channels,
whatever the labels say (a rig may number its labels from 1).

Frames are in microvolts. A channel ``unit`` of volts or millivolts (``V``, ``mV``, ``µV`` and
the spelled-out names, any case) or mne-lsl's power of ten of volts (``0`` for V, ``-6`` for µV:
``mne_lsl.player.PlayerLSL`` streams MNE data in volts) is scaled to µV; a stream with no unit
on any channel is taken to be in µV. Other units, and channels in different units, are refused.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence

import numpy as np

from service.core.checks import preview_items
from service.core.grid import DEFAULT_GRID, GRID_FORMAT, ElectrodeGrid


class ChannelMap:
    """Reorders samples from stream channel order into grid frames.

    Parameters
    ----------
    source_of_cell
        For each grid cell in row-major order, the stream channel that feeds it.
    grid
        The electrode grid.
    from_metadata
        Whether the order came from channel positions in the stream (False: row-major fallback).
    uv_per_unit
        Microvolts per stream unit: samples are multiplied by it (1.0 for a µV stream).
    """

    def __init__(
        self,
        source_of_cell: np.ndarray,
        grid: ElectrodeGrid = DEFAULT_GRID,
        *,
        from_metadata: bool,
        uv_per_unit: float = 1.0,
    ) -> None:
        source_of_cell = np.asarray(source_of_cell, dtype=np.intp)
        if source_of_cell.shape != (grid.n_channels,) or not np.array_equal(
            np.sort(source_of_cell), np.arange(grid.n_channels)
        ):
            raise ValueError(
                f"'source_of_cell' must be a permutation of 0..{grid.n_channels - 1}, "
                f"got {source_of_cell.shape[0]} entries"
            )
        self.source_of_cell = source_of_cell
        self.grid = grid
        self.from_metadata = from_metadata
        self.uv_per_unit = float(uv_per_unit)
        self.is_identity = bool(np.array_equal(source_of_cell, np.arange(grid.n_channels)))

    @classmethod
    def row_major(cls, grid: ElectrodeGrid = DEFAULT_GRID) -> ChannelMap:
        """Channel ``k`` feeds row ``k // cols``, column ``k % cols``."""
        return cls(np.arange(grid.n_channels), grid, from_metadata=False)

    @classmethod
    def from_positions(
        cls,
        rows: Sequence[int | None],
        cols: Sequence[int | None],
        grid: ElectrodeGrid = DEFAULT_GRID,
    ) -> ChannelMap:
        """Build the map from each stream channel's (row, col); all None means row-major."""
        _check_channel_count(len(rows), grid)
        if len(cols) != len(rows):
            raise ValueError(f"got {len(rows)} channel rows but {len(cols)} channel cols")
        given = [r is not None and c is not None for r, c in zip(rows, cols, strict=True)]
        if not any(given):
            return cls.row_major(grid)
        if not all(given):
            missing = [i for i, ok in enumerate(given) if not ok]
            raise ValueError(
                f"stream gives electrode positions for some channels but not channels "
                f"{preview_items(missing)}; give row and col for every channel or for none"
            )
        source_of_cell = np.full(grid.n_channels, -1, dtype=np.intp)
        for channel, (row, col) in enumerate(zip(rows, cols, strict=True)):
            if not (0 <= row < grid.rows and 0 <= col < grid.cols):
                raise ValueError(
                    f"channel {channel} has position (row={row}, col={col}) outside the "
                    f"{grid.rows}x{grid.cols} grid"
                )
            cell = row * grid.cols + col
            if source_of_cell[cell] >= 0:
                raise ValueError(
                    f"channels {source_of_cell[cell]} and {channel} both claim electrode "
                    f"(row={row}, col={col})"
                )
            source_of_cell[cell] = channel
        return cls(source_of_cell, grid, from_metadata=True)

    @classmethod
    def from_stream_xml(cls, xml_text: str, grid: ElectrodeGrid = DEFAULT_GRID) -> ChannelMap:
        """Build the map from an LSL stream info / XDF stream header XML document."""
        try:
            root = ET.fromstring(xml_text)
        except ET.ParseError as err:
            raise ValueError(f"stream metadata is not valid XML: {err}") from err
        _check_grid(root, grid)
        count_text = root.findtext("channel_count")
        channels = root.findall("./desc/channels/channel")
        n_channels = int(count_text) if count_text is not None else len(channels)
        _check_channel_count(n_channels, grid)
        if not channels:
            return cls.row_major(grid)
        if len(channels) != n_channels:
            raise ValueError(
                f"stream declares {n_channels} channels but describes {len(channels)} in "
                f"desc/channels"
            )
        rows = [_int_or_none(ch.findtext("row"), "row", i) for i, ch in enumerate(channels)]
        cols = [_int_or_none(ch.findtext("col"), "col", i) for i, ch in enumerate(channels)]
        order = cls.from_positions(rows, cols, grid)
        labels = [ch.findtext("label") for ch in channels]
        if not order.from_metadata:
            _check_row_major_labels(labels, grid)
        return cls(
            order.source_of_cell,
            grid,
            from_metadata=order.from_metadata,
            uv_per_unit=_uv_per_unit([ch.findtext("unit") for ch in channels]),
        )

    def to_frames(self, samples: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Reorder ``samples`` (n, channels) into frames (n, rows, cols).

        A stream already in grid order gives a view of ``samples`` (no copy); otherwise the
        frames are written into ``out`` when given.
        """
        n = samples.shape[0]
        scaled = self.uv_per_unit != 1.0
        if self.is_identity and not scaled:
            return samples.reshape(n, *self.grid.shape)
        if out is None:
            out = np.empty((n, *self.grid.shape), dtype=samples.dtype)
        flat = out.reshape(n, self.grid.n_channels)
        if self.is_identity:
            np.multiply(samples, self.uv_per_unit, out=flat)
        else:
            np.take(samples, self.source_of_cell, axis=1, out=flat)
            if scaled:
                flat *= self.uv_per_unit
        return out


_UV_PER_NAMED_UNIT = {
    **dict.fromkeys(("uv", "µv", "μv", "microvolt", "microvolts"), 1.0),
    **dict.fromkeys(("mv", "millivolt", "millivolts"), 1e3),
    **dict.fromkeys(("v", "volt", "volts"), 1e6),
    **dict.fromkeys(("nv", "nanovolt", "nanovolts"), 1e-3),
}
"""Voltage units by name (lower case), as LSL's meta-data conventions and mne-lsl spell them."""

_UV_PER_POWER_OF_TEN = {"0": 1e6, "-3": 1e3, "-6": 1.0, "-9": 1e-3}
"""mne-lsl's unit for a voltage channel: the power of ten of volts (MNE's ``unit_mul``)."""


def _uv_per_unit(units: Sequence[str | None]) -> float:
    """Microvolts per unit of the channels' ``unit`` texts; 1.0 when none gives one."""
    given = [(i, text.strip()) for i, text in enumerate(units) if text and text.strip()]
    if not given:
        return 1.0
    scales = {}
    for channel, text in given:
        scale = _UV_PER_NAMED_UNIT.get(text.lower(), _UV_PER_POWER_OF_TEN.get(text))
        if scale is None:
            raise ValueError(
                f"channel {channel} has unit {text!r}; electrode samples must be a voltage: "
                f"V, mV, µV or nV by name, or mne-lsl's power of ten of volts (0, -3, -6, -9)"
            )
        scales.setdefault(scale, channel)
    if len(given) != len(units) or len(scales) > 1:
        raise ValueError(
            f"channels must all give the same voltage unit or none; {len(given)} of "
            f"{len(units)} give one, among them "
            + ", ".join(f"channel {ch} {units[ch]!r}" for ch in scales.values())
        )
    return next(iter(scales))


_GRID_LABEL = re.compile(r"R(\d{2,})C(\d{2,})")
"""An electrode's name as ``ElectrodeGrid.label`` writes it: ``R03C17``."""


def _check_row_major_labels(labels: Sequence[str | None], grid: ElectrodeGrid) -> None:
    """Refuse a stream read row-major (no row/col) whose channel is labelled with the grid's
    name of another electrode; labels of another form (``E001``, ``Fp1``) say nothing about
    the position."""
    for channel, text in enumerate(labels):
        named = _GRID_LABEL.fullmatch((text or "").strip())
        if named is None:
            continue
        row, col = divmod(channel, grid.cols)
        if (int(named[1]), int(named[2])) != (row, col):
            raise ValueError(
                f"channel {channel} is labelled {text!r} but would be read as electrode "
                f"(row={row}, col={col}): the stream gives no row/col, so its channels are read "
                f"row-major; give every channel the row and col of the electrode it carries"
            )


def stream_grid(xml_text: str, default: ElectrodeGrid = DEFAULT_GRID) -> ElectrodeGrid:
    """The array an LSL stream info / XDF stream header XML document describes in desc/grid.

    A recording made on another array says so there; a reader that names no array of its own
    reads the recording on this one. What the document leaves out (all of it, with no grid
    element) is taken from ``default``, but for the pitch of another array's shape, which is
    refused: every wave speed would be off by the ratio of the pitches. A pitch within the
    comparison's tolerance of the default's is the default's, so a pitch written in mm and read
    back is not one rounding off.
    """
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as err:
        raise ValueError(f"stream metadata is not valid XML: {err}") from err
    described = _described_grid(root, default)
    if described.shape != default.shape and not (root.findtext("desc/grid/pitch_mm") or "").strip():
        raise ValueError(
            f"desc/grid describes a {described.rows}x{described.cols} array (rows x cols) but "
            f"no pitch_mm to measure its waves in: name the array the recording is on ('grid'; "
            f"FILE::grid={GRID_FORMAT} on the command line)"
        )
    return described


def _described_grid(root: ET.Element, default: ElectrodeGrid) -> ElectrodeGrid:
    element = root.find("desc/grid")
    if element is None:
        return default
    texts = {name: element.findtext(name) for name in ("rows", "cols", "pitch_mm")}
    given = {name: text.strip() for name, text in texts.items() if text and text.strip()}
    try:
        rows = int(given.get("rows", default.rows))
        cols = int(given.get("cols", default.cols))
        pitch_mm = float(given.get("pitch_mm", default.pitch_m * 1e3))
    except ValueError:
        raise ValueError(
            f"desc/grid must hold integer rows, cols and a number pitch_mm, got "
            f"{ET.tostring(element, encoding='unicode')!r}"
        ) from None
    try:
        described = ElectrodeGrid(rows=rows, cols=cols, pitch_m=pitch_mm / 1e3)
    except ValueError as err:
        raise ValueError(f"desc/grid describes no electrode array: {err}") from None
    return default if described.same_array(default) else described


def _check_grid(root: ET.Element, grid: ElectrodeGrid) -> None:
    """Refuse a stream whose desc/grid describes another array than ``grid``; one without a
    grid element, or without one of its fields, is taken to be on it in what it leaves out."""
    described = _described_grid(root, grid)
    if not described.same_array(grid):
        raise ValueError(
            f"stream describes a {described.rows}x{described.cols} grid with pitch "
            f"{described.pitch_m * 1e3:g} mm; the grid is {grid.rows}x{grid.cols} with pitch "
            f"{grid.pitch_m * 1e3:g} mm"
        )


def _check_channel_count(n_channels: int, grid: ElectrodeGrid) -> None:
    if n_channels != grid.n_channels:
        raise ValueError(
            f"stream has {n_channels} channels; the {grid.rows}x{grid.cols} electrode grid "
            f"needs exactly {grid.n_channels}"
        )


def _int_or_none(text: str | None, field: str, channel: int) -> int | None:
    if text is None or not text.strip():
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"channel {channel} has non-integer {field} {text!r}") from None
