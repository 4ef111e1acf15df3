"""The input check every generator's entry points share."""

from __future__ import annotations

from torch import Tensor


def check_past(past: Tensor, past_frames: int, grid_shape: tuple[int, int]) -> None:
    """Refuse a past window that is not (batch, past_frames, 1, rows, cols), naming both."""
    expected = (past_frames, 1, *grid_shape)
    if past.dim() != 5 or tuple(past.shape[1:]) != expected:
        raise ValueError(
            f"'past' must have shape (batch, {', '.join(map(str, expected))}), "
            f"got {tuple(past.shape)}"
        )
