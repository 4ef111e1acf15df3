"""Per-horizon scores of future-frame predictors, always next to the two baselines.

The paper (000, Fig. 6 and Table I) scores a model by the PSNR between true and predicted
future frames: squared errors averaged over all pixels and sequences (and over all frames for
the Table I number), then ``10 log10(R^2 / MSE)``. R is the project's one fixed scale,
``service.core.scores.DATA_RANGE`` (2 normalised units, the span of a model's tanh output), the
same R a replay and the daemon's live scores use; PSNR means nothing without it, so every report
states it. (The paper's R, the peak-to-peak range of the data, would change with the data
scored and could not be compared across tools.) A model that does
not beat persistence and linear extrapolation at every horizon is not done, so :func:`evaluate`
scores both on the same windows whatever it is given. Given a fitted AR model
(:func:`fit_autoregressive`, fitted on the training split), it scores that too, as ``"ar"``:
the linear predictor a careful user would try first, which a deep model must also beat.

Given each window's live channels (``SplitWindows.iter_batches(..., live=True)``), MSE and PSNR
are over those only, for every predictor alike: the channels the daemon's live scores and a
replay's keep (``service.core.live_channels``: neither dead nor noisy), so an offline figure
means what a live one does. A channel of noise no model can predict would otherwise be most of
the figure, and persistence, which repeats the noise, errs twice as much there as a modest
prediction. SSIM, a structure index over 7x7 neighbourhoods, stays over the whole frame.

Every score is computed in numpy by ``service.core.scores``, so an exported model is scored
where torch is not installed; batches and predictions may be numpy arrays or torch tensors
(a tensor is copied to the CPU), and the numbers are the same either way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.session import Session
from models._arrays import as_array, without_gradients
from models.plots import plot_psnr_curves
from models.windows import SPLITS, Normalisation, split_by_time
from service.core import scores
from service.core.atomic_write import write_atomically
from service.core.autoregressive import DEFAULT_LAGS, FittedAutoregressive
from service.core.checks import check_choice, check_int, check_range, check_type
from service.core.gaps import GAP_THRESHOLD_PERIODS
from service.core.scores import DATA_RANGE, PSNR_SCALE, SSIM_WIN_SIZE, psnr_db

Frames = Any
"""(B, T, 1, H, W) normalised frames: a numpy array or a torch tensor."""
Predictor = Callable[[Frames], Frames]
"""(B, T_past, 1, H, W) -> (B, T_future, 1, H, W), normalised frames."""

BASELINES = ("persistence", "linear")
"""Names :func:`evaluate` gives the two baselines it always adds."""
AR = "ar"
"""Name of the fitted AR baseline, scored when :func:`evaluate` is given one."""
_FORMAT = "corticast.evaluation/3"
"""Version 3: ``scored_fraction``, the share of channels MSE and PSNR are over (version 2 had
none and scored all; version 1 measured R per report)."""
_KEYS = (
    "format",
    "data_range",
    "n_windows",
    "scored_fraction",
    "horizons",
    "baselines",
    "definitions",
    "predictors",
)
"""Keys of :meth:`EvaluationReport.to_dict`."""
_ENTRY_KEYS = ("mse", "psnr", "ssim", "pooled_psnr")
"""Keys of each predictor's entry in it."""
_SUMMED = ("mse", "ssim")
"""Metrics averaged over windows, so their sums are all :func:`evaluate` keeps; PSNR is
derived from the pooled MSE, as in the paper (a mean of per-batch PSNRs would differ)."""
_DEFINITIONS = {
    "psnr": f"10*log10(R^2 / MSE), R = data_range = {DATA_RANGE:g} normalised units (the span of "
    "a model's tanh output, ±4 training s.d.), MSE over each window's scored channels, "
    "averaged over windows per frame",
    "scored_fraction": "mean share of each window's channels that MSE and PSNR are over: those "
    "live (neither dead nor noisy) in its past, as the daemon scores (1: all)",
    "pooled_psnr": "the same with MSE averaged over all predicted frames too (paper, Table I)",
    "ssim": f"skimage structural_similarity per frame, {SSIM_WIN_SIZE}x{SSIM_WIN_SIZE} uniform "
    "window, the same R, averaged over windows",
    "null": "an infinite PSNR: MSE exactly 0 (a perfect prediction)",
}


def persistence(past: Frames, future_frames: int) -> np.ndarray:
    """Repeat the last observed frame ``future_frames`` times.

    The floor every model must clear: at short horizons the next frame is nearly the last one.
    """
    return _baseline(scores.persistence, past, future_frames, min_frames=1)


def linear_extrapolation(past: Frames, future_frames: int) -> np.ndarray:
    """``x_t + k (x_t - x_{t-1})`` for k = 1..``future_frames``: continue the last change.

    Scores what a model gains over following each electrode's local trend.
    """
    return _baseline(scores.linear_extrapolation, past, future_frames, min_frames=2)


def _baseline(
    forecast: Callable[[np.ndarray, int], np.ndarray],
    past: Frames,
    future_frames: int,
    *,
    min_frames: int,
) -> np.ndarray:
    """``forecast`` of ``service.core.scores`` on (B, T, 1, H, W) frames."""
    past = _check_frames("past", past, min_frames=min_frames)
    check_int("future_frames", future_frames, 1)
    return forecast(past[:, :, 0], future_frames)[:, :, None]


def per_horizon(
    name: str, prediction: Frames, target: Frames, channels: np.ndarray | None = None
) -> np.ndarray:
    """Metric ``name`` (one of :data:`METRICS`) of one batch, per predicted frame: (T,) float64.

    The only place metrics are looked up by name. ``prediction`` and ``target`` are
    (B, T, 1, H, W); PSNR and SSIM use R = :data:`DATA_RANGE`. ``channels``: (B, H, W) bool,
    the channels of each window MSE and PSNR are over (None: all); SSIM refuses it.
    """
    try:
        metric = _METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; valid metrics are {list(METRICS)}") from None
    target = _check_frames("target", target, min_frames=1)
    prediction = _check_prediction("prediction", prediction, target)
    if channels is None:
        return metric(prediction[:, :, 0], target[:, :, 0])
    if name == "ssim":
        raise ValueError("'channels' must be None for SSIM, which is over whole frames")
    every_frame = np.broadcast_to(channels[:, None], target[:, :, 0].shape)
    return metric(prediction[:, :, 0], target[:, :, 0], every_frame)


def _mse(prediction: np.ndarray, target: np.ndarray, channels: Any = None) -> np.ndarray:
    """Mean squared error over sequences and pixels (the ``channels`` only, where given)."""
    return scores.squared_error(prediction, target, channels).mean(axis=0)


def _psnr(prediction: np.ndarray, target: np.ndarray, channels: Any = None) -> np.ndarray:
    """PSNR of the MSE pooled over sequences and pixels (not a mean of per-sequence PSNRs)."""
    return psnr_db(_mse(prediction, target, channels))


def _ssim(prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-frame SSIM averaged over sequences (skimage's, uniform ``SSIM_WIN_SIZE`` window)."""
    return scores.ssim(prediction, target).mean(axis=0)


_METRICS: dict[str, Callable[..., np.ndarray]] = {"mse": _mse, "psnr": _psnr, "ssim": _ssim}
METRICS = tuple(_METRICS)
"""Names :func:`per_horizon` accepts."""


@dataclass(frozen=True, eq=False)
class EvaluationReport:
    """Scores of every predictor on the same windows, per predicted frame.

    Parameters
    ----------
    mse, ssim
        Predictor name -> (T,) mean over windows (and pixels, for MSE) at each horizon;
        models first, then the baselines. Stored as read-only float64 copies.
    n_windows
        Windows scored.
    scored_fraction
        Mean share of each window's channels MSE (and so PSNR) is over: its live ones where
        :func:`evaluate` was given them, else 1.

    PSNR and SSIM are at R = :data:`DATA_RANGE`. PSNR is derived from MSE, so the two cannot
    disagree; a perfect prediction has MSE 0 and PSNR +inf, written as ``null`` in JSON (which
    has no infinity).
    """

    mse: dict[str, np.ndarray]
    ssim: dict[str, np.ndarray]
    n_windows: int
    scored_fraction: float = 1.0

    def __post_init__(self) -> None:
        check_type("mse", self.mse, Mapping)
        check_type("ssim", self.ssim, Mapping)
        check_int("n_windows", self.n_windows, 1)
        check_range("scored_fraction", self.scored_fraction, 0.0, 1.0)
        if self.scored_fraction == 0:
            raise ValueError("'scored_fraction' must be > 0: some channel must be scored, got 0")
        if list(self.ssim) != list(self.mse) or not set(BASELINES) <= set(self.mse):
            raise ValueError(
                f"'mse' and 'ssim' must name the same predictors, baselines {BASELINES} "
                f"included, got {list(self.mse)} and {list(self.ssim)}"
            )
        horizons = len(next(iter(self.mse.values())))
        for field in ("mse", "ssim"):
            frozen = {}
            for name, values in getattr(self, field).items():
                array = np.array(values, dtype=np.float64)
                if array.shape != (horizons,) or horizons < 1:
                    raise ValueError(
                        f"'{field}[{name!r}]' must hold one value per horizon "
                        f"({horizons}), got shape {array.shape}"
                    )
                array.flags.writeable = False
                frozen[name] = array
            object.__setattr__(self, field, frozen)

    @property
    def predictors(self) -> list[str]:
        """Predictor names, models first, then the baselines."""
        return list(self.mse)

    @property
    def horizons(self) -> int:
        """Predicted frames per window."""
        return len(self.mse[BASELINES[0]])

    @property
    def psnr(self) -> dict[str, np.ndarray]:
        """Predictor -> (T,) PSNR in dB at each horizon (paper, Fig. 6)."""
        return {name: psnr_db(values) for name, values in self.mse.items()}

    @property
    def pooled_psnr(self) -> dict[str, float]:
        """Predictor -> PSNR in dB of the MSE over all predicted frames (paper, Table I).

        Every horizon holds the same number of pixels, so the pooled MSE is the mean of the
        per-horizon ones.
        """
        return {name: float(psnr_db(np.mean(values))) for name, values in self.mse.items()}

    @property
    def baselines(self) -> list[str]:
        """The baselines scored: :data:`BASELINES`, then :data:`AR` when it was fitted."""
        return [name for name in (*BASELINES, AR) if name in self.mse]

    def beats_baselines(self, name: str) -> bool:
        """Whether model ``name``'s PSNR exceeds every baseline's at every horizon."""
        models = [p for p in self.predictors if p not in self.baselines]
        check_choice("name", name, tuple(models))
        psnr = self.psnr
        return all(bool(np.all(psnr[name] > psnr[baseline])) for baseline in self.baselines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; :meth:`from_dict` restores it. Carries its own definitions, so a
        reader needs no code to know what the numbers mean."""
        psnr, pooled = self.psnr, self.pooled_psnr
        return {
            "format": _FORMAT,
            "data_range": DATA_RANGE,
            "n_windows": self.n_windows,
            "scored_fraction": self.scored_fraction,
            "horizons": self.horizons,
            "baselines": self.baselines,
            "definitions": dict(_DEFINITIONS),
            "predictors": {
                name: {
                    "mse": self.mse[name].tolist(),
                    "psnr": [_finite_or_none(v) for v in psnr[name]],
                    "ssim": self.ssim[name].tolist(),
                    "pooled_psnr": _finite_or_none(pooled[name]),
                }
                for name in self.predictors
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationReport:
        """Rebuild from :meth:`to_dict` output; PSNR is recomputed from the stored MSE."""
        _check_keys("data", data, _KEYS)
        if data["format"] != _FORMAT:
            raise ValueError(f"'data[\"format\"]' must be {_FORMAT!r}, got {data['format']!r}")
        if data["data_range"] != DATA_RANGE:
            raise ValueError(
                f"'data[\"data_range\"]' must be {DATA_RANGE!r} (R of every PSNR and SSIM), "
                f"got {data['data_range']!r}"
            )
        scores = data["predictors"]
        check_type("data['predictors']", scores, Mapping)
        for name, entry in scores.items():
            _check_keys(f"data['predictors'][{name!r}]", entry, _ENTRY_KEYS)
        return cls(
            mse={name: entry["mse"] for name, entry in scores.items()},
            ssim={name: entry["ssim"] for name, entry in scores.items()},
            n_windows=data["n_windows"],
            scored_fraction=data["scored_fraction"],
        )

    def write_json(self, path: str | Path) -> None:
        """Write :meth:`to_dict` as strict JSON (no NaN or Infinity tokens), atomically: a
        run killed while writing leaves the last report whole, not half of a new one."""
        write_atomically(path, json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")

    @classmethod
    def read_json(cls, path: str | Path) -> EvaluationReport:
        """Read a file written by :meth:`write_json`."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_markdown(self) -> str:
        """PSNR table for issue notes: rows = predicted frames and all frames pooled, columns =
        predictors; a caption line states the windows and the scale (R)."""
        psnr, pooled = self.psnr, self.pooled_psnr
        lines = [
            f"PSNR (dB) per predicted frame; {self._caption()}.",
            "",
            "| frame | " + " | ".join(self.predictors) + " |",
            "|---:|" + "---:|" * len(self.predictors),
        ]
        for k in range(self.horizons):
            cells = [_db(psnr[name][k]) for name in self.predictors]
            lines.append(f"| {k + 1} | " + " | ".join(cells) + " |")
        lines.append("| all | " + " | ".join(_db(pooled[n]) for n in self.predictors) + " |")
        return "\n".join(lines) + "\n"

    def plot_psnr(self, path: str | Path) -> None:
        """Write a PNG of PSNR against predicted frame (paper, Fig. 6), baselines dashed."""
        labels = {
            name: f"{name}{' (baseline)' if name in self.baselines else ''}: {_db(value)} dB pooled"
            for name, value in self.pooled_psnr.items()
        }
        dashed = tuple(self.baselines)
        plot_psnr_curves(path, self.psnr, labels, dashed=dashed, caption=self._caption())

    def _caption(self) -> str:
        return (
            f"{self.n_windows} windows, {PSNR_SCALE} (10 log10(R²/MSE)) over "
            f"{self.scored_fraction:.1%} of the channels (the live ones); "
            f"baselines: {', '.join(self.baselines)}"
        )


def evaluate(
    predictors: Mapping[str, Predictor],
    batches: Iterable[tuple[Frames, Frames]],
    *,
    ar: FittedAutoregressive | None = None,
) -> EvaluationReport:
    """Score ``predictors`` and the baselines on the same windows, per predicted frame.

    Parameters
    ----------
    predictors
        Name -> callable mapping a normalised past (B, T_past, 1, H, W) to its future
        (B, T_future, 1, H, W), e.g. ``model.eval().predict``; it gets each batch's past as
        the batch holds it (move it to the model's device inside the callable), without
        gradients where torch is loaded. Names may not be the baselines' (:data:`BASELINES`),
        which are always added.
    batches
        (past, future) pairs of normalised frames, numpy arrays or tensors: e.g.
        ``SplitWindows.batches`` or a DataLoader over ``SessionWindows``; or (past, future,
        live) triples, live (B, H, W) bool the channels of each window MSE and PSNR are over
        (``SplitWindows.iter_batches(..., live=True)``: those the daemon would score).
        Only sums are kept, so held-out sets of any size fit in memory, and one pass is
        all it takes: a generator will do.
    ar
        A fitted AR model (:func:`fit_autoregressive` on the training split, in the same
        normalisation as ``batches``), scored as ``"ar"``; None leaves it out.

    Returns
    -------
    EvaluationReport
        Models in the order given, then ``"persistence"``, ``"linear"`` and ``"ar"``.
    """
    check_type("predictors", predictors, Mapping)
    for name, predict in predictors.items():
        check_type("predictors key", name, str)
        if name in (*BASELINES, AR) or not name:
            raise ValueError(
                f"'predictors' names must be non-empty and not a baseline's {(*BASELINES, AR)}, "
                f"got {name!r}"
            )
        if not callable(predict):
            raise TypeError(f"'predictors[{name!r}]' must be callable, got {predict!r}")
    if ar is not None:
        check_type("ar", ar, FittedAutoregressive)
        if not ar.fitted:
            raise ValueError("'ar' must be fitted: call fit_autoregressive(...) first")
    baselines = (*BASELINES, AR) if ar is not None else BASELINES
    totals = {name: dict.fromkeys(_SUMMED, 0.0) for name in (*predictors, *baselines)}
    n_windows, scored, horizons = 0, 0.0, None
    with without_gradients():
        for index, batch in enumerate(batches):
            given_past, given_future, live = _unpack(index, batch, horizons)
            past, future = (as_array(f"batches[{index}]", p) for p in (given_past, given_future))
            horizons = future.shape[1]
            runs = {
                **predictors,
                "persistence": partial(persistence, future_frames=horizons),
                "linear": partial(linear_extrapolation, future_frames=horizons),
            }
            if ar is not None:
                runs[AR] = partial(autoregressive, ar, future_frames=horizons)
            for name, predict in runs.items():
                # Predictors get the past as the batch holds it; the baselines numpy.
                prediction = predict(past if name in baselines else given_past)
                prediction = _check_prediction(
                    f"the output of predictor {name!r}", prediction, future
                )
                for metric, channels in (("mse", live), ("ssim", None)):
                    values = per_horizon(metric, prediction, future, channels)
                    totals[name][metric] = totals[name][metric] + len(future) * values
            n_windows += len(future)
            scored += len(future) if live is None else float(live.mean(axis=(1, 2)).sum())
    if n_windows == 0:
        raise ValueError("'batches' must yield at least one (past, future) batch, got none")
    return EvaluationReport(
        mse={name: sums["mse"] / n_windows for name, sums in totals.items()},
        ssim={name: sums["ssim"] / n_windows for name, sums in totals.items()},
        n_windows=n_windows,
        scored_fraction=scored / n_windows,
    )


def fit_autoregressive(
    sessions: Session | Sequence[Session],
    normalisation: Normalisation,
    *,
    split: str = "train",
    lags: int = DEFAULT_LAGS,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> FittedAutoregressive:
    """The fitted AR baseline, fitted on ``split`` of each session in ``normalisation``'s units.

    Uses the same time-ordered split as ``SessionWindows``, so the model never sees held-out
    frames. Dropped samples (timestamp steps over ``GAP_THRESHOLD_PERIODS``) and session boundaries
    become a NaN frame, so no fitting row spans them.
    """
    check_choice("split", split, SPLITS)
    check_type("normalisation", normalisation, Normalisation)
    pieces = []
    for session in (sessions,) if isinstance(sessions, Session) else sessions:
        span = split_by_time(session.n_frames, fractions)[split]
        frames = normalisation.normalise(session.frames[span.start : span.stop])
        steps = np.diff(session.timestamps[span.start : span.stop]) * session.sample_rate_hz
        breaks = np.flatnonzero(steps > GAP_THRESHOLD_PERIODS) + 1
        gap = np.full((1, *frames.shape[1:]), np.nan, dtype=np.float32)
        for segment in np.split(frames, breaks):
            pieces.extend([segment, gap])
    return FittedAutoregressive(lags).fit(np.concatenate(pieces))


def autoregressive(ar: FittedAutoregressive, past: Frames, future_frames: int) -> np.ndarray:
    """The fitted AR baseline's forecast: :meth:`FittedAutoregressive.predict` on
    (B, T, 1, H, W) frames, like :func:`persistence`."""
    return _baseline(ar.predict, past, future_frames, min_frames=ar.lags)


def _unpack(
    index: int, batch: Any, horizons: int | None
) -> tuple[Frames, Frames, np.ndarray | None]:
    """``batch`` as checked (past, future) frames, as given (arrays or tensors), and its
    checked live channels (None where it has none); ``horizons`` is the first batch's
    T_future."""
    name = f"batches[{index}]"
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        raise TypeError(
            f"'{name}' must be a (past, future) pair or a (past, future, live) triple, "
            f"got {type(batch).__name__}"
            + (f" of {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        )
    past, future = batch[:2]
    live = _check_live(name, batch[2], future) if len(batch) == 3 else None
    for part, frames, least in (("past", past, 2), ("future", future, 1)):
        if not np.isfinite(_check_frames(f"{name} {part}", frames, min_frames=least)).all():
            raise ValueError(f"'{name}' {part} must be finite, got NaN/inf values")
    if len(past) != len(future) or past.shape[2:] != future.shape[2:]:
        raise ValueError(
            f"'{name}' past and future must share batch size and frame shape, got "
            f"{tuple(past.shape)} and {tuple(future.shape)}"
        )
    if horizons is not None and future.shape[1] != horizons:
        raise ValueError(
            f"'{name}' future must hold {horizons} frames like the first batch, "
            f"got {future.shape[1]}"
        )
    return past, future, live


def _check_live(name: str, live: Any, future: Any) -> np.ndarray:
    """A batch's live channels: (B, H, W) bool like its future's windows and frames, with at
    least one channel in each window (a mean over none is no score)."""
    live = as_array(f"{name} live", live)
    shape = (future.shape[0], *future.shape[3:])
    if live.dtype != np.bool_ or live.shape != shape:
        raise ValueError(
            f"'{name}' live must be bool of shape {shape} (a window's channels), "
            f"got {live.dtype} of shape {live.shape}"
        )
    empty = np.flatnonzero(~live.any(axis=(1, 2)))
    if empty.size:
        raise ValueError(f"'{name}' live must leave each window a channel, window {empty[0]} none")
    return live


def _check_frames(name: str, frames: Any, *, min_frames: int) -> np.ndarray:
    """``frames`` as a numpy array (a tensor is copied to the CPU); TypeError unless an array
    or a tensor, ValueError unless (B >= 1, T >= min_frames, 1, H, W)."""
    frames = as_array(name, frames)
    shape = frames.shape
    if len(shape) != 5 or shape[0] < 1 or shape[1] < min_frames or shape[2] != 1:
        raise ValueError(
            f"'{name}' must have shape (batch >= 1, frames >= {min_frames}, 1, rows, cols), "
            f"got {shape}"
        )
    return frames


def _check_prediction(name: str, prediction: Any, target: np.ndarray) -> np.ndarray:
    """A prediction must be a finite array or tensor shaped like its target; returns it as a
    numpy array."""
    prediction = as_array(name, prediction)
    if prediction.shape != target.shape:
        raise ValueError(
            f"'{name}' must have the target's shape {tuple(target.shape)}, "
            f"got {tuple(prediction.shape)}"
        )
    if not np.isfinite(prediction).all():
        raise ValueError(f"'{name}' must be finite, got NaN/inf values")
    return prediction


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _db(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "inf"


def _check_keys(name: str, data: Any, keys: tuple[str, ...]) -> None:
    """A JSON object must hold exactly ``keys``: a missing or unknown key is an error."""
    check_type(name, data, Mapping)
    if set(data) != set(keys):
        raise ValueError(f"'{name}' must have exactly the keys {sorted(keys)}, got {sorted(data)}")
