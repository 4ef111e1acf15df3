"""The input checks every generator's entry points share."""

from __future__ import annotations

from torch import Tensor


def check_past(past: Tensor, past_frames: int, grid_shape: tuple[int, int]) -> None:
    """Refuse a past window that is not (batch, past_frames, 1, rows, cols), naming both."""
    _check_frames("past", past, past_frames, grid_shape)


def check_future(future: Tensor, past: Tensor, future_frames: int) -> None:
    """Refuse training targets that are not (batch of ``past``, future_frames, 1, rows, cols)."""
    _check_frames("future", future, future_frames, tuple(past.shape[3:]))
    if future.shape[0] != past.shape[0]:
        raise ValueError(
            f"'future' must have the batch of 'past' ({past.shape[0]}), got {future.shape[0]}"
        )


def _check_frames(name: str, frames: Tensor, count: int, grid_shape: tuple[int, ...]) -> None:
    expected = (count, 1, *grid_shape)
    if frames.dim() != 5 or tuple(frames.shape[1:]) != expected:
        raise ValueError(
            f"'{name}' must have shape (batch, {', '.join(map(str, expected))}), "
            f"got {tuple(frames.shape)}"
        )
