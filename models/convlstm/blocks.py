"""Building blocks of the paper-000 generators: the ConvLSTM cell, a two-layer stack, the
1x1 output head, and the temporal down/up-sampling of the multi-resolution LSTM.

Structure and parameter counts follow the paper's eq. 3 and Table I exactly; see
``ConvLSTMCell`` for the one term the paper does not write out.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.functional import conv2d

State = tuple[Tensor, Tensor]
"""(hidden, cell) of one ConvLSTM layer, each (B, C, H, W)."""


class ConvLSTMCell(nn.Module):
    """One ConvLSTM layer, eq. 3 of the paper, with Hadamard peephole connections.

    ``i = σ(Wxi*X + Whi*H + Wci∘C + bi)``, ``f`` likewise,
    ``C' = f∘C + i∘tanh(Wxc*X + Whc*H + bc)``, ``o = σ(Wxo*X + Who*H + Wco∘C' + bo)``,
    ``H' = o∘tanh(C')``.

    The peephole weights ``Wci, Wcf, Wco`` are per element (C x H x W). Each peephole also has
    a per-channel offset: Table I's counts need exactly 3C parameters per layer beyond eq. 3
    (4,123,266 = 4,121,856 for eq. 3 + 6 layers x 3C + 2 heads x (2C + 1) at C = 64, and the same
    decomposition gives all six counts; the MR-layer model's increment of exactly 2 x (2C + 1)
    fixes the head size). Zero-initialised, like the peepholes.

    Parameters
    ----------
    in_channels, hidden_channels
        Input and state channels.
    kernel_size
        Square kernel of the input and recurrent convolutions (5 in the paper), odd.
    grid_shape
        (H, W) of the frames: the peepholes are per element.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel_size: int = 5,
        grid_shape: tuple[int, int] = (18, 20),
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"'kernel_size' must be odd, got {kernel_size}")
        self.hidden_channels = hidden_channels
        self.gates = nn.Conv2d(
            in_channels + hidden_channels,
            4 * hidden_channels,
            kernel_size,
            padding=kernel_size // 2,
        )
        self.peephole = nn.Parameter(torch.zeros(3, hidden_channels, *grid_shape))
        self.peephole_offset = nn.Parameter(torch.zeros(3, hidden_channels, 1, 1))
        with torch.no_grad():  # forget gate open at start: state flows before it is learned
            self.gates.bias[hidden_channels : 2 * hidden_channels].fill_(1.0)

    def forward(self, x: Tensor, state: State) -> State:
        hidden, cell = state
        if _exporting():
            gates = self._split_gate_conv(x, hidden)
        else:
            joined = torch.cat([x, hidden], dim=1)
            gates = conv2d(joined, self.gates.weight, self._gate_bias(), padding=self.gates.padding)
        i, f, g, o = gates.chunk(4, dim=1)
        peep = self.peephole
        i = torch.sigmoid(i + peep[0] * cell)
        f = torch.sigmoid(f + peep[1] * cell)
        cell = f * cell + i * torch.tanh(g)
        o = torch.sigmoid(o + peep[2] * cell)
        return o * torch.tanh(cell), cell

    def _split_gate_conv(self, x: Tensor, hidden: Tensor) -> Tensor:
        """The gates' convolution as exported: one convolution of x and one of the hidden
        state, summed. The same weights as one convolution of their concatenation (what
        PyTorch runs: 8 % faster there, one thread), but no per-step copy into a joined
        tensor, and each convolution keeps its own input's channel count. ONNX Runtime runs a
        convolution in its blocked NCHWc layout only when its input channels fill whole blocks
        (8 or 16 floats): the shipped lower layer's 1 + 16 = 17 channels did not and fell back
        to im2col; 16 alone do, and a 1-channel input has an NCHWc kernel of its own. The
        shipped window graph exported this way runs 1.17x faster on one thread, the step graph
        1.14x (``bench.benchmarks.graph_ab``)."""
        weight, padding = self.gates.weight, self.gates.padding
        split = x.shape[1]
        from_x = conv2d(x, weight[:, :split], self._gate_bias(), padding=padding)
        return from_x + conv2d(hidden, weight[:, split:], None, padding=padding)

    def _gate_bias(self) -> Tensor:
        """The convolution's bias with the per-channel peephole offsets added (none for the
        candidate g): the same sum as adding them after the convolution, but an exported graph
        folds it into one constant, three elementwise nodes fewer per cell and step."""
        offset = self.peephole_offset.flatten(1)  # (3, C): i, f, o
        g = torch.zeros_like(offset[0])
        return self.gates.bias + torch.cat([offset[0], offset[1], g, offset[2]])

    def zero_state(self, batch: int, like: Tensor) -> State:
        """All-zero (hidden, cell) on ``like``'s device and dtype."""
        shape = (batch, self.hidden_channels, *self.peephole.shape[2:])
        zeros = like.new_zeros(shape)
        return zeros, zeros


def _exporting() -> bool:
    """Whether the cell is being traced for export, inside a step graph's ``torch.cond``
    branches too: those are traced by dynamo, which answers ``torch.onnx.is_in_onnx_export()``
    with a constant False (so the step graph's cells were exported in the training form) and
    ``torch.compiler.is_exporting()`` with True."""
    return torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting()


class ConvLSTMStack(nn.Module):
    """Two ConvLSTM layers; the lower reads the input, the upper reads the lower's hidden state.

    ``step(x, states, update_upper=False)`` holds the upper layer's state instead of updating it:
    the temporal skip of the LSTM with multi-resolution layers.
    """

    def __init__(
        self,
        in_channels: int,
        hidden: tuple[int, int],
        kernel_size: int,
        grid_shape: tuple[int, int],
    ) -> None:
        super().__init__()
        self.lower = ConvLSTMCell(in_channels, hidden[0], kernel_size, grid_shape)
        self.upper = ConvLSTMCell(hidden[0], hidden[1], kernel_size, grid_shape)

    def zero_state(self, like: Tensor) -> list[State]:
        batch = like.shape[0]
        return [self.lower.zero_state(batch, like), self.upper.zero_state(batch, like)]

    def step(self, x: Tensor, states: list[State], update_upper: bool = True) -> list[State]:
        lower = self.lower(x, states[0])
        upper = self.upper(lower[0], states[1]) if update_upper else states[1]
        return [lower, upper]


class OutputHead(nn.Module):
    """The paper's 1x1 "deconvolution": a weighted sum of both layers' feature maps, then tanh
    (times ``span``: 1 for a frame, ``models.residual.RESIDUAL_SPAN`` for a departure)."""

    def __init__(self, hidden: tuple[int, int], span: float = 1.0) -> None:
        super().__init__()
        self.project = nn.Conv2d(sum(hidden), 1, kernel_size=1)
        self.span = span

    def forward(self, states: list[State]) -> Tensor:
        out = torch.tanh(self.project(torch.cat([s[0] for s in states], dim=1)))
        return out if self.span == 1.0 else self.span * out


def downsample_time(frames: Tensor) -> Tensor:
    """Eq. 4: scale-1 frames at even times, the mean of each frame and the one before it.

    With 1-based times, a sequence ``x_1..x_T`` (T even) gives ``x¹_2, x¹_4, ..., x¹_T`` with
    ``x¹_i = (x_{i-1} + x_i) / 2``: causal, so the coarse scale adds no delay.
    Input and output are (B, T, C, H, W) and (B, T/2, C, H, W).
    """
    return 0.5 * (frames[:, 0::2] + frames[:, 1::2])


def upsample_time(coarse: Tensor, before: Tensor) -> Tensor:
    """Interpolate scale-1 frames back to every time step (the paper's ``u(x¹)``).

    ``coarse`` holds ``x¹`` at the even times of a stretch of 2K steps; ``before`` is the
    scale-1 frame at the even time just before the stretch (for the first odd step). Even steps
    take the coarse frame, odd steps the mean of their even neighbours.
    Returns (B, 2K, C, H, W).
    """
    previous = torch.cat([before.unsqueeze(1), coarse[:, :-1]], dim=1)
    odd = 0.5 * (previous + coarse)
    return torch.stack([odd, coarse], dim=2).flatten(1, 2)
