"""The ILE model (paper 004): every frame embedded by the flow, the past's embeddings fitted by
the least-squares initial state of the linear system, the future decoded by the inverse flow.

Scale (section 2.6): embeddings are divided by ``gamma = mean |y|`` before the linear system.
The paper takes ``gamma_t`` per frame, which is unknown for a frame not yet seen, so here one
gamma per window is computed from the past embeddings only and used for every frame of the
window: the future is encoded (training) and decoded (inference) with the same, causal gamma,
and dividing the future by it is an exactly invertible layer with log-determinant
``-D log gamma`` per frame.

Residual (``config.residual``): the embedding of the last past frame is held and the system
predicts each future embedding's departure from it, ``z_last + (C A^(P+k) - C A^(P-1)) x0``.
That is the same linear system with one more state, a constant offset with eigenvalue 1 set
to the part of ``z_last`` the rank-``latent`` fit leaves out; the prediction is still a mean
in embedding space, so the likelihood of eq. 2 fits it. Absolute, the prediction is the fit's
projection, which with 64 states for 360-dimensional embeddings loses most of the last frame:
ILE latent 64 scored about 26.1 dB at every horizon, 5 dB below persistence at frame 1.

Precision: ``O^+`` and ``C A^t`` are computed in float64 (a pseudo-inverse of a 5760 x latent
matrix whose rows hold powers up to 31 of eigenvalues near the unit circle) and then cast to
float32; the two matmuls and the flow run in float32. In eval mode :meth:`ILE.predict` reads
float32 buffers of the two operators, refreshed on every switch to eval mode and every
``load_state_dict``, so the exported graph is forward flow -> two matmuls -> inverse flow.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.ile.config import ILEConfig
from models.ile.dynamics import LinearSystem
from models.ile.flow import Flow
from models.shapes import check_future, check_past

GAMMA_FLOOR = 1e-6
"""Smallest gamma: keeps a window whose embeddings are all zero (e.g. an all-zero window
through an untrained flow, whose couplings start as shuffles) finite."""


@dataclass
class ILEOutput:
    """The training pass over one window, per sample (B,) unless said otherwise.

    Attributes
    ----------
    prediction
        ``1/2 ||Z_future - C A^(P+k) O^+ Z_past||^2``, summed over future frames and dims.
    log_det
        ``log |det|`` of the future frames' encoding, the gamma layer included.
    predicted
        (B, future_frames, D) predicted future embeddings, in flow units (times gamma).
    """

    prediction: Tensor
    log_det: Tensor
    predicted: Tensor


class ILE(nn.Module):
    """Invertible linear embedding: :class:`Flow` per frame, :class:`LinearSystem` in time."""

    streaming = False
    """Window mode only: x0 is refitted on the whole past window."""

    def __init__(self, config: ILEConfig) -> None:
        super().__init__()
        self.config = config
        self.flow = Flow(config)
        self.system = LinearSystem(config.latent, config.pixels)
        observed = config.past_frames * config.pixels
        self.register_buffer("fit", torch.zeros(config.latent, observed), persistent=False)
        self.register_buffer(
            "rows",
            torch.zeros(config.future_frames * config.pixels, config.latent),
            persistent=False,
        )
        self.register_load_state_dict_post_hook(lambda module, keys: module.refresh_operators())
        self.refresh_operators()

    def operators(self) -> tuple[Tensor, Tensor]:
        """``O^+`` (latent, P*D) and the future rows (F*D, latent) from the current parameters:
        ``C A^(P+k)``, or ``C A^(P+k) - C A^(P-1)`` for a residual model."""
        config = self.config
        return self.system.operators(
            config.past_frames, config.future_frames, relative_to_last=config.residual
        )

    @torch.no_grad()
    def refresh_operators(self) -> None:
        """Copy the current operators into the buffers that eval mode and export read."""
        fit, rows = self.operators()
        self.fit.copy_(fit)
        self.rows.copy_(rows)

    def train(self, mode: bool = True) -> ILE:
        """Also refreshes the operators on the way to eval mode, where ``predict`` reads them."""
        if not mode:
            self.refresh_operators()
        return super().train(mode)

    def _encode_past(self, past: Tensor) -> tuple[Tensor, Tensor]:
        """Past embeddings (B, P*D) and the window's gamma (B, 1)."""
        y, _ = self.flow(past.flatten(0, 1))
        y = y.unflatten(0, past.shape[:2]).flatten(1)
        return y, y.abs().mean(dim=1, keepdim=True).clamp(min=GAMMA_FLOOR)

    def _extrapolate(self, z_past: Tensor, fit: Tensor, rows: Tensor) -> Tensor:
        """(B, F*D) future embeddings from normalised past ones: ``C A^(P+k) O^+ Z``, plus
        the last past embedding for a residual model (whose rows are departures from it)."""
        future = (z_past @ fit.T) @ rows.T
        if not self.config.residual:
            return future
        last = z_past[:, -self.config.pixels :]
        return future + last.repeat(1, self.config.future_frames)

    def forward(self, past: Tensor, future: Tensor) -> ILEOutput:
        """The two terms of the loss (eq. 2, x0 fitted on the past, the future scored)."""
        check_past(past, self.config.past_frames, self.config.grid_shape)
        check_future(future, past, self.config.future_frames)
        y_past, gamma = self._encode_past(past)
        y_future, log_det = self.flow(future.flatten(0, 1))
        y_future = y_future.unflatten(0, future.shape[:2]).flatten(1)
        fit, rows = self.operators()
        predicted = self._extrapolate(y_past / gamma, fit, rows)
        prediction = 0.5 * (y_future / gamma - predicted).square().sum(dim=1)
        frames = future.shape[1]
        gamma_log_det = frames * self.config.pixels * torch.log(gamma.squeeze(1))
        log_det = log_det.view(-1, frames).sum(dim=1) - gamma_log_det
        return ILEOutput(prediction, log_det, (predicted * gamma).unflatten(1, (frames, -1)))

    def decode(self, embeddings: Tensor) -> Tensor:
        """(B, T, 1, rows, cols) frames of (B, T, D) flow embeddings."""
        return self.flow.inverse(embeddings.flatten(0, 1)).unflatten(0, embeddings.shape[:2])

    def predict(self, past: Tensor) -> Tensor:
        """(B, future_frames, 1, rows, cols) from (B, past_frames, 1, rows, cols)."""
        check_past(past, self.config.past_frames, self.config.grid_shape)
        y_past, gamma = self._encode_past(past)
        fit, rows = (self.fit, self.rows) if not self.training else self.operators()
        future = self._extrapolate(y_past / gamma, fit, rows) * gamma
        return self.decode(future.unflatten(1, (self.config.future_frames, -1)))
