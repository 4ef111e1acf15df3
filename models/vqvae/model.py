"""The S-HR-VQVAE generator (paper 002): HR-VQVAE codes each frame as a map of leaf indices,
the ST-PixelCNN predicts the next frame's map, the decoder turns predicted leaves into frames.

``predict`` is the low-latency mode: each future frame's positions come out in parallel from
one PixelCNN evaluation, frames one after another (16 sequential evaluations for 16 frames).
``predict_raster`` is the paper's faithful mode: positions in raster order within each frame
(16 x h x w sequential evaluations). Both decode by argmax unless given Gumbel noise.

Frames are (B, T, 1, rows, cols), normalised; outputs are linear. A residual model
(``config.residual``) serves the last measured frame plus the decoded change,
``x_last + D(codes_t) - D(codes_last)``: where the predicted codes stay put the output is
persistence exactly, not the codec's reconstruction of the last frame (about 39 dB, the
bound that had S-HR-VQVAE below persistence at frame 1).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from models.shapes import check_past
from models.vqvae.codec import Decoder, Encoder
from models.vqvae.config import VQVAEConfig
from models.vqvae.pixelcnn import STPixelCNN
from models.vqvae.quantizer import HierarchicalQuantiser, Quantised


class TrainingOutput(NamedTuple):
    """One teacher-forced pass over a whole (B, T) sequence.

    Attributes
    ----------
    reconstruction
        (B, T, 1, rows, cols) x_hat = D(e_C), straight-through to the encoder.
    latents
        (B*T*h*w, D) the encoder's z, as quantised.
    quantised
        Every level's words, residuals and indices for ``latents``.
    targets
        (B*(T-1), h, w) true leaves of frames 1..T-1, what the PixelCNN predicts.
    raster_logits, parallel_logits
        (B*(T-1), leaves, h, w) both heads' logits for ``targets``, from true earlier indices.
    prediction
        (B, F, 1, rows, cols) the future decoded from the parallel head's argmax (eq. 9).
    """

    reconstruction: Tensor
    latents: Tensor
    quantised: Quantised
    targets: Tensor
    raster_logits: Tensor
    parallel_logits: Tensor
    prediction: Tensor


class SHRVQVAE(nn.Module):
    """Encoder, hierarchical quantiser, decoder and ST-PixelCNN of paper 002."""

    streaming = False
    """No single-frame step graph: the window graph is the low-latency mode."""
    raster_sampler = True
    """The faithful mode exports as stage graphs the host drives (``raster_export``)."""

    def __init__(self, config: VQVAEConfig) -> None:
        super().__init__()
        self.config = config
        side, dim = config.padded_side, config.latent_channels
        self.latent_side = side // 2
        self.encoder = Encoder(config.grid_shape, side, config.hidden, dim)
        self.quantiser = HierarchicalQuantiser(config.levels, config.codebook_size, dim)
        self.decoder = Decoder(config.grid_shape, side, config.hidden, dim)
        self.pixelcnn = STPixelCNN(config, self.latent_side)

    def forward(self, frames: Tensor) -> TrainingOutput:
        """Reconstruction, codes and next-frame logits of past-then-future ``frames`` (training)."""
        batch, steps = frames.shape[:2]
        z = self.encoder(frames.flatten(0, 1))
        vectors = z.permute(0, 2, 3, 1).flatten(0, 2)
        quantised = self.quantiser(vectors)
        combined = vectors + (sum(quantised.words) - vectors).detach()  # straight-through
        reconstruction = self.decoder(self._grid(combined, batch * steps))
        leaves = quantised.indices[-1].view(batch, steps, self.latent_side, self.latent_side)
        context = self.pixelcnn.context(leaves)[:, :-1].flatten(0, 1)
        targets = leaves[:, 1:].flatten(0, 1)
        parallel = self.pixelcnn.parallel_logits(context)
        predicted = parallel.argmax(1).view(batch, steps - 1, *targets.shape[1:])
        return TrainingOutput(
            reconstruction=reconstruction.view_as(frames),
            latents=vectors,
            quantised=quantised,
            targets=targets,
            raster_logits=self.pixelcnn.raster_logits(context, targets),
            parallel_logits=parallel,
            prediction=self.decode(predicted[:, self.config.past_frames - 1 :]),
        )

    def predict(self, past: Tensor, noise: Tensor | None = None) -> Tensor:
        """Low-latency rollout: (B, future_frames, 1, rows, cols) from ``past``, each frame's
        positions in parallel. ``noise`` (B, F, leaves, h, w) Gumbel noise samples instead of
        taking the argmax."""
        window = self._encode_past(past)
        last = window[:, -1]
        future = []
        for t in range(self.config.future_frames):
            logits = self.pixelcnn.parallel_logits(self.pixelcnn.next_context(window))
            future.append(self._choose(logits, noise, t))
            window = self._advance(window, future[-1])
        return self._frames(torch.stack(future, 1), past, last)

    def predict_raster(self, past: Tensor, noise: Tensor | None = None) -> Tensor:
        """Faithful rollout (eq. 6): like :meth:`predict`, but each frame's positions are
        chosen one at a time in raster order, each seeing the ones chosen before it."""
        last = self._encode_past(past)[:, -1]
        return self._frames(self.raster_codes(past, noise), past, last)

    def raster_codes(self, past: Tensor, noise: Tensor | None = None) -> Tensor:
        """(B, future_frames, h, w) the leaf maps :meth:`predict_raster` decodes."""
        window = self._encode_past(past)
        side = self.latent_side
        future = []
        for t in range(self.config.future_frames):
            context = self.pixelcnn.next_context(window)
            current = window.new_zeros(past.shape[0], side, side)
            for k in range(side * side):
                row, col = divmod(k, side)
                logits = self.pixelcnn.raster_logits(context, current)
                current[:, row, col] = self._choose(logits, noise, t)[:, row, col]
            future.append(current)
            window = self._advance(window, current)
        return torch.stack(future, 1)

    def encode(self, frames: Tensor) -> Tensor:
        """(B, T, h, w) leaf indices of (B, T, 1, rows, cols) frames."""
        batch, steps = frames.shape[:2]
        z = self.encoder(frames.flatten(0, 1))
        leaves = self.quantiser(z.permute(0, 2, 3, 1).flatten(0, 2)).indices[-1]
        return leaves.view(batch, steps, self.latent_side, self.latent_side)

    def decode(self, leaves: Tensor) -> Tensor:
        """(B, T, 1, rows, cols) frames of (B, T, h, w) leaf indices: D(e_C)."""
        batch, steps = leaves.shape[:2]
        vectors = F.embedding(leaves.flatten(), self.quantiser.leaf_vectors())
        frames = self.decoder(self._grid(vectors, batch * steps))
        return frames.view(batch, steps, *frames.shape[1:])

    def _frames(self, codes: Tensor, past: Tensor, last: Tensor) -> Tensor:
        """The frames served for predicted ``codes`` (B, F, h, w): decoded, or for a residual
        model the last past frame plus the decoded change from ``last``, its codes (B, h, w)."""
        frames = self.decode(codes)
        if not self.config.residual:
            return frames
        return past[:, -1:] + frames - self.decode(last[:, None])

    def _encode_past(self, past: Tensor) -> Tensor:
        check_past(past, self.config.past_frames, self.config.grid_shape)
        return self.encode(past)[:, -self.config.context_frames :]

    def _advance(self, window: Tensor, frame: Tensor) -> Tensor:
        """The last ``context_frames`` leaf maps once ``frame`` is appended."""
        return torch.cat([window, frame[:, None]], 1)[:, -self.config.context_frames :]

    @staticmethod
    def _choose(logits: Tensor, noise: Tensor | None, t: int) -> Tensor:
        return (logits if noise is None else logits + noise[:, t]).argmax(1)

    def _grid(self, vectors: Tensor, frames: int) -> Tensor:
        """(N*h*w, D) vectors as (N, D, h, w) latent maps."""
        side = self.latent_side
        return vectors.view(frames, side, side, -1).permute(0, 3, 1, 2)
