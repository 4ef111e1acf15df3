"""Paper 001's frame discriminator: residual blocks to one unbounded score per frame."""

from __future__ import annotations

import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

_NEGATIVE_SLOPE = 0.2
"""Leaky ReLU slope; the paper gives none (the usual GAN choice)."""


class _ResidualDown(nn.Module):
    """Two 3x3 convolutions halving the grid, plus a strided 1x1 shortcut."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.first = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)
        self.second = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        residual = self.second(F.leaky_relu(self.first(x), _NEGATIVE_SLOPE))
        return F.leaky_relu(residual + self.shortcut(x), _NEGATIVE_SLOPE)


class FrameDiscriminator(nn.Module):
    """Scores single frames: high for true ones, low for predicted ones (least squares).

    The paper scores images directly rather than classifying them (eq. 6-7) and builds its
    discriminator from residual blocks; depth and widths are not given. Two blocks take an
    18x20 frame to 5x5, then the features are averaged and mapped to one score. No
    normalisation layers, so a score depends on its own frame only.

    Parameters
    ----------
    widths
        Channels of the two residual blocks.
    """

    def __init__(self, widths: tuple[int, int] = (16, 32)) -> None:
        super().__init__()
        self.blocks = nn.Sequential(_ResidualDown(1, widths[0]), _ResidualDown(*widths))
        self.score = nn.Linear(widths[1], 1)

    def forward(self, frames: Tensor) -> Tensor:
        """One score per frame of (B, T, 1, rows, cols): shape (B, T)."""
        features = self.blocks(frames.flatten(0, 1)).mean(dim=(2, 3))
        return self.score(features).view(frames.shape[:2])
