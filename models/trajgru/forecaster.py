"""The forecaster: the encoder's levels in reverse (top to bottom) under up-sampling blocks,
TrajGRU or TrajGRU-ODE cells, MDA after chosen layers, and the zigzag shortcut from the bottom
layer back to the top (eq. 4.2). It predicts the nominal frames at times +1..+F."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.trajgru.attention import MotionAttention, MotionMemory
from models.trajgru.blocks import OutputHead, Upsample, Zigzag
from models.trajgru.cell import TrajGRUCell
from models.trajgru.config import TrajGRUConfig
from models.trajgru.ode import ODEBlock


class Forecaster(nn.Module):
    """Generates the future from the encoder's states; the top layer has no input (Shi et al.).

    Modules are indexed by level - 1 (0 = full resolution). ``up[k]`` feeds level k + 1 from
    level k + 2.
    """

    def __init__(self, config: TrajGRUConfig) -> None:
        super().__init__()
        self.config = config
        hidden = config.hidden
        self.cells = nn.ModuleList(
            TrajGRUCell(h if k < len(hidden) - 1 else 0, h, config.links)
            for k, h in enumerate(hidden)
        )
        self.up = nn.ModuleList(Upsample(hidden[k + 1], hidden[k]) for k in range(len(hidden) - 1))
        self.ode = nn.ModuleList(
            ODEBlock(h, config.ode_solver, config.ode_steps) for h in (hidden if config.ode else ())
        )
        layers = config.decoder_attention_layers if config.attention else ()
        self.attention = nn.ModuleDict(
            {str(layer): MotionAttention(hidden[layer - 1]) for layer in layers}
        )
        self.zigzag = Zigzag(hidden[0], hidden[-1], upward=True)
        self.head = OutputHead(hidden[0], config.head_channels)

    def forward(
        self, states: list[Tensor], histories: list[list[Tensor]], past_times: Tensor
    ) -> Tensor:
        """(B, F, 1, H, W) from the encoder's final ``states`` and per-step ``histories`` of
        frames received at ``past_times`` (B, P)."""
        states = list(states)
        ode_states = list(states)
        memories = self._memories(histories, past_times)
        previous = past_times[:, -1]
        # 0 per window, computed from the input: an export (batch 1, static shapes) folds
        # full_like's times into batch-1 constants, which a batched graph cannot stack with
        # the received frames' times (models.batch_graph). ±0 + k is exactly k.
        zero = previous * 0.0
        frames = []
        for k in range(1, self.config.future_frames + 1):
            time = zero + float(k)
            x = None
            for level in reversed(range(len(self.cells))):
                h = self.cells[level](x, states[level])
                if self.ode:
                    before = ode_states[level]
                    ode_states[level] = self.ode[level].evolve(before, time - previous)
                    h = self.ode[level](h, before, ode_states[level])
                layer = str(level + 1)
                if layer in self.attention:
                    self.attention[layer].remember(memories[layer], h, time)
                    h = self.attention[layer](
                        memories[layer], h, time, self.config.attention_window
                    )
                states[level] = h
                x = self.up[level - 1](h) if level else h
            frames.append(self.head(x))
            states[-1] = self.zigzag(states[0], states[-1])
            previous = time
        return torch.stack(frames, dim=1)

    def _memories(
        self, histories: list[list[Tensor]], past_times: Tensor
    ) -> dict[str, MotionMemory]:
        """Each MDA's memory primed with the encoder's last states at its level: enough that
        the first window's velocities and accelerations all have real predecessors."""
        memories = {}
        first = max(0, past_times.shape[1] - self.config.attention_window - 2)
        for layer, attention in self.attention.items():
            memories[layer] = MotionMemory()
            for i in range(first, past_times.shape[1]):
                attention.remember(memories[layer], histories[int(layer) - 1][i], past_times[:, i])
        return memories
