"""Frames whose values say where and when they were made, for end-to-end ingest checks.

Each value is ``(sample_index mod 2**15) * 512 + cell`` with ``cell = row * cols + col``: an
integer below 2**24, so float32 holds it exactly. A receiver decodes every frame to check that
each sample arrived once, in order, with each electrode in its own cell.
"""

from __future__ import annotations

import numpy as np

from service.core.grid import DEFAULT_GRID, ElectrodeGrid

INDEX_MODULUS = 2**15
_CELL_RADIX = 512


def encode_pattern(sample_index: np.ndarray, grid: ElectrodeGrid = DEFAULT_GRID) -> np.ndarray:
    """Frames (n, rows, cols) float32 for the given sample indices."""
    if grid.n_channels > _CELL_RADIX:
        raise ValueError(
            f"pattern encodes at most {_CELL_RADIX} electrodes, grid has {grid.n_channels}"
        )
    index = np.asarray(sample_index, dtype=np.int64) % INDEX_MODULUS
    cells = np.arange(grid.n_channels, dtype=np.int64).reshape(grid.shape)
    return (index[:, None, None] * _CELL_RADIX + cells).astype(np.float32)


def decode_pattern(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`encode_pattern`.

    Returns
    -------
    sample_index
        (n,) sample index mod ``INDEX_MODULUS``, read from cell (0, 0).
    cell_ok
        (n,) bool, True where every cell of the frame holds its own cell number and the same
        sample index.
    """
    values = frames.reshape(frames.shape[0], -1).astype(np.int64)
    index = values // _CELL_RADIX
    cells = values % _CELL_RADIX
    expected_cells = np.arange(values.shape[1])
    cell_ok = np.all(cells == expected_cells, axis=1) & np.all(index == index[:, :1], axis=1)
    return index[:, 0], cell_ok
