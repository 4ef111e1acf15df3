"""Which measured way of serving a model runs, at which stride: the rule, apart from measuring.

``service.inference.serving_probe`` measures every candidate (mode x backend x threads) this
host can run, and x fp32 / int8 where ``corticast export --int8`` wrote int8 copies beside the
configured files (``service.inference.int8_files``); :meth:`ServingChoice.decide` turns the
measurements into a choice:

- **Stride.** The smallest stride ``s`` (at least the configured ``[scheduler] stride``) with
  ``p99 <= margin * s * frame_period`` (:func:`stride_for`): an inference then ends before the
  next window is due in 99 % of calls with ``1 - margin`` of the period to spare for the ingest
  and wave stages, so the scheduler runs every due window instead of skipping at random. The
  margin (``[model] serving_margin``, 0.7 by default) is that share of the period; the wave
  stage and ingest took about 0.3 of it beside the model on a 2-core host (README, end to end).
- **Fits.** A candidate fits when it is accurate, its stride is at most
  the horizon (``future_frames``; a longer one leaves frames no prediction covers), and
  ``p99 <= margin * staleness limit`` (``[interlocks] max_sample_age_s``: the stale-data
  interlock judges the data's age at a request, which an inference adds to in full). A stream
  candidate measured at a shorter stride than it needs does not fit: its cost grows with the
  frames it catches up on, so its p99 there is unknown.
- **Accurate.** An fp32 candidate: its outputs within the parity tolerance of its mode's
  reference (ONNX Runtime CPU, one thread; ``service.inference.predictor.PARITY_TOLERANCE``).
  An int8 candidate cannot meet that tolerance against fp32 (its convolutions round to 8 bits):
  it is judged by the guard record its files carry (``corticast export --int8`` wrote them only
  after scoring int8 against fp32 on held-out windows: pooled PSNR at most 0.1 dB lower, no
  horizon below persistence where fp32 is not), and its outputs must match int8's own
  reference (ONNX Runtime CPU, one thread: the graph the guard scored, run as the guard ran it)
  within the fp32 tolerance, since another thread count changes only the summation order.
- **Choice.** Among those that fit: the smallest stride (predictions as often as the host
  allows), then the fewest threads (the other cores are the ingest and wave stages', which a
  probe running the model alone cannot see), then the lowest p99. Precision is no key of its
  own: int8 wins only by letting a smaller stride (or fewer threads) fit, or, at the same
  stride and threads, by a lower p99, so it is served only where it is measurably faster on
  this host. It trades a little accuracy (within its guard) for speed, and whether it buys any
  depends on the CPU: ONNX Runtime's int8 convolutions were slower than fp32 for the shipped
  model on the development VM (README), faster on others. At equal p99 fp32 is kept.

When nothing fits, :attr:`ServingChoice.advice` says what would help.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

REASON_WIDTH = 60
"""Longest reason the table shows whole."""
CPU_SUFFIX = "-cpu"
"""Backends whose speed depends on intra-op threads end so (``onnxruntime-cpu``)."""
UNAVAILABLE = "unavailable: "
"""How the problem of a candidate whose backend this host lacks begins (the advice lists those
backends; a missing step graph or a failed load is not a backend to install)."""


@dataclass(frozen=True)
class Candidate:
    """One way to serve the model: ``[model]`` mode, backend and threads, and the precision of
    the graph files it runs: "fp32" (the export) or "int8" (its ``corticast export --int8``
    copy, ONNX Runtime CPU only)."""

    mode: str
    backend: str
    threads: int
    precision: str = "fp32"

    @property
    def way(self) -> str:
        """Mode, backend and threads (the table's first column)."""
        threads = f" x{self.threads}" if self.backend.endswith(CPU_SUFFIX) else ""
        return f"{self.mode} {self.backend}{threads}"

    @property
    def label(self) -> str:
        return f"{self.way} {self.precision}"


@dataclass(frozen=True)
class Measurement:
    """What the probe saw of one candidate.

    Attributes
    ----------
    p50_s, p99_s
        Latency percentiles of ``runs`` predictions after warm-up, s; None if not measured.
    stride
        The stride the windows advanced by while measuring (stream mode's cost grows with it).
    max_error, tolerance
        Largest |output - reference| in normalised units over the parity windows, and the
        tolerance of the candidate's precision; None without a reference. The reference is
        the candidate's mode and precision on ONNX Runtime CPU, one thread.
    guard
        An int8 candidate's guard record in a few words (what its accuracy is judged by,
        module docstring); None for fp32.
    problem
        Why the candidate was not measured (unavailable here, failed to load), or None.
    """

    candidate: Candidate
    p50_s: float | None = None
    p99_s: float | None = None
    runs: int = 0
    stride: int = 1
    max_error: float | None = None
    tolerance: float | None = None
    guard: str | None = None
    problem: str | None = None

    @property
    def accurate(self) -> bool:
        return (
            self.problem is None
            and self.max_error is not None
            and self.tolerance is not None
            and self.max_error <= self.tolerance
            and (self.candidate.precision == "fp32" or self.guard is not None)
        )

    @property
    def accuracy(self) -> str:
        """What its accuracy was judged by, in a few words (the table's column)."""
        if self.candidate.precision != "fp32" and self.guard is not None:
            return self.guard
        return "-" if self.max_error is None else f"parity {self.max_error:.1e}"


def stride_for(p99_s: float, period_s: float, margin: float) -> int:
    """The smallest stride ``s >= 1`` with ``p99_s <= margin * s * period_s``.

    Raises ValueError for a negative or non-finite ``p99_s``, or ``period_s``/``margin`` not > 0.
    """
    if not (math.isfinite(p99_s) and p99_s >= 0):
        raise ValueError(f"'p99_s' must be a finite number >= 0, got {p99_s!r}")
    for name, value in (("period_s", period_s), ("margin", margin)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name!r} must be a finite number > 0, got {value!r}")
    budget = margin * period_s
    stride = max(1, math.ceil(p99_s / budget))
    if stride > 1 and p99_s <= budget * (stride - 1):  # ceil of a quotient that rounded up
        stride -= 1
    return stride


@dataclass(frozen=True)
class Row:
    """A measurement judged: the stride it needs and whether it fits (or why not)."""

    measurement: Measurement
    stride: int | None
    fits: bool
    reason: str


@dataclass(frozen=True)
class ServingChoice:
    """Every candidate judged, the one chosen (None when nothing fits), why, and what would
    help when nothing fits. Build it with :meth:`decide`."""

    rows: tuple[Row, ...]
    chosen: Row | None
    why: str
    advice: str | None
    period_s: float
    margin: float
    staleness_limit_s: float

    @classmethod
    def decide(
        cls,
        measurements: list[Measurement],
        *,
        period_s: float,
        margin: float,
        staleness_limit_s: float,
        min_stride: int = 1,
        max_stride: int = 16,
    ) -> ServingChoice:
        """Judge ``measurements`` by the module docstring's rule."""
        if not 0 < margin <= 1:
            raise ValueError(f"'margin' must be in (0, 1], got {margin!r}")
        if not 1 <= min_stride <= max_stride:
            raise ValueError(
                f"'min_stride' must be in [1, max_stride={max_stride}], got {min_stride!r}"
            )
        stale_budget = margin * staleness_limit_s
        rows = tuple(
            _judge(m, period_s, margin, stale_budget, min_stride, max_stride) for m in measurements
        )
        fitting = [row for row in rows if row.fits]
        if fitting:
            best = min(
                fitting,
                key=lambda r: (
                    r.stride,
                    r.measurement.candidate.threads,
                    r.measurement.p99_s,
                    r.measurement.candidate.precision != "fp32",
                ),
            )
            m = best.measurement
            ranking = (
                f"{len(fitting)} of {len(rows)} candidates fit; smallest stride, then fewest "
                "threads, then lowest p99"
                if len(rows) > 1
                else "the one way measured"
            )
            why = (
                f"{m.candidate.label}: p99 {m.p99_s * 1e3:.2f} ms fits stride {best.stride} "
                f"(p99 <= {margin:g} x {best.stride} x {period_s * 1e3:.2f} ms frame period) and "
                f"the staleness limit ({margin:g} x {staleness_limit_s * 1e3:g} ms); {ranking}"
            )
            return cls(rows, best, why, None, period_s, margin, staleness_limit_s)
        advice = _advice(rows, max_stride, stale_budget)
        why = "no candidate fits: " + advice
        return cls(rows, None, why, advice, period_s, margin, staleness_limit_s)

    def table(self) -> list[str]:
        """The candidates as text lines: candidate, precision, p50, p99, runs, accuracy (fp32:
        parity error; int8: its guard), fits at stride N, chosen."""
        lines = [
            f"{'candidate':<28} {'precision':<9} {'p50 ms':>8} {'p99 ms':>8} {'runs':>5}  "
            f"{'accuracy':<26} {'fits':<32} chosen"
        ]
        for row in self.rows:
            m = row.measurement
            c = m.candidate
            p50 = "-" if m.p50_s is None else f"{m.p50_s * 1e3:.2f}"
            p99 = "-" if m.p99_s is None else f"{m.p99_s * 1e3:.2f}"
            fits = f"yes, at stride {row.stride}" if row.fits else f"no: {_short(row.reason)}"
            mark = "<==" if row is self.chosen else ""
            lines.append(
                f"{c.way:<28} {c.precision:<9} {p50:>8} {p99:>8} {m.runs:>5}  "
                f"{m.accuracy:<26} {fits:<32} {mark}"
            )
        return lines

    def as_dict(self) -> dict:
        """JSON-able: what ``/status`` shows under ``serving``."""

        def row_dict(row: Row) -> dict:
            m = asdict(row.measurement)
            candidate = m.pop("candidate")
            return {**candidate, **m, "needs_stride": row.stride, "fits": row.fits,
                    "reason": row.reason}  # fmt: skip

        chosen = None
        if self.chosen is not None:
            c = self.chosen.measurement.candidate
            chosen = {"mode": c.mode, "backend": c.backend, "threads": c.threads,
                      "precision": c.precision, "stride": self.chosen.stride,
                      "p99_ms": self.chosen.measurement.p99_s * 1e3}  # fmt: skip
        return {
            "chosen": chosen,
            "why": self.why,
            "advice": self.advice,
            "margin": self.margin,
            "frame_period_ms": self.period_s * 1e3,
            "staleness_limit_ms": self.staleness_limit_s * 1e3,
            "candidates": [row_dict(row) for row in self.rows],
        }


def _short(reason: str, limit: int = REASON_WIDTH) -> str:
    """A reason cut to fit a table cell (:meth:`ServingChoice.as_dict` keeps it whole)."""
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


def _judge(
    m: Measurement, period_s: float, margin: float, stale_budget_s: float, min_stride: int,
    max_stride: int,
) -> Row:  # fmt: skip
    if m.problem is not None:
        return Row(m, None, False, m.problem)
    if m.p99_s is None:
        return Row(m, None, False, "not measured")
    stride = max(min_stride, stride_for(m.p99_s, period_s, margin))
    if not m.accurate:
        if m.max_error is None:
            return Row(m, stride, False, "no reference to check its outputs against")
        if m.tolerance is None:  # only a record edited by hand
            return Row(m, stride, False, "no tolerance to check its outputs against")
        if not m.max_error <= m.tolerance:  # NaN too: a model that outputs NaN
            return Row(m, stride, False, f"outputs off by {m.max_error:.1e} > {m.tolerance:.0e}")
        return Row(m, stride, False, "int8 without a passed guard record")
    if stride > max_stride:
        return Row(m, stride, False, f"needs stride {stride} > horizon {max_stride}")
    if m.p99_s > stale_budget_s:
        return Row(m, stride, False, f"p99 > {stale_budget_s * 1e3:.3g} ms (staleness)")
    if m.candidate.mode == "stream" and stride > m.stride:
        return Row(m, stride, False, f"needs stride {stride}, measured at {m.stride}")
    return Row(m, stride, True, "")


def _advice(rows: tuple[Row, ...], max_stride: int, stale_budget_s: float) -> str:
    """What would make a candidate fit, from why the measured ones did not."""
    measured = [r for r in rows if r.measurement.p99_s is not None and r.measurement.accurate]
    missing = sorted(
        {
            r.measurement.candidate.backend
            for r in rows
            if (r.measurement.problem or "").startswith(UNAVAILABLE)
        }
    )
    faster = "a faster backend" + (
        f" (not available here: {', '.join(missing)}; the 'gpu' extra on a GPU host)"
        if missing
        else ""
    )
    if not measured:
        return "no candidate ran accurately here; see each one's reason"
    best = min(measured, key=lambda r: r.measurement.p99_s)
    p99 = best.measurement.p99_s * 1e3
    named = f"{best.measurement.candidate.label} (p99 {p99:.2f} ms)"
    named = f"the fastest, {named}," if len(measured) > 1 else named
    timed = best.measurement.stride
    if (
        best.measurement.candidate.mode == "stream"
        and best.stride is not None
        and timed < best.stride <= max_stride
        and best.measurement.p99_s <= stale_budget_s
    ):  # it may fit, timed at the stride it needs
        return (
            f"{named} needs stride {best.stride} but was timed at {timed} (stream mode's cost "
            f"grows with the stride): [scheduler] stride = {best.stride} times it there; would "
            f"help otherwise: {faster}, a smaller model"
        )
    if best.stride is not None and best.stride > max_stride:
        return (
            f"{named} needs stride {best.stride}, past the {max_stride}-frame horizon (a longer "
            f"stride would leave frames no prediction covers); would help: {faster}, a smaller "
            "model"
        )
    return (
        f"{named} is too slow for the staleness limit ([interlocks] max_sample_age_s), which a "
        f"longer stride does not change; would help: {faster}, a smaller model"
    )
