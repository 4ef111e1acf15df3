"""What every inference backend is to the daemon: a ``Predictor``.

A predictor maps the newest 16 frames (float32 (16, 18, 20), µV) to the next 16 in µV; the
model's normalisation, read from its metadata (fixed, or robust statistics of the recent past
fed in by ``service.inference.scale_updater``), is applied inside, so callers never see model
units. Before a model runs it is checked against the stream it will read: a model trained on
another grid, rate or window would produce confident nonsense, so it is refused by name.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from models.metadata import ModelMetadata, int8_guard
from service.core.checks import check_array
from service.core.errors import EXIT_UNUSABLE, CorticastError, ModelMismatchError
from service.core.grid import (
    DEFAULT_GRID,
    NOMINAL_RATE_HZ,
    PITCH_TOLERANCE,
    RATE_TOLERANCE,
    ElectrodeGrid,
)
from service.core.robust_scale import ROBUST_ONLINE, RobustScale, Stats, normalisation_kind
from service.inference.missing_frames import times_in_order


class BackendUnavailableError(CorticastError, RuntimeError):
    """The backend cannot run on this machine (no GPU, library missing); ``auto`` moves on."""

    exit_code = EXIT_UNUSABLE
    """A backend this host lacks stays missing across restarts."""


class HostResourceError(CorticastError, OSError):
    """The host ran out of something loading a model needs (file descriptors, memory): not
    the file's fault, so not a :class:`ModelMismatchError`; the same file may load once the
    resource is back, so a start that fails so exits 1, which the systemd unit restarts on,
    and a hot swap is answered 503. ``errno`` says which resource."""


@dataclass(frozen=True)
class StreamSpec:
    """What the daemon feeds a predictor: the grid, the nominal rate and the window lengths."""

    grid: ElectrodeGrid = DEFAULT_GRID
    sample_rate_hz: float = NOMINAL_RATE_HZ
    past_frames: int = 16
    future_frames: int = 16


DEFAULT_STREAM = StreamSpec()
"""The rig's stream: 18x20 at 0.5 mm, 277.78 Hz, 16 frames in, 16 out."""


@dataclass(frozen=True)
class PredictorInfo:
    """What runs the model, shown in logs, ``/status`` and every published prediction.

    Attributes
    ----------
    backend
        e.g. ``"onnxruntime-cpu"``, ``"onnxruntime-cuda"``, ``"tensorrt"``, ``"torch-eager"``.
    device
        ``"cpu"`` or the GPU's name.
    precision
        ``"fp32"`` (IEEE FP32: TF32 switched off where a backend has the switch), ``"tf32"``
        (FP32 storage, TF32 tensor-core math) or ``"fp16"``: see :data:`PARITY_TOLERANCE`.
    mode
        ``"window"`` (re-encodes the 16-frame window every call) or ``"stream"`` (carries the
        encoder state and feeds it only the frames it has not seen).
    model
        Family and config, e.g. ``"mr_layer_lstm hidden=[16, 16] kernel_size=3"``.
    model_path, model_sha256
        The file and its content hash: which weights produced a prediction.
    irregular
        The model takes the past frames' times (``predict(..., past_times)``), so it can be
        fed only the frames received (the scheduler's ``irregular`` missing-frame policy).
    """

    backend: str
    device: str
    precision: str
    mode: str
    model: str
    model_path: str
    model_sha256: str
    irregular: bool = False


PARITY_TOLERANCE = {"fp32": 2e-4, "tf32": 1e-2, "fp16": 5e-2}
"""Largest |prediction - CPU FP32 reference| accepted per precision, in normalised units (values
within +-1): FP32 differs by summation order only; TF32 rounds the multiplicands to a 10-bit
mantissa (about 5e-4 each) and FP16 stores them so, errors that 32 recurrent steps compound."""


def parity_tolerance(precision: str) -> float:
    """The :data:`PARITY_TOLERANCE` for ``precision`` (a ``PredictorInfo.precision``)."""
    try:
        return PARITY_TOLERANCE[precision]
    except KeyError:
        raise ValueError(
            f"'precision' must be one of {sorted(PARITY_TOLERANCE)}, got {precision!r}"
        ) from None


@runtime_checkable
class Predictor(Protocol):
    """One backend running one model."""

    info: PredictorInfo

    def predict(
        self,
        window: np.ndarray,
        newest_seq: int | None = None,
        past_times: np.ndarray | None = None,
    ) -> np.ndarray:
        """Future frames (future_frames, rows, cols) float32 µV from the newest past frames
        (past_frames, rows, cols) float32 µV.

        ``newest_seq`` is the ring-buffer sequence number of the window's newest frame;
        streaming predictors use it to feed only new frames, window predictors ignore it.
        ``past_times`` (past_frames,) are the frames' times in frame periods relative to the
        newest nominal frame (:func:`past_times_input`); an irregular model reads them (None
        means regular), the others ignore them.
        """
        ...

    def warmup(self) -> None:
        """Run the model enough times that the next call has its steady-state latency."""
        ...

    def close(self) -> None:
        """Release the session, engine or device memory; idempotent."""
        ...


def check_model_fits(metadata: ModelMetadata, stream: StreamSpec, path: str | Path) -> None:
    """Refuse a model whose grid, pitch, rate or window differs from the stream's, or an int8
    graph without a passed guard record for its kind (``models.metadata.int8_guard``: what an
    int8 graph is judged by, served as configured as under ``serving = "auto"``).

    Raises
    ------
    ModelMismatchError
        Naming every field that differs, with both values; or the file and why its guard
        record does not pass.
    """
    if metadata.precision == "int8":
        try:
            int8_guard(metadata, metadata.graph)
        except ValueError as err:
            raise ModelMismatchError(f"int8 model {str(path)!r}: {err}") from None
    problems = []
    model_grid = (metadata.grid_rows, metadata.grid_cols)
    if model_grid != stream.grid.shape:
        problems.append(f"grid {model_grid[0]}x{model_grid[1]} != stream {stream.grid.rows}x"
                        f"{stream.grid.cols}")  # fmt: skip
    if not math.isclose(metadata.pitch_m, stream.grid.pitch_m, rel_tol=PITCH_TOLERANCE):
        problems.append(f"pitch {metadata.pitch_m:g} m != stream {stream.grid.pitch_m:g} m")
    if not math.isclose(metadata.sample_rate_hz, stream.sample_rate_hz, rel_tol=RATE_TOLERANCE):
        problems.append(
            f"sample rate {metadata.sample_rate_hz:g} Hz != stream {stream.sample_rate_hz:g} Hz"
        )
    if metadata.past_frames != stream.past_frames:
        problems.append(f"past window {metadata.past_frames} != {stream.past_frames} frames")
    if metadata.future_frames != stream.future_frames:
        problems.append(f"horizon {metadata.future_frames} != {stream.future_frames} frames")
    if problems:
        raise ModelMismatchError(
            f"model {str(path)!r} ({metadata.family}) does not fit the stream: "
            + "; ".join(problems)
        )


class NotReadyError(CorticastError, RuntimeError):
    """The predictor cannot predict yet: a robust-online model before its first statistics.

    The scheduler refuses the window with this message instead of predicting.
    """


class NonFiniteOutputError(CorticastError, RuntimeError):
    """A prediction holds NaN or inf (a bad export, an overflow): a predictor fault.

    The scheduler raises it instead of handing the prediction on, so none of it is published,
    scored or fed to the wave estimate and the policy; in the daemon its thread ends as on a
    crash, and the supervisor disarms first, then logs and counts a ``predictor`` fault and
    reloads the model.
    """


class Normaliser:
    """The model's per-electrode affine map, applied into preallocated buffers.

    ``(frames - centre) / scale`` on the way in and ``frames * scale + centre`` on the way out,
    as ``models.data`` does at training time (float32 throughout). A ``"fixed"`` model (kind
    absent: every file before robust-online) carries its ``mean`` and ``scale``; a
    ``"robust-online"`` one carries a schedule (:attr:`online`) and gets its statistics from
    :meth:`set_stats` (``service.inference.scale_updater`` or the fast replay). The pair is
    swapped by one assignment, so a prediction reads either the old pair or the new one, never
    a mix; it normalises its input and denormalises its output with the same pair.

    Raises
    ------
    ModelMismatchError
        The metadata's normalisation has an unknown kind or unusable values.
    """

    def __init__(self, metadata: ModelMetadata) -> None:
        self.shape = (metadata.grid_rows, metadata.grid_cols)
        norm = metadata.normalisation
        self.online: RobustScale | None = None
        self.stats: Stats | None = None
        self.last_used: Stats | None = None
        """The pair the latest :meth:`stats_for_prediction` handed out: the units a scorer
        puts that prediction in."""
        try:
            if normalisation_kind(norm) == ROBUST_ONLINE:
                self.online = RobustScale.from_dict(norm)
                return
            self.stats = self._checked(norm["mean"], norm["scale"])
        except (KeyError, TypeError, ValueError) as err:
            raise ModelMismatchError(f"model normalisation is unusable: {err}") from None

    def set_stats(self, centre: np.ndarray, scale: np.ndarray) -> None:
        """Use ``(centre, scale)`` from the next prediction on (robust-online models only)."""
        if self.online is None:
            raise RuntimeError("set_stats() is for a robust-online model; this one is fixed")
        self.stats = self._checked(centre, scale)

    def stats_for_prediction(self) -> Stats:
        """The pair one prediction uses for its input and output (also kept as
        :attr:`last_used`).

        Raises
        ------
        NotReadyError
            A robust-online model before its first statistics.
        """
        stats = self.stats
        if stats is None:
            window_s, min_s = self.online.window_s, self.online.min_s
            raise NotReadyError(
                f"robust-online normalisation has no statistics yet: it needs {min_s:g} s of "
                f"valid frames (median / MAD over the last {window_s:g} s)"
            )
        self.last_used = stats
        return stats

    @staticmethod
    def normalise_into(frames: np.ndarray, out: np.ndarray, stats: Stats) -> np.ndarray:
        np.subtract(frames, stats[0], out=out)
        np.divide(out, stats[1], out=out)
        return out

    @staticmethod
    def denormalise(frames: np.ndarray, stats: Stats) -> np.ndarray:
        out = np.multiply(frames, stats[1], dtype=np.float32)
        out += stats[0]
        return out

    def _checked(self, centre: object, scale: object) -> Stats:
        pair = (np.asarray(centre, dtype=np.float32), np.asarray(scale, dtype=np.float32))
        for name, array in zip(("mean", "scale"), pair, strict=True):
            if array.shape != self.shape:
                raise ValueError(
                    f"normalisation {name!r} must have shape {self.shape}, got {array.shape}"
                )
            bad = int(np.count_nonzero(~np.isfinite(array)))
            if bad:
                raise ValueError(
                    f"normalisation {name!r} must be finite, it holds {bad} NaN or infinite "
                    f"value{'s' if bad > 1 else ''}"
                )
        if not np.all(pair[1] > 0):
            raise ValueError("normalisation 'scale' must be > 0 everywhere")
        return pair


def normaliser_of(metadata: ModelMetadata, path: str | Path) -> Normaliser:
    """The :class:`Normaliser` of the model file ``path``; an unusable normalisation is
    refused naming the file (a daemon may be loading several)."""
    try:
        return Normaliser(metadata)
    except ModelMismatchError as err:
        raise ModelMismatchError(f"{str(path)!r}: {err}") from None


def check_window(window: np.ndarray, stream: StreamSpec) -> np.ndarray:
    """The input every backend accepts: float32 (past_frames, rows, cols), all finite.

    A NaN would propagate through every recurrent step into every predicted frame, so it is
    refused here, naming the problem, rather than published.
    """
    return check_array(
        "window",
        window,
        shape=(stream.past_frames, *stream.grid.shape),
        dtype=np.float32,
        finite=True,
    )


def check_future(future: np.ndarray, stream: StreamSpec, path: str | Path) -> np.ndarray:
    """A graph's raw output, (1, future_frames, 1, rows, cols): any other shape is refused
    naming the file. A graph that declares a dimension without a fixed size passes the load's
    check of its shapes (``onnx_predictor.check_graph_io``) and may return another count of
    frames, which the blend, the wave stage and the scores would take as the horizon.

    Raises
    ------
    ModelMismatchError
        Naming the file and both shapes.
    """
    expected = (1, stream.future_frames, 1, *stream.grid.shape)
    if future.shape != expected:
        raise ModelMismatchError(
            f"{str(path)!r} returned a prediction of shape {future.shape}, not {expected} "
            f"({stream.future_frames} frames of the {stream.grid.shape} grid): a graph whose "
            "dimensions are not fixed; export it with fixed shapes (corticast export)"
        )
    return future


def regular_past_times(past_frames: int) -> np.ndarray:
    """(past_frames,) float32 times of a window with nothing missing: ``-(P-1), ..., 0``."""
    return np.arange(-(past_frames - 1), 1, dtype=np.float32)


def past_times_input(past_times: np.ndarray | None, metadata: ModelMetadata) -> np.ndarray | None:
    """What to feed a model's ``past_times`` input: None for a model without one; the regular
    times when none are given; else ``past_times`` checked: (past_frames,) finite, <= 0 and
    strictly increasing (times out of order would silently scramble the attention keys)."""
    if not metadata.irregular:
        return None
    if past_times is None:
        return regular_past_times(metadata.past_frames)
    times = check_array(
        "past_times", past_times, shape=(metadata.past_frames,), dtype=np.float32, finite=True
    )
    if not times_in_order(times):
        raise ValueError(
            f"'past_times' must be strictly increasing and <= 0 (frame periods before the "
            f"newest nominal frame), got {np.array2string(times, precision=2)}"
        )
    return times


_hashed: ContextVar[dict[Path, str] | None] = ContextVar("corticast_hashed", default=None)
"""The hashes read inside :func:`hashing_once`, by resolved path; None outside."""


def file_sha256(path: str | Path) -> str:
    """Content hash of a model file (identity in logs; engine and serving cache keys); inside
    :func:`hashing_once`, read once per file."""
    hashed = _hashed.get()
    if hashed is None:
        return _digest(path)
    resolved = Path(path).resolve()
    if resolved not in hashed:
        hashed[resolved] = _digest(resolved)
    return hashed[resolved]


@contextmanager
def hashing_once() -> Iterator[None]:
    """Within the block (in the calling thread), :func:`file_sha256` reads each file once and
    answers later calls from that: a hot swap names the same files to every predictor it
    loads and to its serving probe's cache path and keys. The hashes are the same, so keys
    written outside such a block match. A file changed during the block keeps the hash first
    read: the block is for one swap's seconds, not for good."""
    if _hashed.get() is not None:  # an enclosing block's
        yield
        return
    token = _hashed.set({})
    try:
        yield
    finally:
        _hashed.reset(token)


def _digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_model(metadata: ModelMetadata) -> str:
    """One line naming the family and its config."""
    config = " ".join(f"{key}={value}" for key, value in sorted(metadata.config.items()))
    return f"{metadata.family} {config}"
