"""The ST-PixelCNN (paper 002, section 4.2) over HR-VQVAE leaf-index maps.

A causal temporal stack summarises frames up to t into a context for frame t + 1 (previous
frames are fully known, so it sees their whole neighbourhoods): residual 3D convolutions over a
fixed span (``temporal = "conv"``) or attention over the last ``past_frames`` frames
(``"attention"``, ``models.vqvae.attention``). The
residual path carries frame t's own embedding straight to the heads, so "the index stays where
it was" (persistence in code space, the commonest transition of a slow signal) is the easiest
prediction to learn, not one that must pass through every layer. Two heads read
it: the raster head adds a masked spatial stack over frame t + 1's own indices (PixelCNN type A
then B masks: left and above only) and gives eq. 6's autoregressive factorisation; the parallel
head reads the context alone, so every position of a frame is predicted at once (the low-latency
mode, models.md [decided]). One softmax per position covers all M^n leaves: the joint of the
levels' indices there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from models.vqvae.attention import CausalAttentionStack
from models.vqvae.config import VQVAEConfig


class MaskedConv2d(nn.Conv2d):
    """A square convolution that sees only positions before the centre in raster order, and
    the centre itself when ``include_centre`` (PixelCNN mask B; mask A without)."""

    def __init__(self, channels: int, kernel_size: int, *, include_centre: bool) -> None:
        super().__init__(channels, channels, kernel_size, padding=kernel_size // 2)
        mask = torch.zeros_like(self.weight)
        centre = kernel_size // 2
        mask[..., :centre, :] = 1
        mask[..., centre, : centre + include_centre] = 1
        self.register_buffer("mask", mask)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class CausalConvStack(nn.ModuleList):
    """(B, C, T, h, w) -> (B, C, T, h, w): residual 3D convolutions left-padded in time.

    A list of its convolutions, so checkpoints keep their ``temporal.<layer>`` names."""

    def __init__(self, channels: int, layers: int, temporal_kernel: int) -> None:
        super().__init__(
            nn.Conv3d(channels, channels, (temporal_kernel, 3, 3), padding=(0, 1, 1))
            for _ in range(layers)
        )
        self.temporal_kernel = temporal_kernel

    def forward(self, h: Tensor, *, last: bool = False) -> Tensor:
        """``last``: only entry T - 1 (B, C, 1, h, w); every entry is computed either way."""
        for conv in self:
            h = h + F.relu(conv(F.pad(h, (0, 0, 0, 0, self.temporal_kernel - 1, 0))))
        return h[:, :, -1:] if last else h


class STPixelCNN(nn.Module):
    """Next-frame leaf logits from past leaf maps (B, T, h, w)."""

    def __init__(self, config: VQVAEConfig, side: int) -> None:
        super().__init__()
        leaves, channels, layers = config.leaves, config.pixelcnn_channels, config.pixelcnn_layers
        self.embed = nn.Embedding(leaves, channels)
        self.temporal: nn.Module
        if config.temporal == "attention":
            self.temporal = CausalAttentionStack(
                channels, layers, config.attention_heads, config.context_frames, side
            )
        else:
            self.temporal = CausalConvStack(channels, layers, config.temporal_kernel)
        self.spatial_in = MaskedConv2d(channels, 3, include_centre=False)
        self.spatial = nn.ModuleList(
            MaskedConv2d(channels, 3, include_centre=True) for _ in range(layers - 1)
        )
        self.raster_head = nn.Conv2d(channels, leaves, 1)
        self.parallel_head = nn.Conv2d(channels, leaves, 1)

    def context(self, leaves: Tensor) -> Tensor:
        """(B, T, C, h, w): entry t summarises frames <= t (left-padded in time)."""
        return self.temporal(self.embed(leaves).permute(0, 4, 1, 2, 3)).transpose(1, 2)

    def next_context(self, leaves: Tensor) -> Tensor:
        """(B, C, h, w): ``context(leaves)[:, -1]``, the summary a rollout step reads, without
        the earlier entries where the stack can skip them (attention)."""
        return self.temporal(self.embed(leaves).permute(0, 4, 1, 2, 3), last=True)[:, :, -1]

    def parallel_logits(self, context: Tensor) -> Tensor:
        """(N, leaves, h, w) from (N, C, h, w) contexts: no index of the frame is needed."""
        return self.parallel_head(context)

    def raster_logits(self, context: Tensor, current: Tensor) -> Tensor:
        """(N, leaves, h, w); position k reads only positions before k of ``current`` (N, h, w)."""
        h = self.spatial_in(self.embed(current).permute(0, 3, 1, 2)) + context
        for conv in self.spatial:
            h = h + conv(F.relu(h))
        return self.raster_head(F.relu(h))
