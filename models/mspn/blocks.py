"""Building blocks of MSPN (paper 001): explicit-size resizing, error units, the codec and the
encoder-decoder LSTM (EDLSTM) built on it."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

State = tuple[Tensor, Tensor]
"""(hidden, cell) of one EDLSTM, each (B, hidden, rows, cols)."""

_NEGATIVE_SLOPE = 0.2
"""Leaky ReLU slope inside the codec; the paper names no activation for it."""


def resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of (B, C, H, W) to an explicit ``size``.

    An explicit size, not a scale factor, because the pyramid is not a power of two (9 rows
    become 5). With ``align_corners=False`` a 2x reduction is exactly the mean of each 2x2
    block, the paper's "pooling".
    """
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def error_units(frame: Tensor, prediction: Tensor) -> Tensor:
    """``E = concat(ReLU(f - P), ReLU(P - f))`` on channels: separate populations for
    under- and over-prediction, as in PredNet and the paper's section III.A."""
    return torch.cat([torch.relu(frame - prediction), torch.relu(prediction - frame)], dim=1)


def _conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2)


class Codec(nn.Module):
    """The encoder-decoder inside an EDLSTM, with skip connections (eq. 1).

    The encoder halves the grid ``len(widths) - 1`` times; its bottleneck ``v`` is the level's
    high-level semantics. Below the top level, ``v`` is merged with the level above's by one
    convolution (eq. 4, ``v <- F(v, v_higher)``) before decoding, and the merged ``v`` is what
    goes down to the next level. The decoder resizes back to each encoder stage's exact size and
    concatenates that stage (the skip) before its convolution; a last linear convolution gives
    the gate pre-activations.

    Parameters
    ----------
    in_channels, out_channels
        Channels of ``concat(x_t, h_{t-1})`` and of the gates (4 x hidden).
    widths
        Channels of the encoder stages, full grid first; the last is the bottleneck's.
    higher_width
        Channels of the level above's bottleneck, or None at the top level.
    kernel_size
        Kernel of every convolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        widths: tuple[int, ...],
        higher_width: int | None,
        kernel_size: int,
    ) -> None:
        super().__init__()
        self.stem = _conv(in_channels, widths[0], kernel_size)
        self.down = nn.ModuleList(
            _conv(widths[k - 1], widths[k], kernel_size, stride=2) for k in range(1, len(widths))
        )
        self.fuse = (
            None
            if higher_width is None
            else _conv(widths[-1] + higher_width, widths[-1], kernel_size)
        )
        self.up = nn.ModuleList(
            _conv(widths[k] + widths[k - 1], widths[k - 1], kernel_size)
            for k in range(len(widths) - 1, 0, -1)
        )
        self.gates = _conv(widths[0], out_channels, kernel_size)
        self.activation = nn.LeakyReLU(_NEGATIVE_SLOPE)

    def forward(self, x: Tensor, higher: Tensor | None) -> tuple[Tensor, Tensor]:
        """Gate pre-activations on ``x``'s grid, and this level's (merged) bottleneck ``v``."""
        skips = [self.activation(self.stem(x))]
        for conv in self.down:
            skips.append(self.activation(conv(skips[-1])))
        v = skips.pop()
        if self.fuse is not None:
            v = self.activation(self.fuse(torch.cat([v, higher], dim=1)))
        decoded = v
        for conv, skip in zip(self.up, reversed(skips), strict=True):
            upsampled = resize(decoded, skip.shape[-2:])
            decoded = self.activation(conv(torch.cat([upsampled, skip], dim=1)))
        return self.gates(decoded), v


class EDLSTM(nn.Module):
    """An LSTM whose four gates come from a :class:`Codec` on ``concat(x_t, h_{t-1})``
    (eq. 1-3), with a linear convolution from ``h_t`` to the level's predicted frame.

    Linear because frames are normalised, not bounded (models.md [decided]). The forget gate's
    bias starts at 1 so the cell state flows before it is learned, as in the ConvLSTM family.
    """

    def __init__(
        self,
        in_channels: int,
        hidden: int,
        widths: tuple[int, ...],
        higher_width: int | None,
        kernel_size: int,
    ) -> None:
        super().__init__()
        self.hidden = hidden
        self.codec = Codec(in_channels + hidden, 4 * hidden, widths, higher_width, kernel_size)
        self.output = _conv(hidden, 1, kernel_size)
        with torch.no_grad():
            self.codec.gates.bias[hidden : 2 * hidden].fill_(1.0)

    def forward(
        self, x: Tensor, state: State, higher: Tensor | None
    ) -> tuple[Tensor, State, Tensor]:
        """Returns the prediction (B, 1, rows, cols), the new state and the bottleneck ``v``."""
        hidden, cell = state
        gates, v = self.codec(torch.cat([x, hidden], dim=1), higher)
        i, f, o, g = gates.chunk(4, dim=1)
        cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
        hidden = torch.sigmoid(o) * torch.tanh(cell)
        return self.output(hidden), (hidden, cell), v

    def zero_state(self, like: Tensor, size: tuple[int, int]) -> State:
        """All-zero (hidden, cell) for ``like``'s batch, device and dtype."""
        zeros = like.new_zeros(like.shape[0], self.hidden, *size)
        return zeros, zeros
