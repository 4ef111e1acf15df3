"""Build the configured predictor; ``auto`` takes the fastest backend this machine can run.

Order for ``auto`` (window mode): TensorRT > ONNX Runtime CUDA > PyTorch CUDA graph (only when
a training checkpoint is configured) > ONNX Runtime CPU. Stream mode (the step graph) and raster
mode (S-HR-VQVAE's host-driven sampler, ``service.inference.raster_predictor``) run on ONNX Runtime,
CUDA before CPU. Each backend that cannot run here is logged with its reason, and
the choice is logged at start, so an operator sees why the daemon runs where it does.

``auto`` fails over on any failure of a candidate, not only a missing library: an engine that
does not parse, build or deserialize, a CUDA error, a failed capture. The next candidate is
tried; only when none runs does it raise, naming each one's reason. Not on a host out of file
descriptors or memory (``service.inference.resource_failures``): that is no candidate's fault,
and failing over on it would leave a slower backend serving until the next restart, or end
in "no backend can run here", which systemd does not restart on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from service.inference.predictor import (
    BackendUnavailableError,
    ModelMismatchError,
    Predictor,
    StreamSpec,
)
from service.inference.resource_failures import raise_if_host_failure

if TYPE_CHECKING:  # service.inference.settings imports this module for BACKENDS
    from service.inference.settings import ModelSettings

_log = logging.getLogger("corticast.inference")

BACKENDS = (
    "auto",
    "tensorrt",
    "onnxruntime-tensorrt",
    "onnxruntime-cuda",
    "torch-cudagraph",
    "torch-cuda",
    "onnxruntime-cpu",
    "torch-cpu",
)
AUTO_ORDER = {
    "window": ("tensorrt", "onnxruntime-cuda", "torch-cudagraph", "onnxruntime-cpu"),
    "stream": ("onnxruntime-cuda", "onnxruntime-cpu"),
    "raster": ("onnxruntime-cuda", "onnxruntime-cpu"),
}
SERVING_MODES = tuple(AUTO_ORDER)
"""How the model is fed ([model] mode): the whole window each call, the frames it has not
seen (step graph), or the raster sampler's host loop."""


def create_predictor(
    backend: str,
    mode: str,
    *,
    model_path: Path,
    step_path: Path | None = None,
    checkpoint: Path | None = None,
    stream: StreamSpec,
    threads: int = 2,
    device_id: int = 0,
    precision: str = "auto",
    engine_cache_dir: Path = Path("~/.cache/corticast/engines"),
    keep_warm_s: float | None = 1.0,
    reprime_every_frames: int | None = None,
    warm: bool = True,
) -> Predictor:
    """The predictor ``backend`` names (or the first that runs here, for ``"auto"``).

    Raises
    ------
    BackendUnavailableError
        If the named backend (or every candidate of ``auto``) cannot run here; for ``auto``
        the message names each candidate's reason.
    ModelMismatchError
        If the model does not fit the stream (for ``auto``: a candidate refused the model and
        none ran it).
    HostResourceError
        If the host ran out of file descriptors or memory loading it (``auto`` tries no
        other candidate then).
    ValueError
        For a backend that does not exist, or does not support ``mode``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"'backend' must be one of {BACKENDS}, got {backend!r}")
    if mode not in AUTO_ORDER:
        raise ValueError(f"'mode' must be one of {SERVING_MODES}, got {mode!r}")
    if mode != "window" and backend not in ("auto", *AUTO_ORDER[mode]):
        raise ValueError(
            f"backend {backend!r} runs window mode only; {mode} mode runs on {AUTO_ORDER[mode]}"
        )
    if mode == "stream" and step_path is None:
        raise ValueError("stream mode needs the model's step graph ('step_path')")

    def build(name: str) -> Predictor:
        return _FACTORIES[name](
            model_path=step_path if mode == "stream" else model_path,
            mode=mode,
            checkpoint=checkpoint,
            stream=stream,
            threads=threads,
            device_id=device_id,
            precision=precision,
            engine_cache_dir=engine_cache_dir,
            keep_warm_s=keep_warm_s,
            reprime_every_frames=reprime_every_frames,
            warm=warm,
        )

    if backend != "auto":
        predictor = build(backend)
        _log.info("inference backend %s (configured): %s", backend, predictor.info)
        return predictor
    reasons = []
    model_faults = 0  # candidates that refused the model itself (not this machine)
    for name in AUTO_ORDER[mode]:
        try:
            predictor = build(name)
        except BackendUnavailableError as err:
            # DEBUG: on a CPU-only host the GPU backends are missing at every start, by design;
            # `corticast doctor` shows the GPU extra and every backend's reason.
            _log.debug("backend %s unavailable: %s", name, err)
            reasons.append(f"{name}: {err}")
            continue
        except Exception as err:  # present but broken here: say so loudly, then try the next
            # Unless the host ran out of descriptors or memory: no fault of this backend, it
            # would leave a worse one serving, or end as "none can run here" (exit 2).
            raise_if_host_failure(err, f"cannot load the model on {name}")
            _log.warning(
                "backend %s failed, trying the next: %s: %s", name, type(err).__name__, err
            )
            reasons.append(f"{name}: {type(err).__name__}: {err}")
            model_faults += isinstance(err, ModelMismatchError)
            continue
        skipped = (
            f"; skipped {len(reasons)} unavailable here: `corticast doctor` or DEBUG says why"
            if reasons
            else ""
        )
        _log.info("inference backend %s (auto%s): %s", name, skipped, predictor.info)
        return predictor
    if model_faults:  # the model, not the machine: its exit code says "fix the config"
        raise ModelMismatchError("no inference backend can run this model: " + "; ".join(reasons))
    raise BackendUnavailableError("no inference backend can run here: " + "; ".join(reasons))


def _onnxruntime(device: str) -> Callable[..., Predictor]:
    def build(*, model_path, mode, stream, threads, device_id, precision, engine_cache_dir,
              keep_warm_s, reprime_every_frames, warm, **_unused) -> Predictor:  # fmt: skip
        if mode == "raster":
            from service.inference.raster_predictor import RasterPredictor

            return RasterPredictor(
                model_path, stream, device=device, threads=threads, device_id=device_id, warm=warm
            )
        if mode == "stream":
            from service.inference.streaming_predictor import StreamingPredictor

            return StreamingPredictor(
                model_path, stream, device=device, threads=threads, device_id=device_id,
                keep_warm_s=keep_warm_s, reprime_every_frames=reprime_every_frames, warm=warm,
            )  # fmt: skip
        from service.inference.onnx_predictor import OnnxPredictor

        return OnnxPredictor(
            model_path, stream, device=device, threads=threads, device_id=device_id,
            engine_cache_dir=engine_cache_dir.expanduser(), fp16=_ort_tensorrt_fp16(precision),
            keep_warm_s=keep_warm_s, warm=warm,
        )  # fmt: skip

    return build


def _ort_tensorrt_fp16(precision: str) -> bool:
    """FP16 in ONNX Runtime's TensorRT EP only when asked for: it has no parity check, so
    ``auto`` (FP16 only if it matches FP32) stays FP32 there."""
    return precision == "fp16"


def _tensorrt(*, model_path, stream, device_id, precision, engine_cache_dir, keep_warm_s, warm,
              **_unused) -> Predictor:  # fmt: skip
    from service.inference.tensorrt_predictor import TensorRTPredictor

    return TensorRTPredictor(
        model_path, stream, engine_cache_dir=engine_cache_dir, precision=precision,
        device_id=device_id, keep_warm_s=keep_warm_s, warm=warm,
    )  # fmt: skip


def _torch(device: str, execution: str) -> Callable[..., Predictor]:
    def build(*, checkpoint, stream, threads, device_id, warm, **_unused) -> Predictor:
        if checkpoint is None:
            raise BackendUnavailableError(
                "the torch backends run a training checkpoint; none is configured "
                "([model] checkpoint)"
            )
        from service.inference.torch_predictor import TorchPredictor

        where = f"cuda:{device_id}" if device == "cuda" else "cpu"
        return TorchPredictor(
            checkpoint, stream, device=where, execution=execution, threads=threads, warm=warm
        )

    return build


_FACTORIES: dict[str, Callable[..., Predictor]] = {
    "tensorrt": _tensorrt,
    "onnxruntime-tensorrt": _onnxruntime("tensorrt"),
    "onnxruntime-cuda": _onnxruntime("cuda"),
    "onnxruntime-cpu": _onnxruntime("cpu"),
    "torch-cudagraph": _torch("cuda", "cudagraph"),
    "torch-cuda": _torch("cuda", "eager"),
    "torch-cpu": _torch("cpu", "eager"),
}


def predictor_from_settings(
    model: ModelSettings,
    model_path: Path,
    step_path: Path | None,
    stream: StreamSpec,
    *,
    warm: bool = True,
) -> Predictor:
    """:func:`create_predictor` for ``model_path`` with everything else from ``[model]``:
    what the daemon and the replays run, built one way (``warm`` as there)."""
    return create_predictor(
        model.backend,
        model.mode,
        model_path=Path(model_path),
        step_path=step_path,
        checkpoint=model.checkpoint,
        stream=stream,
        threads=model.threads,
        device_id=model.device_id,
        precision=model.precision,
        engine_cache_dir=model.engine_cache_dir,
        keep_warm_s=model.keep_warm_s,
        reprime_every_frames=model.reprime_every_frames,
        warm=warm,
    )
