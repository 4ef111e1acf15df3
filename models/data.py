"""Training data as torch tensors: :class:`SessionWindows`, the windows of
:class:`models.windows.SplitWindows` as a torch Dataset.

The normalisation, the split and the window rules live in ``models.windows``, which does not
need torch (evaluating an exported model does not); their names are re-exported here for the
training code.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from models.windows import (
    FUTURE_FRAMES,
    PAST_FRAMES,
    SCALE_SIGMAS,
    SPLITS,
    STD_FLOOR_FRACTION,
    WINDOW_FRAMES,
    AnyNormalisation,
    Normalisation,
    SplitWindows,
    normalisation_from_dict,
    split_by_time,
    window_starts,
)

__all__ = [
    "FUTURE_FRAMES",
    "PAST_FRAMES",
    "SCALE_SIGMAS",
    "SPLITS",
    "STD_FLOOR_FRACTION",
    "WINDOW_FRAMES",
    "AnyNormalisation",
    "Normalisation",
    "SessionWindows",
    "normalisation_from_dict",
    "split_by_time",
    "window_starts",
]


class SessionWindows(SplitWindows, Dataset):
    """:class:`models.windows.SplitWindows` whose items and spans are float32 tensors, for a
    DataLoader. Same parameters."""

    def span(self, index: int) -> Tensor:
        """All ``extra_past + 32`` frames of window ``index`` (the extra past, then past and
        future), (T, 1, rows, cols), a copy."""
        return torch.from_numpy(super().span(index))
