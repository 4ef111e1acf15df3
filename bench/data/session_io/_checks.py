"""Argument checks shared by the session-file readers and writers."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def existing_file(path: str | Path) -> Path:
    """Return ``path`` as a Path, raising FileNotFoundError (not SessionFileError) if absent.

    A missing file is not a corrupt one, and a format library's "not a valid file" message
    would hide that.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"'path' must name an existing file, got {str(path)!r}")
    return path


def check_channel_order(order: np.ndarray | None, n_channels: int) -> np.ndarray:
    """The electrode (row-major index) each stored channel carries; default row-major."""
    if order is None:
        return np.arange(n_channels)
    order = np.asarray(order)
    if not (
        order.dtype.kind in "iu"
        and order.shape == (n_channels,)
        and np.array_equal(np.sort(order), np.arange(n_channels))
    ):
        raise ValueError(
            f"'channel_order' must be a permutation of 0..{n_channels - 1}, got "
            f"{order.dtype} array of shape {order.shape}"
        )
    return order
