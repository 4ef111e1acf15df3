"""TrajGRU, TrajGRU-Attention, TrajGRU-ODE and TrajGRU-Attention-ODE (paper 003): one
exportable encoder-forecaster whose config switches pick the variant.

The grid is zero-padded to a multiple of 4 rows and columns (18x20 -> 20x20, [decided]) so
the three levels halve cleanly, and the prediction is cropped back. ``predict`` takes the last
P frames actually received and their times (``models.objective.Batch``); the time gaps enter
the attention keys and the ODE step sizes, and the forecaster's targets are the nominal times
+1..+F. The baseline ignores the times.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional

from models.residual import add_to_last, start_at_persistence
from models.trajgru.config import TrajGRUConfig
from models.trajgru.encoder import Encoder
from models.trajgru.forecaster import Forecaster

MULTIPLE = 4
"""Padded grid sides are multiples of this: two stride-2 levels below the first."""


class TrajGRU(nn.Module):
    """The encoder-forecaster; ``forward`` is ``predict`` (the whole model is the graph)."""

    cuda_graph_refusal = (
        "its warp builds a tensor from Python numbers on the GPU inside predict, a host-to-device "
        "copy that a CUDA-graph capture does not allow"
    )
    """Why ``predict`` cannot be captured into a CUDA graph (read by the torch backend)."""

    def __init__(self, config: TrajGRUConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.forecaster = Forecaster(config)
        if config.residual:
            start_at_persistence(self.forecaster.head[-1])
        rows, cols = config.grid_shape
        extra_rows, extra_cols = -rows % MULTIPLE, -cols % MULTIPLE
        top, left = extra_rows // 2, extra_cols // 2
        self._padding = (left, extra_cols - left, top, extra_rows - top)

    def forward(self, past: Tensor, past_times: Tensor) -> Tensor:
        return self.predict(past, past_times)

    def predict(self, past: Tensor, past_times: Tensor) -> Tensor:
        """(B, future_frames, 1, rows, cols) nominal future frames at +1..+F.

        Parameters
        ----------
        past
            (B, past_frames, 1, rows, cols) the last frames received, oldest first.
        past_times
            (B, past_frames) their times in frame periods relative to the newest nominal frame:
            <= 0 and strictly increasing (``-(P-1)..0`` when nothing was dropped).
        """
        _check_inputs(past, past_times, self.config)
        left, right, top, bottom = self._padding
        frames = functional.pad(past, self._padding)
        states, histories = self.encoder(frames, past_times)
        future = self.forecaster(states, histories, past_times)
        rows, cols = future.shape[-2:]
        future = future[..., top : rows - bottom, left : cols - right]
        return add_to_last(past[:, -1], future) if self.config.residual else future


def _check_inputs(past: Tensor, past_times: Tensor, config: TrajGRUConfig) -> None:
    expected = (config.past_frames, 1, *config.grid_shape)
    if past.dim() != 5 or tuple(past.shape[1:]) != expected:
        raise ValueError(
            f"'past' must have shape (batch, {', '.join(map(str, expected))}), "
            f"got {tuple(past.shape)}"
        )
    if tuple(past_times.shape) != (past.shape[0], config.past_frames):
        raise ValueError(
            f"'past_times' must have shape ({past.shape[0]}, {config.past_frames}), "
            f"got {tuple(past_times.shape)}"
        )
