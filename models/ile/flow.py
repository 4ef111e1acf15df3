"""The invertible network of paper 004: squeezes and affine couplings, with an exact inverse
and the log-determinant of the encoding's Jacobian.

Glow-like without actnorm or 1x1 convolutions (paper 004, section 3.2); each coupling's
unimodular mixing ``P_i`` is a fixed channel shuffle. There is no early factor-out: the whole
360-dimensional embedding goes through the linear system.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.ile.config import SQUEEZES, ILEConfig


def squeeze(x: Tensor, factor: tuple[int, int]) -> Tensor:
    """(N, C, H, W) -> (N, C * r * c, H / r, W / c): each r x c patch becomes channels."""
    n, channels, height, width = x.shape
    rows, cols = factor
    x = x.reshape(n, channels, height // rows, rows, width // cols, cols)
    return x.permute(0, 1, 3, 5, 2, 4).reshape(n, channels * rows * cols, height // rows, -1)


def unsqueeze(x: Tensor, factor: tuple[int, int]) -> Tensor:
    """Exact inverse of :func:`squeeze`."""
    n, channels, height, width = x.shape
    rows, cols = factor
    x = x.reshape(n, channels // (rows * cols), rows, cols, height, width)
    return x.permute(0, 1, 4, 2, 5, 3).reshape(n, -1, height * rows, width * cols)


class AffineCoupling(nn.Module):
    """``h -> P h``, then the second half scaled and shifted by a network of the first half.

    ``log s = tanh(raw)`` bounds every layer's scale to [1/e, e], so ``s`` is never zero and
    the inverse never divides by a vanishing number. The network's last convolution starts at
    zero: every coupling starts as the shuffle alone.
    """

    def __init__(self, channels: int, hidden: int, seed: int) -> None:
        super().__init__()
        self.kept = channels // 2
        changed = channels - self.kept
        order = torch.randperm(channels, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("order", order, persistent=False)
        self.register_buffer("inverse_order", torch.argsort(order), persistent=False)
        self.net = nn.Sequential(
            nn.Conv2d(self.kept, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, 2 * changed, 3, padding=1),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def _scale_shift(self, kept: Tensor) -> tuple[Tensor, Tensor]:
        raw, shift = self.net(kept).chunk(2, dim=1)
        return torch.tanh(raw), shift

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """The layer's output and ``sum log|s|`` per sample (N,)."""
        kept, changed = h[:, self.order].split([self.kept, h.shape[1] - self.kept], dim=1)
        log_s, shift = self._scale_shift(kept)
        out = torch.cat([kept, changed * torch.exp(log_s) + shift], dim=1)
        return out, log_s.flatten(1).sum(dim=1)

    def inverse(self, out: Tensor) -> Tensor:
        kept, changed = out.split([self.kept, out.shape[1] - self.kept], dim=1)
        log_s, shift = self._scale_shift(kept)
        h = torch.cat([kept, (changed - shift) * torch.exp(-log_s)], dim=1)
        return h[:, self.inverse_order]


class Flow(nn.Module):
    """Frames (N, 1, rows, cols) <-> embeddings (N, rows * cols), exactly invertible.

    Each squeeze of ``SQUEEZES`` is followed by ``coupling_layers`` couplings.
    """

    def __init__(self, config: ILEConfig) -> None:
        super().__init__()
        self.grid_shape = config.grid_shape
        self.levels = nn.ModuleList()
        channels = 1
        for level, (rows, cols) in enumerate(SQUEEZES):
            channels *= rows * cols
            self.levels.append(
                nn.ModuleList(
                    AffineCoupling(channels, config.hidden, seed=level * 1000 + layer)
                    for layer in range(config.coupling_layers)
                )
            )

    def forward(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """Embeddings (N, D) and ``log |det d embedding / d frame|`` (N,)."""
        h, log_det = frames, frames.new_zeros(frames.shape[0])
        for factor, couplings in zip(SQUEEZES, self.levels, strict=True):
            h = squeeze(h, factor)
            for coupling in couplings:
                h, layer_log_det = coupling(h)
                log_det = log_det + layer_log_det
        return h.flatten(1), log_det

    def inverse(self, embeddings: Tensor) -> Tensor:
        """Frames (N, 1, rows, cols) of embeddings (N, D)."""
        channels = embeddings.shape[1]
        rows, cols = self.grid_shape
        for factor in SQUEEZES:
            rows, cols = rows // factor[0], cols // factor[1]
        h = embeddings.reshape(-1, channels // (rows * cols), rows, cols)
        for factor, couplings in zip(reversed(SQUEEZES), reversed(self.levels), strict=True):
            for coupling in reversed(couplings):
                h = coupling.inverse(h)
            h = unsqueeze(h, factor)
        return h
