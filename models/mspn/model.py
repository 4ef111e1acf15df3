"""The MSPN generator (paper 001, Algorithm 1 with the long-term rollout of Fig. 5).

At every step a top-down pass (coarsest level first) makes each level's prediction of the
current frame from the previous frame and errors, the prediction and semantics of the level
above, and its own LSTM state; a bottom-up pass then compares each prediction with the frame
seen at that level. The first ``past_frames`` steps see the observed frames; the next
``future_frames`` see the model's own finest prediction (resized for the higher levels), so
``predict`` is strictly autoregressive and never sees a future frame.

Frames are (B, T, 1, rows, cols), normalised; outputs are linear.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.mspn.blocks import EDLSTM, State, error_units, resize
from models.mspn.config import MSPNConfig
from models.residual import add_to_last, start_at_persistence
from models.shapes import check_past


@dataclass
class MSPNOutput:
    """Every level's prediction at every step, finest level first.

    ``levels[l]`` is (B, past_frames + future_frames, 1, rows_l, cols_l): step ``t`` predicts
    frame ``t`` of the observed-then-future sequence from frames before it only.
    """

    levels: list[Tensor]


class MSPN(nn.Module):
    """Predictive-coding pyramid of :class:`EDLSTM` levels (paper 001, Fig. 3).

    Level ``l``'s input is ``concat(f^l_{t-1}, E^l_{t-1}, E^{l-1}_{t-1}, P^{l+1}_t)`` on its
    own grid (no lower error at level 0, no higher prediction at the top); ``f^l_{t-1}`` is an
    input (models.md [decided]) because in the rollout the finest error is zero by
    construction, so the frame is what carries the fed-back prediction at level 0.
    """

    streaming = False
    """Window mode only: there is no single-frame step graph for this family yet."""

    def __init__(self, config: MSPNConfig) -> None:
        super().__init__()
        self.config = config
        self.sizes = config.level_sizes()
        top = config.levels - 1
        self.levels = nn.ModuleList(
            EDLSTM(
                in_channels=3 + 2 * (level > 0) + (level < top),
                hidden=config.hidden,
                widths=config.widths[: top - level + 1],
                higher_width=config.widths[top - level - 1] if level < top else None,
                kernel_size=config.kernel_size,
            )
            for level in range(config.levels)
        )
        if config.residual:
            for level in self.levels:
                start_at_persistence(level.output)

    def forward(self, past: Tensor) -> MSPNOutput:
        """All levels' predictions over the observed and rolled-out steps (training)."""
        check_past(past, self.config.past_frames, self.config.grid_shape)
        frames = [past.new_zeros(past.shape[0], 1, *size) for size in self.sizes]
        errors = [past.new_zeros(past.shape[0], 2, *size) for size in self.sizes]
        states = [
            level.zero_state(past, size)
            for level, size in zip(self.levels, self.sizes, strict=True)
        ]
        steps = self.config.past_frames + self.config.future_frames
        outputs: list[list[Tensor]] = [[] for _ in self.sizes]
        for t in range(steps):
            predictions, states = self._top_down(frames, errors, states)
            for level, prediction in enumerate(predictions):
                outputs[level].append(prediction)
            if t == steps - 1:
                break
            seen = past[:, t] if t < self.config.past_frames else predictions[0]
            frames = [
                resize(seen, size) if level else seen for level, size in enumerate(self.sizes)
            ]
            errors = [error_units(f, p) for f, p in zip(frames, predictions, strict=True)]
        return MSPNOutput([torch.stack(level, dim=1) for level in outputs])

    def predict(self, past: Tensor) -> Tensor:
        """(B, future_frames, 1, rows, cols) from (B, past_frames, 1, rows, cols)."""
        return self(past).levels[0][:, self.config.past_frames :]

    def _top_down(
        self, frames: list[Tensor], errors: list[Tensor], states: list[State]
    ) -> tuple[list[Tensor], list[State]]:
        """One top-down pass, coarsest level first (Algorithm 1, lines 4-12)."""
        top = len(self.levels) - 1
        predictions: list[Tensor] = []  # coarsest first
        new_states = list(states)
        higher_p: Tensor | None = None
        higher_v: Tensor | None = None
        for level in range(top, -1, -1):
            size = self.sizes[level]
            parts = [frames[level], errors[level]]
            if level > 0:
                parts.append(resize(errors[level - 1], size))
            if higher_p is not None:
                parts.append(resize(higher_p, size))
            higher_p, new_states[level], higher_v = self.levels[level](
                torch.cat(parts, dim=1), states[level], higher_v
            )
            if self.config.residual:
                higher_p = add_to_last(frames[level], higher_p)
            predictions.append(higher_p)
        return predictions[::-1], new_states
