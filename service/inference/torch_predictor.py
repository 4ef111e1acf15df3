"""PyTorch backend: the reference for parity tests, the GPU fallback, and the "what a user
would do otherwise" baseline of the latency benchmark.

It loads a training run's checkpoint (not an ONNX file) and runs the generator's ``predict``,
either eagerly or, on a GPU, replayed from a captured CUDA graph (static input and output
tensors, one launch per prediction). torch is imported only when this backend is built: the
daemon itself runs without it.

On a GPU, TF32 is switched off (``torch.backends.cuda.matmul.allow_tf32`` and
``torch.backends.cudnn.allow_tf32``, process-wide: cuDNN convolutions default to TF32 on
Ampere and later), so this backend stays an FP32 reference and says "fp32". Every prediction
runs under its device (``torch.cuda.device``), whichever thread calls it. A family whose
``predict`` cannot be captured (one that reads tensor values on the host, or copies host
data to the GPU, inside ``predict``: PyTorch's CUDA-graph rules forbid both) declares why in
a ``cuda_graph_refusal`` class attribute and is refused ``cudagraph`` up front.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from service.inference._window_predictor import WindowPredictor
from service.inference.predictor import (
    DEFAULT_STREAM,
    BackendUnavailableError,
    PredictorInfo,
    StreamSpec,
    describe_model,
    file_sha256,
    regular_past_times,
)

_log = logging.getLogger("corticast.inference")

EXECUTIONS = ("eager", "cudagraph")
"""How the generator runs: called eagerly, or replayed from a captured CUDA graph."""


def cuda_graph_refusal(generator) -> str | None:
    """Why ``generator``'s ``predict`` cannot be captured into a CUDA graph (its class's
    ``cuda_graph_refusal``), or None when it can."""
    return getattr(type(generator), "cuda_graph_refusal", None)


class TorchPredictor(WindowPredictor):
    """A training checkpoint on PyTorch.

    Parameters
    ----------
    run_dir
        Training run directory (its ``checkpoint.pt``), or the checkpoint file itself.
    stream
        What the daemon feeds it; a model that does not fit is refused.
    device
        ``"cpu"`` or ``"cuda"`` (``"cuda:N"`` for another GPU).
    execution
        ``"eager"`` or ``"cudagraph"`` (CUDA only).
    threads
        CPU threads torch may use (intra-op).
    warm
        Run the warm-up at load (and keep-warm, where configured); False leaves both to the
        caller, which calls :meth:`warmup` before the calls it times (a batched replay builds
        this predictor for its ``info`` and never runs it).
    """

    warmup_runs = 20
    """The count this backend has always warmed up with, fewer than ``WARMUP_RUNS``: it is the
    parity reference and a fallback, not the closed loop's usual path."""

    def __init__(
        self,
        run_dir: str | Path,
        stream: StreamSpec = DEFAULT_STREAM,
        *,
        device: str = "cpu",
        execution: str = "eager",
        threads: int = 2,
        warm: bool = True,
    ) -> None:
        try:
            import torch

            from models.export import metadata_from_checkpoint
            from models.training import generator_from_checkpoint, load_checkpoint
        except ImportError as err:
            raise BackendUnavailableError(
                f"the torch backend needs the 'train' extra (pip install corticast[train]): {err}"
            ) from None
        if execution not in EXECUTIONS:
            raise ValueError(f"'execution' must be one of {EXECUTIONS}, got {execution!r}")
        if execution == "cudagraph" and not device.startswith("cuda"):
            raise ValueError(f"'execution' 'cudagraph' needs a CUDA device, got {device!r}")
        path = Path(run_dir)
        checkpoint_dir = path if path.is_dir() else path.parent
        state = load_checkpoint(checkpoint_dir)
        generator = generator_from_checkpoint(state)
        refusal = cuda_graph_refusal(generator) if execution == "cudagraph" else None
        if refusal is not None:
            raise BackendUnavailableError(
                f"{state['config']['family']} cannot run from a CUDA graph ({refusal}); "
                "use backend 'torch-cuda' or an ONNX backend"
            )
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailableError("torch here has no CUDA device")
        super().__init__(metadata_from_checkpoint(state), stream, checkpoint_dir)
        self._torch = torch
        if device == "cpu":
            torch.set_num_threads(threads)
        else:
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        self._device = torch.device(device)
        self._generator = generator.to(self._device)
        shape = (1, stream.past_frames, 1, *stream.grid.shape)
        self._input = np.zeros(shape, dtype=np.float32)
        self._static_input = torch.zeros(shape, device=self._device)
        # An irregular model's second input (regular times until fed); empty for the others.
        self._times = (
            regular_past_times(stream.past_frames)[None] if self.metadata.irregular else None
        )
        self._static_extra = (
            () if self._times is None else (torch.from_numpy(self._times.copy()).to(self._device),)
        )
        self._graph = None
        self._static_output = None
        if execution == "cudagraph":
            try:
                self._capture()
            except BaseException:
                self._graph = self._static_output = None  # release the partial capture's pool
                raise
        self.info = PredictorInfo(
            backend=f"torch-{execution}",
            device=torch.cuda.get_device_name(self._device) if device != "cpu" else "cpu",
            precision="fp32",
            mode="window",
            model=describe_model(self.metadata),
            model_path=str(checkpoint_dir),
            model_sha256=file_sha256(checkpoint_dir / "checkpoint.pt"),
            irregular=self.metadata.irregular,
        )
        self._warm(keep_warm_s=None, at_load=warm)
        _log.info("loaded %s on %s (%s)", self.info.model, self.info.backend, checkpoint_dir)

    def close(self) -> None:
        super().close()
        self._graph = None

    def _run(self) -> np.ndarray:
        torch = self._torch
        # The current CUDA device is per thread: set it in the caller's (scheduler, warm-up).
        on_device = (
            torch.cuda.device(self._device) if self._device.type == "cuda" else nullcontext()
        )
        with on_device, torch.inference_mode():
            self._static_input.copy_(torch.from_numpy(self._input))
            for static in self._static_extra:
                static.copy_(torch.from_numpy(self._times))
            if self._graph is not None:
                self._graph.replay()
                output = self._static_output
            else:
                output = self._generator.predict(self._static_input, *self._static_extra)
            return output.cpu().numpy()

    def _capture(self) -> None:
        """Record one prediction into a CUDA graph (after warm-up on a side stream, as
        PyTorch's CUDA-graph notes require)."""
        torch = self._torch
        torch.cuda.set_device(self._device)  # capture and its side stream on our device
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):
                self._generator.predict(self._static_input, *self._static_extra)
        torch.cuda.current_stream().wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph), torch.inference_mode():
            self._static_output = self._generator.predict(self._static_input, *self._static_extra)
