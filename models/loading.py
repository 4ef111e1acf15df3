"""Load a trained model for offline scoring: a training run (PyTorch) or an exported ONNX file.

Each model works in its own normalisation. To score several models on the same windows, every
:class:`LoadedModel` takes frames in one shared *frame* normalisation, maps them to µV and into
its own, predicts, and maps the prediction back, so the scores of every model and baseline are
in the same units. This is the offline path (``corticast evaluate``); the daemon's runtime is
``service.inference``. Loading an ``.onnx`` file needs no torch: its predictions are numpy
arrays; a training run's are tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models._arrays import as_array
from models.evaluation import Frames
from models.metadata import PAST_TIMES_INPUT, ModelMetadata, read_model_metadata
from models.windows import Normalisation, regular_times
from service.core.grid import ElectrodeGrid
from service.core.robust_scale import FIXED, normalisation_kind

if TYPE_CHECKING:
    import torch


class LoadedModel:
    """A predictor of normalised windows (B, T, 1, H, W) with its own normalisation.

    Parameters
    ----------
    predict_own
        Past -> future, both in the model's own normalisation (numpy arrays or tensors).
    normalisation
        The model's normalisation (from its checkpoint or ONNX metadata).
    description
        One line saying what was loaded, for logs and reports.
    trained_on
        The data specs it learnt from, as :func:`trained_on` gives them, read from what was
        loaded: a caller that checks them reads the checkpoint or graph no second time.
    stream
        The electrode array and frame rate it was made for, as what was loaded records them;
        None where it records none.
    """

    def __init__(
        self,
        predict_own: Callable[[Frames, Frames | None], Frames],
        normalisation: Normalisation,
        description: str,
        *,
        irregular: bool = False,
        trained_on: Sequence[str] = (),
        stream: tuple[ElectrodeGrid, float] | None = None,
    ) -> None:
        self._predict_own = predict_own
        self.normalisation = normalisation
        self.description = description
        self.irregular = irregular
        self.trained_on = list(trained_on)
        self.stream = stream
        self._frames = normalisation

    def use_frame_normalisation(self, frames: Normalisation) -> None:
        """Take and return frames in ``frames``' normalisation from now on."""
        self._frames = frames

    def predict(self, past: Frames, past_times: Frames | None = None) -> Frames:
        """Future frames in the frame normalisation (see :meth:`use_frame_normalisation`).

        ``past_times`` (B, T) reach a model that takes irregular input (``irregular``; None
        means regular times) and are ignored by the others.
        """
        if self._frames is self.normalisation:
            return self._predict_own(past, past_times)
        own = self.normalisation.normalise(self._frames.denormalise(past))
        future = self._predict_own(own, past_times)
        return self._frames.normalise(self.normalisation.denormalise(future))


def load_predictor(path: str | Path, *, raster: bool = False) -> LoadedModel:
    """A run directory (its newest checkpoint, PyTorch) or an ``.onnx`` file (ONNX Runtime).

    ``raster``: ``path`` is a window graph exported with its raster sampler (S-HR-VQVAE), and
    the sampler is what predicts (``models.vqvae.raster_sampler``, ONNX Runtime).
    """
    path = Path(path)
    if raster:
        return _from_raster(path)
    if path.is_dir():
        return _from_run(path)
    if path.suffix.lower() == ".onnx" and path.is_file():
        return _from_onnx(path)
    if not path.exists():  # a mistyped path is not a file of the wrong kind
        raise FileNotFoundError(f"model {str(path)!r} does not exist")
    raise FileNotFoundError(
        f"model {str(path)!r} must be a training run directory or an .onnx file"
    )


def trained_on(path: str | Path) -> list[str]:
    """The data specs the model at ``path`` (a run directory or an exported graph) learnt from,
    as it records them: its run's ``--data`` and, for an adapted run, the rig's sessions it was
    adapted on. Empty where it records none. A loaded model carries the same
    (``LoadedModel.trained_on``)."""
    path = Path(path)
    if path.is_dir():
        from models.training import load_checkpoint

        return _checkpoint_data(load_checkpoint(path))
    return _graph_data(read_model_metadata(path))


def _checkpoint_data(state: dict[str, Any]) -> list[str]:
    """:func:`trained_on` of a loaded checkpoint."""
    return _learnt(state["config"], state.get("provenance", {}))


def _graph_data(metadata: ModelMetadata) -> list[str]:
    """:func:`trained_on` of an exported graph's metadata."""
    provenance = metadata.provenance
    return _learnt(provenance.get("run", {}), provenance.get("training_data", {}))


def _learnt(run: dict[str, Any], data: dict[str, Any]) -> list[str]:
    """The run's ``--data`` specs, then the rig's sessions an adapted run was adapted on."""
    adapted = data.get("adapted") or {}
    return [*(run.get("data") or []), *(adapted.get("specs") or [])]


def _trained_stream(provenance: dict[str, Any]) -> tuple[ElectrodeGrid, float] | None:
    """The array and rate a run's training windows were of (its provenance's)."""
    if "grid" not in provenance or "sample_rate_hz" not in provenance:
        return None
    return ElectrodeGrid(**provenance["grid"]), float(provenance["sample_rate_hz"])


def _graph_stream(metadata: ModelMetadata) -> tuple[ElectrodeGrid, float]:
    """The array and rate an exported graph serves (its metadata's)."""
    grid = ElectrodeGrid(metadata.grid_rows, metadata.grid_cols, metadata.pitch_m)
    return grid, metadata.sample_rate_hz


def _from_run(run_dir: Path) -> LoadedModel:
    import torch

    from models.registry import family
    from models.training import generator_from_checkpoint, load_checkpoint

    state = load_checkpoint(run_dir)
    run = state["config"]
    generator = generator_from_checkpoint(state)
    irregular = family(run["family"]).irregular
    predict_tensors = generator_predictor(generator, irregular)

    def predict(past: Frames, past_times: Frames | None) -> torch.Tensor:
        times = None if past_times is None else torch.as_tensor(past_times)
        return predict_tensors(torch.as_tensor(past), times)

    description = f"{run['family']} {run['model']} from {run_dir}, step {state['steps_done']}"
    normalisation = _fixed_normalisation(state["normalisation"])
    return LoadedModel(
        predict,
        normalisation,
        description,
        irregular=irregular,
        trained_on=_checkpoint_data(state),
        stream=_trained_stream(state["provenance"]),
    )


def generator_predictor(
    generator: torch.nn.Module, irregular: bool
) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """``predict(past, past_times)`` of a generator in eval mode, without gradients; regular
    times are supplied to a family that takes irregular input when none are given."""
    import torch

    from models import objective

    def predict(past: torch.Tensor, past_times: torch.Tensor | None = None) -> torch.Tensor:
        with torch.no_grad():
            if not irregular:
                return generator.predict(past)
            if past_times is None:
                past_times = objective.regular_times(past.shape[0], past.shape[1])
            return generator.predict(past, past_times)

    return predict


def load_codec_bound(run_dir: str | Path) -> LoadedModel:
    """A training run's codec as a "predictor" of the frames it is given: ``decode(encode(x))``.

    For a family that codes frames (S-HR-VQVAE) this is what a predictor that chose every code
    right would output, so its score on the true future bounds the model's (paper 002 reports
    the HR-VQVAE's reconstruction for that reason). Call ``predict(future)``.
    """
    import torch

    from models.training import generator_from_checkpoint, load_checkpoint

    run_dir = Path(run_dir)
    state = load_checkpoint(run_dir)
    run = state["config"]
    generator = generator_from_checkpoint(state)
    if not (hasattr(generator, "encode") and hasattr(generator, "decode")):
        raise ValueError(f"model family {run['family']!r} has no codec to bound its predictions")

    def reconstruct(frames: torch.Tensor, _times: torch.Tensor | None) -> torch.Tensor:
        with torch.no_grad():
            return generator.decode(generator.encode(frames))

    description = f"{run['family']} codec from {run_dir}, step {state['steps_done']}"
    normalisation = _fixed_normalisation(state["normalisation"])
    return LoadedModel(reconstruct, normalisation, description, trained_on=_checkpoint_data(state))


def _from_raster(path: Path) -> LoadedModel:
    from models.vqvae.raster_sampler import RasterSampler

    sampler = RasterSampler(path)

    def predict(past: Frames, past_times: Frames | None) -> np.ndarray:
        windows = as_array("past", past).astype(np.float32)
        return np.concatenate([sampler.sample(w[None]) for w in windows])

    metadata = sampler.metadata
    description = f"{metadata.family} {metadata.config} raster sampler beside {path}"
    normalisation = _fixed_normalisation(metadata.normalisation)
    return LoadedModel(
        predict,
        normalisation,
        description,
        trained_on=_graph_data(metadata),
        stream=_graph_stream(metadata),
    )


def _from_onnx(path: Path) -> LoadedModel:
    import onnxruntime as ort

    from models.batch_graph import BatchGraphError, batched_session

    metadata = read_model_metadata(path)
    if metadata.graph != "window":
        raise ValueError(
            f"{str(path)!r} is a {metadata.graph!r} graph; score its window graph instead"
        )
    try:  # the whole batch per call, each window's future as batch 1 gives it (bitwise)
        session, how = batched_session(path, threads=2), "batched"
    except BatchGraphError as err:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        how = f"one window per call: {err}"

    def predict(past: Frames, past_times: Frames | None) -> np.ndarray:
        windows = as_array("past", past).astype(np.float32)
        if past_times is None:
            past_times = regular_times(past.shape[0], past.shape[1])
        times = as_array("past_times", past_times).astype(np.float32)
        rows = len(windows) if how == "batched" else 1
        futures = []
        for start in range(0, len(windows), rows):
            feeds = {metadata.input_name: windows[start : start + rows]}
            if metadata.irregular:
                feeds[PAST_TIMES_INPUT] = times[start : start + rows]
            futures.append(session.run(None, feeds)[0])
        return np.concatenate(futures)

    kind = "residual" if metadata.residual else "absolute"
    description = (
        f"{metadata.family} ({kind}) {metadata.config} from {path} (ONNX Runtime, CPU, {how})"
    )
    normalisation = _fixed_normalisation(metadata.normalisation)
    return LoadedModel(
        predict,
        normalisation,
        description,
        irregular=metadata.irregular,
        trained_on=_graph_data(metadata),
        stream=_graph_stream(metadata),
    )


def _fixed_normalisation(data: dict[str, Any]) -> Normalisation:
    """The model's fixed normalisation; a robust-online model has none to share with others.

    Its input scaling depends on each window's recent past, which these windows (already
    normalised in a shared frame normalisation) do not carry: score it with
    ``corticast replay --fast`` instead.
    """
    if normalisation_kind(data) != FIXED:
        raise ValueError(
            f"a {data['kind']!r} model cannot be scored here (windows are compared in one "
            "fixed normalisation); score it with `corticast replay --fast MODEL.onnx`"
        )
    return Normalisation.from_dict(data)
