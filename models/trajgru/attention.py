"""Motion-based Attention (thesis section 4.2.3.2): the encoding (MEA) and decoding (MDA) forms.

Each remembered entry E_i (an input of an encoder layer, or a hidden state of a decoder layer)
with its time t_i gets three query-independent keys, computed once when it is remembered:
velocity V_i = f_V((E_i - E_{i-1}) / (t_i - t_{i-1})) (eq. 4.5), acceleration
A_i = f_A((v_i - v_{i-1}) / (t_i - t_{i-1})) (eq. 4.6) with the REAL time gaps, and the
entry's age t_q - t_i at the query time t_q. A content key relates each entry to the query
(eq. 4.7). A linear layer maps the four keys to per-channel scores, softmaxed over the entries
(eq. 4.8); the weighted sum of the entries (eq. 4.9) is concatenated with the query and mixed
by a 1x1 convolution (eq. 4.10).

Decisions where the thesis is silent or ambiguous (models.md, 003):

- The time key is the age t_q - t_i, not the raw timestamp: the same gap pattern then weighs
  the same whatever the query time, and the values stay bounded by the window span.
- The first entry of a memory has no predecessor: its raw velocity is the entry itself and its
  raw acceleration its raw velocity, as eqs. 4.5-4.6 write.
- f_V, f_A: 1x1 convolution, then the spatial mean, so every key is (B, C).
- Eq. 4.9 writes a Hadamard product with the set; the entries are summed after weighting, so
  the attention state has the shape of one entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


@dataclass
class MotionMemory:
    """The entries one attention module has seen, with their cached query-free keys."""

    entries: list[Tensor] = field(default_factory=list)
    times: list[Tensor] = field(default_factory=list)
    velocity_keys: list[Tensor] = field(default_factory=list)
    acceleration_keys: list[Tensor] = field(default_factory=list)
    content: list[Tensor] = field(default_factory=list)
    raw_velocity: Tensor | None = None


def _spatial_mean(x: Tensor) -> Tensor:
    return x.mean(dim=(-2, -1))


class MotionAttention(nn.Module):
    """One MEA or MDA module over entries of ``channels`` channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.f_velocity = nn.Conv2d(channels, channels, 1)
        self.f_acceleration = nn.Conv2d(channels, channels, 1)
        self.w_query = nn.Conv2d(channels, channels, 1)  # W_a1
        self.w_entry = nn.Conv2d(channels, channels, 1)  # W_a2
        self.combine = nn.Linear(4 * channels, channels)  # f_combine
        self.out = nn.Conv2d(2 * channels, channels, 1)  # W_1x1

    def remember(self, memory: MotionMemory, entry: Tensor, time: Tensor) -> None:
        """Add ``entry`` (B, C, H, W) observed at ``time`` (B,) and compute its keys."""
        if memory.entries:
            gap = (time - memory.times[-1]).reshape(-1, 1, 1, 1)
            velocity = (entry - memory.entries[-1]) / gap
            acceleration = (velocity - memory.raw_velocity) / gap
        else:
            velocity = acceleration = entry
        memory.entries.append(entry)
        memory.times.append(time)
        memory.raw_velocity = velocity
        memory.velocity_keys.append(_spatial_mean(self.f_velocity(velocity)))
        memory.acceleration_keys.append(_spatial_mean(self.f_acceleration(acceleration)))
        memory.content.append(self.w_entry(entry))

    def forward(
        self, memory: MotionMemory, query: Tensor, time: Tensor, window: int | None = None
    ) -> Tensor:
        """``query`` (B, C, H, W) at ``time`` (B,) attending over the last ``window`` entries
        of ``memory`` (all when None); returns the new form of the query."""
        last = slice(-window if window else 0, None)
        entries = torch.stack(memory.entries[last])  # (N, B, C, H, W)
        ages = (time - torch.stack(memory.times[last])).unsqueeze(-1)  # (N, B, 1)
        velocity = torch.stack(memory.velocity_keys[last])  # (N, B, C)
        acceleration = torch.stack(memory.acceleration_keys[last])
        content = _spatial_mean(torch.tanh(self.w_query(query) + torch.stack(memory.content[last])))
        keys = torch.cat([velocity, acceleration, ages.expand_as(velocity), content], dim=-1)
        scores = torch.softmax(self.combine(keys), dim=0)  # over the entries, per channel
        attended = (scores[..., None, None] * entries).sum(dim=0)
        return self.out(torch.cat([query, attended], dim=1))
