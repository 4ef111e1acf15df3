"""Measure every way this host can serve the model, then choose one (``[model] serving = "auto"``).

Candidates: mode (window, and stream where the step graph exported with it exists) x backend
(those ``service.inference.backends`` would try for the mode; one this host lacks is listed with
the reason it gave) x intra-op threads (1 to ``min(4, usable cores)``, CPU backends only), and
x precision: fp32, plus int8 on ONNX Runtime CPU where ``corticast export --int8`` wrote int8
copies of the configured files beside them (``service.inference.int8_files``: the same export,
a passed guard record; a copy that is not is one row saying why, none where there is none).
Where ``[model] path`` is itself an int8 graph, every candidate is int8 (there is no fp32 of it
to offer) and the GPU backends are rows saying they are not probed. Each is
loaded as the daemon would load it, fed the same short synthetic stream (a travelling wave plus
noise at the model's own scale: the graphs have no data-dependent branches, so the timing does
not depend on the values) and timed over ``[model] serving_probe_runs`` predictions after a
warm-up, at most :data:`BUDGET_S` each. Its first :data:`PARITY_WINDOWS` outputs are compared
with the reference of its mode and precision (ONNX Runtime CPU, one thread) within the parity
tolerance of its precision (``service.inference.predictor.PARITY_TOLERANCE``; int8 against
int8 within fp32's: the thread count changes only the summation order), and an int8 candidate
is judged by its guard record besides (``service.inference.serving_choice``): stream and
window mode, fp32 and int8, differ by design and are never compared with each other. A stream
candidate whose stride comes out longer than the one it was timed at is timed again there (it
catches up one encoder step per frame). ``service.inference.serving_choice`` decides; the
measurements are cached by model and host (``service.inference._serving_cache``). A candidate
that fails to load or run is a row saying why, unless the host ran out of file descriptors or
memory (``service.inference.resource_failures``): that says nothing of the candidate, so the
probe fails with it (a start exits 1, which systemd restarts; a swap is answered 503), and
nothing is cached.

A hot swap under ``auto`` measures one way only (:meth:`ServingProbe.choose_way`): the way
chosen at start, for the new files (an int8 way on the int8 copies beside them, where they are
fit), while the old model serves (every candidate would take the live loop's CPU for a
minute). Its reference outputs are run, not timed; its measurement is read from a start's
full probe of the same files, or from a record of its own, where either holds (a swap back is
instant). One way takes about :data:`BUDGET_S` per timing at most (up
to five timings in stream mode; the later ones only where p99 fits a stride within the
horizon, 40 ms at the defaults), plus two loads and ``2 * PARITY_WINDOWS + WARMUP_RUNS``
predictions: 1.7-3.9 s uncached for the shipped default on the 2-core development machine.
That is inside the control link's swap timeout (``service.api.remote_daemon.SWAP_TIMEOUT_S``,
300 s) unless one prediction took about 6 s (some 50 run, at least 20 of them timed), which
no stride could serve.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from service.inference import _serving_cache, host
from service.inference.backends import AUTO_ORDER, create_predictor
from service.inference.int8_files import (
    Int8Graphs,
    configured_int8,
    configured_precision,
    int8_graphs,
)
from service.inference.model_files import ModelFileError, ModelFiles
from service.inference.predictor import (
    PARITY_TOLERANCE,
    BackendUnavailableError,
    Predictor,
    StreamSpec,
    file_sha256,
    parity_tolerance,
)
from service.inference.resource_failures import raise_if_host_failure
from service.inference.serving_choice import (
    CPU_SUFFIX,
    UNAVAILABLE,
    Candidate,
    Measurement,
    ServingChoice,
    stride_for,
)
from service.inference.settings import ModelSettings

_log = logging.getLogger("corticast.serving")
_LOADING = logging.getLogger("corticast.inference")
"""The backends' own load lines, one per candidate: quieted to warnings while probing."""

MAX_THREADS = 4
"""Most intra-op threads tried: past 4 the model's small convolutions stop getting faster."""
WARMUP_RUNS = 10
"""Real predictions run and discarded before timing (after the predictor's own warm-up)."""
PARITY_WINDOWS = 8
"""Consecutive windows whose outputs are compared with the reference's."""
BUDGET_S = 5.0
"""Most seconds one candidate's timing takes (fewer runs on a slow host, at least 20)."""
_MIN_RUNS = 20
_RESTRIDES = 4
"""Most times a stream candidate is timed again at a longer stride."""
_STREAM_FRAMES = 4096
"""Frames of the synthetic stream; longer runs wrap around it (timing does not care)."""
_REFERENCE_BACKEND = "onnxruntime-cpu"
"""Each mode and precision's reference runs here, on one thread."""
INT8_BACKEND = "onnxruntime-cpu"
"""The one backend int8 is probed on: its guard scored ONNX Runtime CPU's int8 kernels."""


class ServingProbe:
    """Measures the candidates for ``model`` on ``stream`` and chooses one.

    Parameters
    ----------
    model
        ``[model]``: the files, ``serving_margin``, ``serving_probe_runs``, the cache
        directory, and what every backend is built with (device, precision, re-priming).
    stream
        What the daemon feeds the model (grid, rate, window lengths).
    staleness_limit_s
        The data age at which the stale-data interlock blocks a request
        (``[interlocks] max_sample_age_s``).
    min_stride
        The configured ``[scheduler] stride``: the choice never predicts more often. Past the
        horizon (``future_frames``) nothing could fit: ValueError, before measuring.
    cores
        Usable cores (None: this process's affinity mask).
    """

    def __init__(
        self,
        model: ModelSettings,
        stream: StreamSpec,
        *,
        staleness_limit_s: float,
        min_stride: int = 1,
        cores: int | None = None,
    ) -> None:
        if not staleness_limit_s > 0:
            raise ValueError(f"'staleness_limit_s' must be > 0, got {staleness_limit_s!r}")
        if not 1 <= min_stride <= stream.future_frames:  # no candidate could fit: say so first
            raise ValueError(
                f"[scheduler] stride {min_stride} is past the model's {stream.future_frames}-"
                "frame horizon: serving = 'auto' chooses a stride within it (a longer one "
                "leaves frames no prediction covers)"
            )
        self.model = model
        self.stream = stream
        self.staleness_limit_s = staleness_limit_s
        self.min_stride = min_stride
        self.max_stride = stream.future_frames
        self.cores = cores if cores is not None else host.usable_cores()
        self.period_s = 1.0 / stream.sample_rate_hz
        self.step_path, self._no_stream = _step_graph(model, stream)
        self.precision = configured_precision(model)
        """Of ``[model] path``: "int8" where it names an int8 graph itself."""
        self.int8: dict[str, Int8Graphs] = (
            configured_int8(model, self.step_path, self._no_stream)
            if self.precision == "int8"
            else int8_graphs(model, stream)
        )
        """Mode -> the int8 graphs it may serve, or why not (no key: nothing to offer)."""
        self._frames: np.ndarray | None = None

    # ------------------------------------------------------------------ public
    def candidates(self) -> list[Candidate]:
        """Every candidate to try, each mode and precision's reference (ORT CPU, 1 thread)
        first; int8 on ORT CPU only, one row where its graphs cannot be offered."""
        threads = range(1, min(MAX_THREADS, self.cores) + 1)
        out = []
        for mode in ("window", "stream"):
            backends = sorted(AUTO_ORDER[mode], key=lambda b: b != INT8_BACKEND)
            if self.precision == "fp32":
                for backend in backends:
                    counts = threads if backend.endswith(CPU_SUFFIX) else (1,)
                    out.extend(Candidate(mode, backend, n) for n in counts)
            int8 = self.int8.get(mode)
            if int8 is None:
                continue
            counts = (1,) if int8.problem is not None else threads
            out.extend(Candidate(mode, INT8_BACKEND, n, "int8") for n in counts)
            if self.precision == "int8":  # what else the configured int8 file would run on
                out.extend(Candidate(mode, b, 1, "int8") for b in backends if b != INT8_BACKEND)
        return out

    def settings_for(self, candidate: Candidate) -> ModelSettings:
        """``[model]`` serving ``candidate``: its mode, backend and threads, and for an int8
        copy its files (``path`` the int8 window graph, ``step_path`` its step graph)."""
        update: dict[str, Any] = {
            "mode": candidate.mode,
            "backend": candidate.backend,
            "threads": candidate.threads,
        }
        if candidate.precision != self.precision:
            graphs = self.int8[candidate.mode]
            update |= {"path": graphs.path, "step_path": graphs.step_path}
        return self.model.model_copy(update=update)

    def measure(self) -> list[Measurement]:
        """Load, check and time every candidate (seconds to a minute; see the module doc)."""
        results: list[Measurement] = []
        references: dict[tuple[str, str], list[np.ndarray]] = {}
        with _quiet_loading():
            for candidate in self.candidates():
                kind = (candidate.mode, candidate.precision)
                reference = references.get(kind)
                measurement, outputs = self._measure_one(candidate, reference)
                if outputs is not None and kind not in references:
                    references[kind] = outputs
                _log.debug("serving probe: %s", measurement)
                results.append(measurement)
        return results

    def choose(self, *, use_cache: bool = True) -> ServingChoice:
        """The choice, from cached measurements when their key matches, else measured now
        (and cached)."""
        path = self.cache_path
        key = self.cache_key()
        measurements = _serving_cache.load(path, key) if use_cache else None
        if measurements is not None and [m.candidate for m in measurements] != self.candidates():
            _log.warning(
                "serving probe: cache %s lists other candidates than this host runs; "
                "re-measuring", path,
            )  # fmt: skip
            measurements = None
        if measurements is None:
            started = time.monotonic()
            measurements = self.measure()
            _log.info(
                "serving probe: measured %d candidates in %.1f s",
                len(measurements), time.monotonic() - started,
            )  # fmt: skip
            _serving_cache.save(path, key, measurements)
        return self.decide(measurements)

    def decide(self, measurements: list[Measurement]) -> ServingChoice:
        """``measurements`` judged by the rule under this probe's settings."""
        return ServingChoice.decide(
            measurements,
            period_s=self.period_s,
            margin=self.model.serving_margin,
            staleness_limit_s=self.staleness_limit_s,
            min_stride=self.min_stride,
            max_stride=self.max_stride,
        )

    def offers(self, mode: str, precision: str) -> bool:
        """Whether these files serve ``mode`` in ``precision``: their own, or "int8" from the
        int8 copies beside them where those are fit (same export, passed guard)."""
        if precision == self.precision:
            return True
        graphs = self.int8.get(mode)
        return precision == "int8" and graphs is not None and graphs.problem is None

    def choose_way(
        self, mode: str, backend: str, threads: int, precision: str | None = None
    ) -> ServingChoice:
        """The rule applied to one way of serving these files: ``mode``, ``backend``,
        ``threads`` and ``precision`` (None: the files' own; "int8" of fp32 files: their int8
        copies, which :meth:`settings_for` then serves), for a hot swap, which keeps the way
        chosen at start (see the module docstring). Its measurement is cached as
        :meth:`choose`'s are; the choice's one row says whether it fits and at which stride.
        A record that does not fit is measured again: a swap is measured beside the live
        loop, so a busy moment can make a way miss that fits, and a swap asked again would
        otherwise be refused from the record until a restart.

        Raises ValueError for a precision the files do not offer (:meth:`offers`)."""
        precision = self.precision if precision is None else precision
        if not self.offers(mode, precision):
            raise ValueError(f"{self.model.path} offers no {precision} graphs for {mode} mode")
        candidate = Candidate(mode, backend, threads, precision)
        way_path, way_key = self._way_cache(candidate)
        records = []
        if self.cache_path.is_file():  # a start's full probe of these files
            records.append(_find(_serving_cache.load(self.cache_path, self.cache_key()), candidate))
        # And its own: where the start's does not fit, the way measured again at a swap is
        # there, which the next swap reads instead of measuring it once more.
        records.append(_find(_serving_cache.load(way_path, way_key), candidate))
        recorded = [m for m in records if m is not None]
        for measurement in recorded:
            choice = self.decide([measurement])
            if choice.chosen is not None:
                return choice
        if recorded:
            _log.info(
                "serving probe: the record of %s does not fit; measuring again", candidate.label
            )
        started = time.monotonic()
        measurement = self._measure_way(candidate)
        _log.info(
            "serving probe: measured %s in %.1f s", candidate.label, time.monotonic() - started
        )
        _serving_cache.save(way_path, way_key, [measurement])
        return self.decide([measurement])

    @property
    def cache_path(self) -> Path:
        """One file per window graph, named by the start of its hash."""
        return self.model.serving_cache_dir.expanduser() / f"{self._window_sha[:16]}.json"

    def cache_key(self) -> dict[str, Any]:
        """What must be equal for cached measurements to hold: model, host, probe settings."""
        model = self.model
        return {
            "model_sha256": self._window_sha,
            "step_sha256": None if self.step_path is None else file_sha256(self.step_path),
            "int8_sha256": {  # the copies offered (or refused) beside them
                mode: [file_sha256(p) for p in (g.path, g.step_path) if p is not None]
                for mode, g in self.int8.items()
            },
            "checkpoint_sha256": _checkpoint_sha(model.checkpoint),  # the torch backends'
            "device_id": model.device_id,  # the GPU every GPU backend is timed on
            **host.facts(),
            "usable_cores": self.cores,
            "runs": model.serving_probe_runs,
            "margin": model.serving_margin,
            "min_stride": self.min_stride,
            "reprime_every_frames": model.reprime_every_frames,
            "precision": model.precision,
            "stream": [
                self.stream.sample_rate_hz,
                self.stream.past_frames,
                self.stream.future_frames,
                list(self.stream.grid.shape),
            ],
        }

    # ------------------------------------------------------------------ internals
    @property
    def _window_sha(self) -> str:
        return file_sha256(self.model.path.expanduser())

    def _way_cache(self, candidate: Candidate) -> tuple[Path, dict[str, Any]]:
        """Where one way's own measurement is kept, beside the full probe's, and its key."""
        c = candidate
        name = f"{self._window_sha[:16]}.{c.mode}.{c.backend}.x{c.threads}.{c.precision}.json"
        return self.cache_path.with_name(name), {
            **self.cache_key(),
            "way": dataclasses.asdict(candidate),
        }

    def _measure_way(self, candidate: Candidate) -> Measurement:
        """``candidate`` measured as :meth:`measure` would, its reference's outputs run only
        (none needed where it is its own reference)."""
        reference = None
        with _quiet_loading():
            if (candidate.backend, candidate.threads) != (_REFERENCE_BACKEND, 1):
                reference = self._reference_outputs(
                    dataclasses.replace(candidate, backend=_REFERENCE_BACKEND, threads=1)
                )
            measurement, _ = self._measure_one(candidate, reference)
        _log.debug("serving probe: %s", measurement)
        return measurement

    def _reference_outputs(self, reference: Candidate) -> list[np.ndarray] | None:
        """The reference's parity outputs; None where it cannot be loaded or run
        (``candidate``'s own measurement then says why, or that it has no reference): a swap
        is answered with that row, not with an error from inside the probe."""
        try:
            predictor = self._build(reference)
        except Exception as err:
            raise_if_host_failure(err, _probing(reference))
            _log.debug("serving probe: reference %s not run: %s", reference.label, err)
            return None
        try:
            return self._parity_outputs(predictor)[0]
        except Exception as err:  # one that loads but fails to run: no reference either
            raise_if_host_failure(err, _probing(reference))
            _log.debug("serving probe: reference %s failed: %s", reference.label, err)
            return None
        finally:
            predictor.close()

    def _measure_one(
        self, candidate: Candidate, reference: list[np.ndarray] | None
    ) -> tuple[Measurement, list[np.ndarray] | None]:
        fp32 = candidate.precision == "fp32"
        if fp32 and candidate.mode == "stream" and self.step_path is None:
            return Measurement(candidate, problem=self._no_stream), None
        guard = None
        if candidate.precision == "int8":
            graphs = self.int8[candidate.mode]
            if graphs.problem is not None:
                return Measurement(candidate, problem=graphs.problem), None
            if candidate.backend != INT8_BACKEND:
                return Measurement(candidate, problem=_INT8_ELSEWHERE), None
            guard = graphs.guard
        try:
            predictor = self._build(candidate)
        except BackendUnavailableError as err:
            return Measurement(candidate, problem=f"{UNAVAILABLE}{err}"), None
        except Exception as err:  # a backend that is there but fails here is a row, not a crash
            raise_if_host_failure(err, _probing(candidate))
            return Measurement(candidate, problem=f"failed: {type(err).__name__}: {err}"), None
        try:
            return self._run(candidate, predictor, reference, guard)
        except Exception as err:
            raise_if_host_failure(err, _probing(candidate))
            return Measurement(candidate, problem=f"failed: {type(err).__name__}: {err}"), None
        finally:
            predictor.close()

    def _build(self, candidate: Candidate) -> Predictor:
        model, path, step = self.model, self.model.path.expanduser(), self.step_path
        if candidate.precision != self.precision:  # an int8 copy beside the fp32 files
            graphs = self.int8[candidate.mode]
            path, step = graphs.path, graphs.step_path
        return create_predictor(
            candidate.backend,
            candidate.mode,
            model_path=path,
            step_path=step,
            checkpoint=model.checkpoint,
            stream=self.stream,
            threads=candidate.threads,
            device_id=model.device_id,
            precision=model.precision,
            engine_cache_dir=model.engine_cache_dir,
            keep_warm_s=None,
            reprime_every_frames=model.reprime_every_frames,
        )

    def _run(
        self,
        candidate: Candidate,
        predictor: Predictor,
        reference: list[np.ndarray] | None,
        guard: str | None,
    ) -> tuple[Measurement, list[np.ndarray]]:
        outputs, frames, scale = self._parity_outputs(predictor)
        past = self.stream.past_frames
        max_error = None
        if reference is not None:
            max_error = max(
                float(np.max(np.abs(out - ref) / scale))
                for out, ref in zip(outputs, reference, strict=True)
            )
        elif (candidate.backend, candidate.threads) == (_REFERENCE_BACKEND, 1):
            max_error = 0.0  # the reference itself
        stride = self.min_stride
        seq = self._parity_seqs()[-1] + 2 * past  # a jump: stream mode re-primes, as after a gap
        p50, p99, runs, seq = self._time(predictor, frames, stride, seq)
        for _ in range(_RESTRIDES if candidate.mode == "stream" else 0):
            needed = max(self.min_stride, stride_for(p99, self.period_s, self.model.serving_margin))
            if needed <= stride or needed > self.max_stride:
                break
            stride = needed
            p50, p99, runs, seq = self._time(predictor, frames, stride, seq + 2 * past)
        tolerance = None
        if max_error is not None:  # int8 against int8 on the same kernels: summation order
            precision = predictor.info.precision
            tolerance = (
                PARITY_TOLERANCE["fp32"] if precision == "int8" else parity_tolerance(precision)
            )
        measurement = Measurement(candidate, p50, p99, runs, stride, max_error, tolerance, guard)
        return measurement, outputs

    def _parity_outputs(
        self, predictor: Predictor
    ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """Its outputs on the first :data:`PARITY_WINDOWS` windows of the synthetic stream, the
        stream's frames and the model's scale."""
        centre, scale = _stats(predictor)
        frames = self._stream_frames(centre, scale)
        outputs = [predictor.predict(self._window(frames, s), s) for s in self._parity_seqs()]
        return outputs, frames, scale

    def _parity_seqs(self) -> range:
        first = self.stream.past_frames - 1  # the first full window
        return range(first, first + PARITY_WINDOWS)

    def _time(
        self, predictor: Predictor, frames: np.ndarray, stride: int, seq: int
    ) -> tuple[float, float, int, int]:
        """p50, p99 (s) and runs of predictions every ``stride`` frames from ``seq``, and the
        next sequence number."""
        wanted = self.model.serving_probe_runs
        times: list[float] = []
        deadline = np.inf
        for k in range(WARMUP_RUNS + wanted):
            window = self._window(frames, seq)
            started = time.perf_counter()
            predictor.predict(window, seq)
            ended = time.perf_counter()
            if k >= WARMUP_RUNS:
                times.append(ended - started)
            elif k == WARMUP_RUNS - 1:
                deadline = ended + BUDGET_S
            seq += stride
            if len(times) >= _MIN_RUNS and ended > deadline:
                break
        p50, p99 = np.percentile(times, [50, 99])
        return float(p50), float(p99), len(times), seq

    def _window(self, frames: np.ndarray, seq: int) -> np.ndarray:
        start = (seq - self.stream.past_frames + 1) % _STREAM_FRAMES
        return frames[start : start + self.stream.past_frames]

    def _stream_frames(self, centre: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """A plane wave crossing the grid plus noise, in µV at the model's scale; the first
        ``past_frames`` frames repeated at the end so every window is a slice."""
        if self._frames is None:
            rows, cols = self.stream.grid.shape
            t = np.arange(_STREAM_FRAMES, dtype=np.float32)[:, None, None]
            r, c = np.mgrid[0:rows, 0:cols].astype(np.float32)
            wave = np.sin(2 * np.pi * 0.05 * t - 0.4 * c - 0.2 * r)  # ~14 Hz at 277.78 Hz
            noise = np.random.default_rng(0).standard_normal(wave.shape, dtype=np.float32)
            normalised = 0.8 * wave + 0.2 * noise
            normalised = np.concatenate([normalised, normalised[: self.stream.past_frames]])
            self._frames = (centre + scale * normalised).astype(np.float32)
        return self._frames


_INT8_ELSEWHERE = (
    f"int8 is probed on {INT8_BACKEND} only (its guard scored those kernels): for this "
    "backend, configure the fp32 export as [model] path"
)


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """The backends' load lines quieted to warnings (``--log-level DEBUG`` keeps them)."""
    level = _LOADING.level
    if _LOADING.getEffectiveLevel() > logging.DEBUG:
        _LOADING.setLevel(logging.WARNING)
    try:
        yield
    finally:
        _LOADING.setLevel(level)


def _probing(candidate: Candidate) -> str:
    """What the probe was doing when the host ran out: that says nothing of ``candidate``,
    and as its row it would be cached and judged so (a start serving a worse way, a swap
    refused as fitting no stride), so it fails the probe instead."""
    return f"the serving probe could not run {candidate.label}"


def _find(measurements: list[Measurement] | None, candidate: Candidate) -> Measurement | None:
    """``candidate``'s measurement among those cached, if any."""
    return next((m for m in measurements or () if m.candidate == candidate), None)


def _checkpoint_sha(checkpoint: Path | None) -> str | None:
    """The checkpoint's content hash (retrained in place, it is other weights), None without
    one."""
    if checkpoint is None or not checkpoint.expanduser().is_file():
        return None
    return file_sha256(checkpoint.expanduser())


def _step_graph(model: ModelSettings, stream: StreamSpec) -> tuple[Path | None, str | None]:
    """The step graph stream mode would serve, or None and why there is none: missing, or not
    the one exported with the window graph (which the daemon refuses to serve)."""
    step = model.step_graph.expanduser()
    if not step.is_file():
        return None, f"no step graph at {str(model.step_graph)!r}"
    try:
        ModelFiles.for_start(model.model_copy(update={"mode": "stream"}), stream)
    except ModelFileError as err:
        return None, str(err)
    return step, None


def _stats(predictor: Predictor) -> tuple[np.ndarray, np.ndarray]:
    """The (centre, scale) the probe's frames are built at: a fixed model's normalisation;
    for a robust-online model zero and one, given to it as its statistics."""
    normaliser = predictor.normaliser
    if normaliser.online is not None:
        ones = np.ones(normaliser.shape, dtype=np.float32)
        normaliser.set_stats(np.zeros_like(ones), ones)
        return np.zeros_like(ones), ones
    centre, scale = normaliser.stats
    return centre, scale
