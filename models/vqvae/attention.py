"""The ST-PixelCNN's attention context (paper 002, section 4.2: "multi-head attention ... applied
to 3D voxels", causal in time), the ``temporal = "attention"`` option of ``VQVAEConfig``.

Factorised rather than full: in each layer, every latent position of frame t's summary attends
over the same position of the last ``frames`` frames (causal, t itself included), then a 3x3
convolution mixes the summary within the frame. Full attention over all positions of all past
frames costs (T h w)^2 scores per head: in teacher-forced training over 32 frames of 10x10
latents that is 3200^2 = 10M per head and sequence, about 1.3 GB of scores for a batch of 8 with
4 heads, too much for a CPU. Per-position attention costs T^2 h w (0.1M). Space still enters
twice: the keys and values are each past frame's features with their 3x3 neighbourhood, and the
summary's spatial mixing lets L layers reach a (2L + 1)^2 neighbourhood, enough for waves that
move well under a latent cell per frame.

Keys and values are always the past frames' own features, never summaries of earlier frames:
stacked self-attention would see ``frames`` more frames with every layer, so training over 32
frames would show each entry a longer past than the rollout's window of ``frames``. Here every
entry sees exactly its last ``frames`` frames at any depth, in training and in the rollout.

Positional encodings: space, a learned embedding per latent position added to the code
embeddings (a position's habits, e.g. an edge or a dead channel's neighbourhood); time, a
learned bias per head and frame age t - s added to the attention scores. The age form (not an
absolute frame index) means the same weights serve training over 32 frames, each entry seeing
only its own last ``frames`` frames, and the rollout's window of exactly ``frames``. The biases
start ALiBi-like (older frames down-weighted, each head at its own rate).

Every layer adds to a residual path that carries frame t's own code embedding to the heads, as
the conv stack does, so copying the last index ("the index stays where it was") needs no layer
to learn it; the attention branch reads a layer-normed copy, the path itself is not normed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn


class CausalAttentionStack(nn.Module):
    """(B, C, T, h, w) code embeddings -> (B, C, T, h, w); entry t sees frames t - frames + 1..t."""

    def __init__(self, channels: int, layers: int, heads: int, frames: int, side: int) -> None:
        super().__init__()
        self.position = nn.Parameter(0.02 * torch.randn(channels, side, side))
        self.features = nn.Conv2d(channels, channels, 3, padding=1)
        self.layers = nn.ModuleList(_AttentionLayer(channels, heads, frames) for _ in range(layers))

    def forward(self, h: Tensor, *, last: bool = False) -> Tensor:
        """``last``: only entry T - 1 (B, C, 1, h, w), what a rollout step needs; the keys and
        values do not depend on the other entries, so they are not computed."""
        batch, channels, steps, rows, cols = h.shape
        h = h + self.position[:, None]
        frames = h.transpose(1, 2).reshape(batch * steps, channels, rows, cols)
        frames = frames + F.relu(self.features(frames))
        past = frames.view(batch, steps, channels, rows, cols).permute(0, 3, 4, 1, 2)
        past = past.reshape(batch * rows * cols, steps, channels)
        if last:
            h = h[:, :, -1:]
        for layer in self.layers:
            h = layer(h, past)
        return h


class _AttentionLayer(nn.Module):
    """Causal attention per position over the past frames' features, then a 3x3 spatial
    convolution of the summary per frame."""

    def __init__(self, channels: int, heads: int, frames: int) -> None:
        super().__init__()
        self.heads = heads
        self.query_norm = nn.LayerNorm(channels)
        self.past_norm = nn.LayerNorm(channels)
        self.query = nn.Linear(channels, channels)
        self.key_value = nn.Linear(channels, 2 * channels)
        self.out = nn.Linear(channels, channels)
        slopes = 2.0 ** -torch.arange(1, heads + 1, dtype=torch.float32)
        self.age_bias = nn.Parameter(-slopes[:, None] * torch.arange(frames, dtype=torch.float32))
        self.spatial = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h: Tensor, past: Tensor) -> Tensor:
        """``h`` (B, C, Q, h, w) summaries of the last Q of ``past``'s T frames, ``past``
        (B h w, T, C) the frames' features."""
        batch, channels, steps, rows, cols = h.shape
        x = h.permute(0, 3, 4, 2, 1).reshape(batch * rows * cols, steps, channels)
        mixed = self._attend(x, past).view(batch, rows, cols, steps, channels)
        h = h + mixed.permute(0, 4, 3, 1, 2)
        frames = h.transpose(1, 2).reshape(batch * steps, channels, rows, cols)
        frames = frames + F.relu(self.spatial(frames))
        return frames.view(batch, steps, channels, rows, cols).transpose(1, 2)

    def _attend(self, x: Tensor, past: Tensor) -> Tensor:
        """(N, Q, C) -> (N, Q, C): entry q, frame t = T - Q + q, attends over ``past`` (N, T, C)
        entries t - frames + 1..t."""
        sequences, queries, channels = x.shape
        steps = past.shape[1]
        width = channels // self.heads
        query = self.query(self.query_norm(x)).view(sequences, queries, self.heads, width)
        key_value = self.key_value(self.past_norm(past)).view(
            sequences, steps, 2, self.heads, width
        )
        key, value = key_value.permute(2, 0, 3, 1, 4)  # each (N, heads, T, width)
        scores = query.transpose(1, 2) @ key.transpose(-1, -2) * width**-0.5
        mixed = (scores + self._age_bias(queries, steps)).softmax(-1) @ value
        return self.out(mixed.transpose(1, 2).reshape(sequences, queries, channels))

    def _age_bias(self, queries: int, steps: int) -> Tensor:
        """(heads, Q, T): the bias of each frame age, -inf for the future and beyond ``frames``."""
        frames = self.age_bias.shape[1]
        time = torch.arange(steps, device=self.age_bias.device)
        age = time[steps - queries :, None] - time[None, :]
        seen = (age >= 0) & (age < frames)
        bias = self.age_bias[:, age.clamp(0, frames - 1)]
        return bias.masked_fill(~seen, float("-inf"))
