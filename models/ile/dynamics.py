"""The latent linear system of paper 004: ``x_t = A x_{t-1}``, ``z_t = C x_t``.

A is in real Jordan form, one 2x2 rotation-scaling block ``[[a, b], [-b, a]]`` (eigenvalues
``a +- ib``) per pair of state dimensions, so stability is a bound on each pair; C is dense
and absorbs the change of basis (section 2.5). Everything about A is computed in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

EPSILON = 1e-14
"""Keeps ``sqrt(1 - a^2)`` away from sqrt(0) in float64 (section 2.5)."""


def eigenvalues(theta_a: Tensor, theta_b: Tensor) -> tuple[Tensor, Tensor]:
    """Real and imaginary parts of the blocks' eigenvalues, ``a^2 + b^2 <= 1`` always:

    ``a = max((1 - eps) - |theta_a|, 0)``, ``b = max(1 - |theta_b|, 0) sqrt(1 - a^2)``,
    computed in float64 whatever the parameters' dtype.
    """
    theta_a, theta_b = theta_a.double(), theta_b.double()
    a = torch.clamp((1 - EPSILON) - theta_a.abs(), min=0)
    b = torch.clamp(1 - theta_b.abs(), min=0) * torch.sqrt(1 - a.square())
    return a, b


def transition_matrix(theta_a: Tensor, theta_b: Tensor) -> Tensor:
    """A (float64, latent x latent), block diagonal."""
    a, b = eigenvalues(theta_a, theta_b)
    blocks = torch.stack([torch.stack([a, b], -1), torch.stack([-b, a], -1)], -2)
    return torch.block_diag(*blocks)


def pseudo_inverse(matrix: Tensor) -> Tensor:
    """``M^+ = R^-1 Q^T`` of a tall matrix of full column rank, ``M = QR``.

    Not ``torch.linalg.pinv``: its backward builds (rows x rows) projections, 5760 x 5760 for
    a 16-frame window, which made a training step ~100x slower; QR's stays (rows x latent).
    """
    q, r = torch.linalg.qr(matrix)
    return torch.linalg.solve_triangular(r, q.T, upper=True)


class LinearSystem(nn.Module):
    """Parameters of A and C, and the observability rows ``C A^t`` of a window."""

    def __init__(self, latent: int, observed: int) -> None:
        super().__init__()
        pairs = latent // 2
        # Slow decays and a spread of rotation speeds at the start.
        self.theta_a = nn.Parameter(torch.rand(pairs) * 0.1)
        self.theta_b = nn.Parameter(torch.rand(pairs))
        self.c = nn.Parameter(torch.randn(observed, latent) / latent**0.5)

    def observability(self, steps: int) -> Tensor:
        """(steps, D, latent) float64: row block t is ``C A^t``.

        Powers of each block are powers of the complex eigenvalue ``a + ib``, built by
        repeated multiplication (exact zeros for a zero eigenvalue, unlike a polar form).
        """
        a, b = eigenvalues(self.theta_a, self.theta_b)
        real, imag = [torch.ones_like(a)], [torch.zeros_like(b)]
        for _ in range(steps - 1):
            re, im = real[-1], imag[-1]
            real.append(re * a - im * b)
            imag.append(re * b + im * a)
        real, imag = torch.stack(real)[:, None], torch.stack(imag)[:, None]  # (T, 1, pairs)
        c = self.c.double().unflatten(1, (-1, 2))  # (D, pairs, 2)
        first = c[..., 0] * real - c[..., 1] * imag  # C [[re, im], [-im, re]] per block
        second = c[..., 0] * imag + c[..., 1] * real
        return torch.stack([first, second], dim=-1).flatten(-2)

    def operators(
        self, past: int, future: int, *, relative_to_last: bool = False
    ) -> tuple[Tensor, Tensor]:
        """``O^+`` of the past window (latent, past * D) and the future rows
        ``C A^(past + k)`` (future * D, latent), computed in float64, returned in float32.
        ``relative_to_last``: the rows minus the last past row block ``C A^(past - 1)``, the
        departure of each future embedding from the last past one."""
        rows = self.observability(past + future)
        fit = pseudo_inverse(rows[:past].flatten(0, 1))
        ahead = rows[past:] - rows[past - 1] if relative_to_last else rows[past:]
        return fit.float(), ahead.flatten(0, 1).float()
