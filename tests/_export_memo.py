"""``torch.onnx.export`` run once per identical module in a test process, its graph reused after.

Tracing a window graph costs ~8 s on two busy cores (half of it the exporter's optimiser), and
some test files export the very same weights twice through the command line (the committed
tiny run in ``test_quantize.py``; an adapted run in ``test_adaptation.py``, exported by
``adapt`` and again by ``export``). The memo keys each export by everything the exporter reads:
the module's structure, its plain attributes (configs), every parameter and buffer, the example
inputs and the export options. On a repeat it writes the graph the first export wrote (weights
inline); the rest of ``models.export`` (its passes, metadata, ``onnx.checker`` and the parity
check against PyTorch on a seeded window) runs as ever, so a wrong graph would still fail.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import onnx
import pytest
import torch
from torch import nn

_SIMPLE = (bool, int, float, str, tuple, list, dict, type(None))


def _digest(module: nn.Module, args: tuple[Any, ...], options: dict[str, Any]) -> str:
    """What the exporter's output depends on, hashed."""
    digest = hashlib.sha256(repr(module).encode())
    for name, sub in module.named_modules():
        plain = {
            k: v
            for k, v in vars(sub).items()
            if not k.startswith("_")
            and (isinstance(v, _SIMPLE) or hasattr(v, "__dataclass_fields__"))
        }
        digest.update(f"{name}:{type(sub).__qualname__}:{sorted(plain.items())!r}".encode())
    tensors = [*module.state_dict().items(), *module.named_buffers()]
    tensors += [(f"arg{k}", a) for k, a in enumerate(args)]
    for name, tensor in tensors:
        if not isinstance(tensor, torch.Tensor):
            digest.update(f"{name}:{tensor!r}".encode())
            continue
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())  # any dtype
    digest.update(repr(sorted(options.items())).encode())
    return digest.hexdigest()


class ExportMemo:
    """The files of the exports made so far in this process, by :func:`_digest`."""

    def __init__(self) -> None:
        self._files: dict[str, bytes] = {}
        self.reused = 0

    @contextmanager
    def active(self) -> Iterator[None]:
        """``torch.onnx.export`` memoised within the ``with`` block."""
        real = torch.onnx.export

        def export(model: nn.Module, args: tuple[Any, ...] = (), f: Any = None, **options: Any):
            path = Path(f)
            key = _digest(model, tuple(args), options)
            if key in self._files:
                self.reused += 1
                path.write_bytes(self._files[key])
                return None
            result = real(model, args, str(path), **options)
            # Kept with its weights inline: the exporter puts them in a file beside the graph,
            # named after it, and a repeat writes a graph of another name.
            self._files[key] = onnx.load(str(path)).SerializeToString()
            return result

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(torch.onnx, "export", export)
            yield
