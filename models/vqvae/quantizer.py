"""HR-VQVAE's hierarchical residual quantiser (paper 002, section 4.1).

Level i (0-based here) holds M^i codebooks of M words, stored as one (M^(i+1), D) table ordered
parent-major: word ``parent * M + k`` is word k of the codebook its parent word selects. So a
level's chosen index is also the path so far, and the finest level's index is the leaf.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

USAGE_DECAY = 0.99
"""Decay of the running per-word usage that decides which words are dead."""
DEAD_USAGE = 0.01
"""A word whose running share of its parent's positions falls below this is restarted."""


class Quantised(NamedTuple):
    """What quantising N latent vectors gives, one entry per level, coarsest first.

    ``words[i]`` (N, D) is e^i, ``residuals[i]`` (N, D) the xi^(i-1) it approximates and
    ``indices[i]`` (N,) its row in level i's table (the path down to level i).
    """

    words: list[Tensor]
    residuals: list[Tensor]
    indices: list[Tensor]


class HierarchicalQuantiser(nn.Module):
    """Quantises each level's residual with the codebook its parent's word selects."""

    def __init__(self, levels: int, codebook_size: int, dim: int) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        # Finer levels code smaller residuals, so their words start smaller.
        self.tables = nn.ParameterList(
            nn.Parameter(torch.empty(codebook_size ** (i + 1), dim).uniform_(-1, 1) / 4**i)
            for i in range(levels)
        )
        for i in range(levels):
            self.register_buffer(
                f"usage_{i}", torch.full((codebook_size ** (i + 1),), 1 / codebook_size)
            )

    def forward(self, z: Tensor) -> Quantised:
        """Nearest-word search level by level on (N, D) vectors: one matmul against every word
        of the level, the parent's M distances gathered, then ArgMin and a Gather."""
        size = self.codebook_size
        residual, parent = z, z.new_zeros(z.shape[0], dtype=torch.long)
        out = Quantised([], [], [])
        for table in self.tables:
            # ||r||^2 is the same for every word, so argmin needs only ||e||^2 - 2 r.e
            distances = (table.square().sum(-1) - 2 * residual @ table.t()).view(
                -1, table.shape[0] // size, size
            )
            own = distances.gather(1, parent.view(-1, 1, 1).expand(-1, 1, size)).squeeze(1)
            index = parent * size + own.argmin(-1)
            word = F.embedding(index, table)
            out.words.append(word)
            out.residuals.append(residual)
            out.indices.append(index)
            residual, parent = residual - word, index
        return out

    def leaf_vectors(self) -> Tensor:
        """(M^n, D) e_C of every leaf: the sum of the words on its path."""
        leaves = self.tables[-1].shape[0]
        return sum(
            table.repeat_interleave(leaves // table.shape[0], dim=0) for table in self.tables
        )

    @torch.no_grad()
    def restart_dead(self, quantised: Quantised) -> int:
        """Re-seed words that have gone unused with residuals of the batch; returns how many.

        The paper leaves codebook collapse to the hierarchy; with only a few positions per
        parent a word can still lose every position, and then it never gets a gradient. Usage
        is a running share of the parent's positions (1/M when uniform), so the rule does not
        depend on batch size.
        """
        size, restarted = self.codebook_size, 0
        for i, table in enumerate(self.tables):
            usage = getattr(self, f"usage_{i}")
            hits = torch.bincount(quantised.indices[i], minlength=table.shape[0]).float()
            share = hits.view(-1, size) / hits.view(-1, size).sum(-1, keepdim=True).clamp(min=1)
            usage.mul_(USAGE_DECAY).add_((1 - USAGE_DECAY) * share.flatten())
            dead = torch.nonzero(usage < DEAD_USAGE / size).squeeze(1)
            if dead.numel() == 0:
                continue
            residuals = quantised.residuals[i]
            picks = torch.randint(residuals.shape[0], (dead.numel(),), device=residuals.device)
            table[dead] = residuals[picks].to(table.dtype)
            usage[dead] = 1.0 / size
            restarted += dead.numel()
        return restarted
