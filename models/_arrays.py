"""Frames as numpy arrays or torch tensors, recognised without importing torch.

Evaluation of an exported model runs where only the daemon is installed (no torch), yet the
same functions take the tensors of a training run. A tensor can only exist once torch is
imported, so ``sys.modules`` tells whether one may be at hand.
"""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np


def is_tensor(value: Any) -> bool:
    """Whether ``value`` is a torch tensor (False, without importing torch, where torch is not
    loaded)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def as_array(name: str, frames: Any) -> np.ndarray:
    """``frames`` as a numpy array: a tensor is detached and copied to the CPU.

    Raises TypeError naming ``name`` for anything else.
    """
    if isinstance(frames, np.ndarray):
        return frames
    if is_tensor(frames):
        return frames.detach().cpu().numpy()
    raise TypeError(f"'{name}' must be ndarray or Tensor, got {type(frames).__name__}")


def without_gradients() -> AbstractContextManager:
    """``torch.no_grad()`` where torch is loaded (a predictor that may build a graph need not);
    nothing where it is not."""
    torch = sys.modules.get("torch")
    return nullcontext() if torch is None else torch.no_grad()
