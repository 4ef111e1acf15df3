"""The continuous-time part of a TrajGRU-ODE decoder layer (thesis eqs. 4.3-4.4).

A latent trajectory H_ode starts from the encoder's state and follows dH/dt = f(H), f = four
3x3 convolutions with tanh between them (Fig. 4.5). It is integrated by a fixed-step solver
unrolled in the graph (no adaptive solver, no ONNX Loop): each interval between consecutive
times is cut into ``steps`` equal sub-steps, so the step size is the REAL time gap / steps and
a zero gap leaves the state unchanged. The difference representation D = W * [H_ode(t_{i-1}),
H_ode(t_i)] (eq. 4.3) then enters GRU-like extended gates with the TrajGRU state (eq. 4.4).

H_mid of eq. 4.4 is undefined in the thesis. [decided] H_mid = H_TrajGRU(t_i): the extended
gates are a GRU whose input is D and whose hidden state is the TrajGRU output, so Z_ode keeps
the TrajGRU state and 1 - Z_ode lets in the ODE-informed candidate, as z and 1 - z do in a GRU.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn, sigmoid, tanh

SOLVERS = ("euler", "rk4")


class _ODEFunction(nn.Sequential):
    """f(H) of dH/dt = f(H): conv3x3, tanh, conv3x3, tanh, conv3x3, tanh, conv3x3."""

    def __init__(self, channels: int) -> None:
        layers: list[nn.Module] = []
        for k in range(4):
            layers.append(nn.Conv2d(channels, channels, 3, padding=1))
            if k < 3:
                layers.append(nn.Tanh())
        super().__init__(*layers)


class ODEBlock(nn.Module):
    """The latent ODE and the extended gates of one TrajGRU-ODE layer.

    Parameters
    ----------
    channels
        Channels of the layer's state.
    solver
        ``"euler"`` (the thesis) or ``"rk4"``.
    steps
        Fixed sub-steps per interval between consecutive times.
    """

    def __init__(self, channels: int, solver: str, steps: int) -> None:
        super().__init__()
        self.solver, self.steps = solver, steps
        self.function = _ODEFunction(channels)
        self.difference = nn.Conv2d(2 * channels, channels, 1)  # W_combine^ode
        self.state_gates = nn.Conv2d(channels, 3 * channels, 1)  # W_h^ode, 1x1 (Table 5.1)
        # W_d^ode, 3x3 (Table 5.1); the biases B^ode live in state_gates.
        self.difference_gates = nn.Conv2d(channels, 3 * channels, 3, padding=1, bias=False)

    def evolve(self, state: Tensor, gap: Tensor) -> Tensor:
        """H_ode after ``gap`` (B,) frame periods from ``state`` (B, C, H, W)."""
        h = (gap / self.steps).reshape(-1, 1, 1, 1)
        for _ in range(self.steps):
            if self.solver == "euler":
                state = state + h * self.function(state)
            else:
                k1 = self.function(state)
                k2 = self.function(state + 0.5 * h * k1)
                k3 = self.function(state + 0.5 * h * k2)
                k4 = self.function(state + h * k3)
                state = state + h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        return state

    def forward(self, trajgru_state: Tensor, ode_before: Tensor, ode_now: Tensor) -> Tensor:
        """H(t_i) from H_TrajGRU(t_i) and the latent states at t_{i-1} and t_i (eq. 4.4)."""
        difference = self.difference(torch.cat([ode_before, ode_now], dim=1))
        hz, hr, hh = self.state_gates(trajgru_state).chunk(3, dim=1)
        dz, dr, dh = self.difference_gates(difference).chunk(3, dim=1)
        update = sigmoid(hz + dz)
        reset = sigmoid(hr + dr)
        candidate = tanh(hh + reset * dh)
        return update * trajgru_state + (1.0 - update) * candidate
