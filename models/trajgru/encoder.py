"""The encoder: three TrajGRU levels under down-sampling blocks, MEA in front of chosen layers,
and the zigzag shortcut from the top layer back to the bottom (eq. 4.1)."""

from __future__ import annotations

from torch import Tensor, nn

from models.trajgru.attention import MotionAttention, MotionMemory
from models.trajgru.blocks import LEVEL_STRIDES, Downsample, Zigzag
from models.trajgru.cell import TrajGRUCell
from models.trajgru.config import TrajGRUConfig


class Encoder(nn.Module):
    """Reads the received frames, oldest first, one time step through all levels at a time."""

    def __init__(self, config: TrajGRUConfig) -> None:
        super().__init__()
        hidden = config.hidden
        inputs = (1, *hidden[:-1])
        self.down = nn.ModuleList(
            Downsample(i, h, s) for i, h, s in zip(inputs, hidden, LEVEL_STRIDES, strict=True)
        )
        self.cells = nn.ModuleList(TrajGRUCell(h, h, config.links) for h in hidden)
        layers = config.encoder_attention_layers if config.takes_times else ()
        self.attention = nn.ModuleDict(
            {str(layer): MotionAttention(hidden[layer - 1]) for layer in layers}
        )
        self.zigzag = Zigzag(hidden[-1], hidden[0], upward=False)

    def forward(self, frames: Tensor, times: Tensor) -> tuple[list[Tensor], list[list[Tensor]]]:
        """``frames`` (B, P, 1, H, W) at ``times`` (B, P).

        Returns the final state of each level (the forecaster's initial state) and each level's
        output at every step (what the forecaster's decoding attention looks back on).
        """
        states: list[Tensor | None] = [None] * len(self.cells)
        outputs: list[list[Tensor]] = [[] for _ in self.cells]
        memories = {layer: MotionMemory() for layer in self.attention}
        for t in range(frames.shape[1]):
            x = frames[:, t]
            for level, (down, cell) in enumerate(zip(self.down, self.cells, strict=True)):
                x = down(x)
                layer = str(level + 1)
                if layer in self.attention:
                    self.attention[layer].remember(memories[layer], x, times[:, t])
                    x = self.attention[layer](memories[layer], x, times[:, t])
                state = states[level]
                if state is None:
                    state = x.new_zeros(x.shape[0], cell.hidden, *x.shape[-2:])
                x = cell(x, state)
                states[level] = x
                outputs[level].append(x)
            states[0] = self.zigzag(states[-1], states[0])
        return states, outputs
