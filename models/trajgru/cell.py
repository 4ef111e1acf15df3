"""The TrajGRU cell (thesis eq. 3.3, after Shi et al. 2017).

A flow generator gamma(X_t, H_{t-1}) proposes L flow fields; H_{t-1} is warped along each and
the L warped copies are combined by a 1x1 convolution, which replaces the fixed 3x3
state-to-state convolution of ConvGRU with a learned, location-variant neighbourhood.
"""

from __future__ import annotations

from torch import Tensor, nn, sigmoid, tanh

from models.trajgru._warp import warp

KERNEL = 3
"""Input-to-state and flow-generator kernel (3x3 in Tables A.1 and 5.1)."""
LEAK = 0.2
"""Negative slope of every LeakyReLU of the family (Shi et al.)."""


class TrajGRUCell(nn.Module):
    """One TrajGRU layer step.

    Parameters
    ----------
    in_channels
        Channels of X_t; 0 for a layer without input (the forecaster's top layer).
    hidden
        Channels of H.
    links
        L, the number of flow fields (9 in the thesis on Moving MNIST).
    """

    def __init__(self, in_channels: int, hidden: int, links: int) -> None:
        super().__init__()
        self.hidden, self.links = hidden, links
        pad = KERNEL // 2
        self.input_gates = (
            nn.Conv2d(in_channels, 3 * hidden, KERNEL, padding=pad, bias=False)
            if in_channels
            else None
        )
        self.flow_input = (
            nn.Conv2d(in_channels, hidden, KERNEL, padding=pad, bias=False) if in_channels else None
        )
        self.flow_state = nn.Conv2d(hidden, hidden, KERNEL, padding=pad)
        self.flow_out = nn.Conv2d(hidden, 2 * links, KERNEL, padding=pad)
        # Zero flows at start: every link begins as the identity warp and learns to move.
        nn.init.zeros_(self.flow_out.weight)
        nn.init.zeros_(self.flow_out.bias)
        self.state_gates = nn.Conv2d(links * hidden, 3 * hidden, 1)

    def flows(self, x: Tensor | None, state: Tensor) -> Tensor:
        """gamma(X_t, H_{t-1}): (B, L, 2, H, W) flows in pixels."""
        features = self.flow_state(state)
        if x is not None:
            features = features + self.flow_input(x)
        flows = self.flow_out(nn.functional.leaky_relu(features, LEAK))
        return flows.reshape(-1, self.links, 2, *state.shape[-2:])

    def forward(self, x: Tensor | None, state: Tensor) -> Tensor:
        """H_t from X_t (or None) and H_{t-1}."""
        hz, hr, hh = self.state_gates(warp(state, self.flows(x, state))).chunk(3, dim=1)
        xz = xr = xh = 0.0
        if x is not None:
            xz, xr, xh = self.input_gates(x).chunk(3, dim=1)
        update = sigmoid(xz + hz)
        reset = sigmoid(xr + hr)
        candidate = tanh(xh + reset * hh)
        return (1.0 - update) * candidate + update * state
