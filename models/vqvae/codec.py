"""HR-VQVAE's frame encoder and decoder: one 2x down/upsampling around the latent grid.

Frames are zero-padded to an even square (18x20 -> 20x20, models.md [decided]) so the latent
grid is square (10x10); the decoder's output is cropped back to the frame.
"""

from __future__ import annotations

import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn


def _padding(grid_shape: tuple[int, int], side: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) that centre a frame in the ``side`` square."""
    rows, cols = grid_shape
    return ((side - cols) // 2, side - cols - (side - cols) // 2,
            (side - rows) // 2, side - rows - (side - rows) // 2)  # fmt: skip


class Encoder(nn.Module):
    """z = E(x): (N, 1, rows, cols) frames to (N, D, side/2, side/2) latents."""

    def __init__(self, grid_shape: tuple[int, int], side: int, hidden: int, dim: int) -> None:
        super().__init__()
        self.pad = _padding(grid_shape, side)
        self.net = nn.Sequential(
            nn.Conv2d(1, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, dim, 3, padding=1),
        )

    def forward(self, frames: Tensor) -> Tensor:
        return self.net(F.pad(frames, self.pad))


class Decoder(nn.Module):
    """x_hat = D(e_C): (N, D, side/2, side/2) back to (N, 1, rows, cols), linear output."""

    def __init__(self, grid_shape: tuple[int, int], side: int, hidden: int, dim: int) -> None:
        super().__init__()
        left, _, top, _ = _padding(grid_shape, side)
        self.rows = slice(top, top + grid_shape[0])
        self.cols = slice(left, left + grid_shape[1])
        self.net = nn.Sequential(
            nn.Conv2d(dim, hidden, 3, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(hidden, hidden, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, 1, 3, padding=1),
        )

    def forward(self, latents: Tensor) -> Tensor:
        return self.net(latents)[..., self.rows, self.cols]
