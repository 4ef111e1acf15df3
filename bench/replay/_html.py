"""``report.html``: the replay report for a researcher, from ``report.json``'s contents.

A summary first (what was replayed, how fast, and per model one sentence and one table row),
then a section per question (how accurate, what the waves look like, what would have been
stimulated and when, how fast the loop was), then the definitions and settings every number
depends on. Self-contained apart from the PNGs beside it; no scripts.

The markup and the words are ``templates/report.html.j2``; this module shapes the report's
numbers into table rows and formats them. The template is autoescaped (a session or model name
is text, never markup) and strict: a field the report lacks is an error, not a blank cell.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from typing import Any

import jinja2

from bench.data.stimulation import stream_named
from service.core.scores import PSNR_SCALE

MAX_DECISION_ROWS = 300
"""Decisions listed in the HTML (report.json has all of them)."""
_BASELINES = ("persistence", "linear", "ar")
_INFINITIES = {"inf": math.inf, "-inf": -math.inf}
"""How report.json writes an infinite PSNR (``bench.replay.report.report_json``)."""
_TEMPLATE = "report.html.j2"


def render_html(report: dict[str, Any]) -> str:
    """The whole page for one report (``ReplayReport.data``, strict-JSON form).

    Raises
    ------
    ValueError
        The report lacks a field the page shows (a report.json from another version, or
        edited by hand), naming the field.
    """
    cannot = "report.html cannot be rendered: the report lacks a field the page shows"
    try:
        return _environment().get_template(_TEMPLATE).render(report=report, page=page_view(report))
    except KeyError as error:
        raise ValueError(f"{cannot}: no field {error.args[0]!r}") from error
    except jinja2.UndefinedError as error:
        raise ValueError(f"{cannot}: {error.message}") from error


@functools.cache
def _environment() -> jinja2.Environment:
    """One environment per process: it caches the compiled template."""
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("bench.replay", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        {
            name: _defined_only(function)
            for name, function in (
                ("num", num),
                ("at", at),
                ("beats_every_baseline", beats_every_baseline),
                ("seizures_triggered_on", seizures_triggered_on),
                ("stream_named", stream_named),
            )
        }
    )
    environment.tests["left"] = lambda cell: isinstance(cell, Left)
    return environment


def _defined_only(function: Callable[..., Any]) -> Callable[..., Any]:
    """The filter, failing on a missing field as the template itself does (a filter would
    otherwise format the undefined value, or fail with an unrelated TypeError)."""

    @functools.wraps(function)
    def checked(value: Any, *args: Any) -> Any:
        if isinstance(value, jinja2.Undefined):
            value._fail_with_undefined_error()
        return function(value, *args)

    return checked


# ------------------------------------------------------------------------- the view model
def page_view(report: dict[str, Any]) -> dict[str, Any]:
    """What the template shows beyond the report's own fields: tables' rows and counts."""
    session, run, models = report["session"], report["run"], report["models"]
    frame_ms = 1e3 / session["sample_rate_hz"]
    return {
        "figures": report.get("figures", {}),
        "psnr_scale": PSNR_SCALE,
        "period_ms": 1e3 * run["stride"] / session["sample_rate_hz"],
        "frame_ms": frame_ms,
        "summary_rows": summary_rows(models),
        "accuracy": accuracy_tables(models, frame_ms),
        "wave_rows": wave_rows(report),
        "stimulation": {name: stimulation_view(m["stimulation"]) for name, m in models.items()},
        "sweeps": {name: sweep_table(m["sweep"]) for name, m in models.items() if m["sweep"]},
        "latency_rows": latency_rows(models),
        "loop_rows": loop_rows(models),
        "marker_rows": marker_rows(models),
        "settings": json.dumps(
            {k: run[k] for k in ("scheduler", "policy", "waves", "interlocks", "sweep", "config")},
            indent=1,
        ),
    }


class Left(str):
    """A table cell to align left (text rather than a number); the first column always is."""


def summary_rows(models: dict[str, Any]) -> list[list[Any]]:
    """One row per model: accuracy at three horizons beside the baselines, decisions, speed."""
    rows = []
    for name, entry in models.items():
        acc, stim = entry["accuracy"], entry["stimulation"]
        psnr, ssim = acc["psnr_db"], acc["ssim"]
        inference = entry["latency_ms"]["inference"] or {}
        rows.append(
            [
                name,
                at(psnr, "model", 0),
                at(psnr, "model", 7),
                at(psnr, "model", 15),
                at(psnr, "persistence", 15),
                at(psnr, "linear", 15),
                at(psnr, "ar", 15),
                at(ssim, "model", 15, 3),
                stim["requests"],
                stim["triggers"],
                _fraction(stim),
                num(stim["false_triggers_per_hour"], 2),
                num(stim["median_lead_before_onset_s"], 3),
                f"{num(inference.get('p50'), 2)} / {num(inference.get('p99'), 2)}",
            ]
        )
    return rows


def accuracy_tables(models: dict[str, Any], frame_ms: float) -> dict[str, Any] | None:
    """PSNR and SSIM per horizon (predicted frame k is ``k * frame_ms`` ahead), each model
    beside the baselines (scored on the first model's windows); None when no window could be
    scored."""
    first = next(iter(models.values()))["accuracy"]
    if not first["psnr_db"]:
        return None
    columns = [*models, *_BASELINES]

    def values(metric: str, column: str) -> list[Any]:
        source = models[column]["accuracy"] if column in models else first
        return source[metric]["model" if column in models else column]

    def pooled(key: str, column: str) -> Any:
        if column in models:
            return models[column]["accuracy"][key].get("model")
        return first[key].get(column)

    psnr_rows = [
        [
            f"+{k + 1} ({frame_ms * (k + 1):.1f} ms)",
            *[num(values("psnr_db", c)[k], 2) for c in columns],
        ]
        for k in range(len(first["psnr_db"]["model"]))
    ]
    for label, key in (
        ("all horizons pooled", "pooled_psnr_db"),
        ("pooled, windows in seizures", "pooled_psnr_db_in_seizure"),
        ("pooled, windows outside seizures", "pooled_psnr_db_outside_seizure"),
    ):
        psnr_rows.append([label, *[num(pooled(key, c), 2) for c in columns]])
    return {
        "columns": [f"{c} (baseline)" if c in _BASELINES else c for c in columns],
        "psnr_rows": psnr_rows,
        "ssim_rows": [
            [f"+{k}", *[num(values("ssim", c)[k - 1], 3) for c in columns]] for k in (1, 4, 8, 16)
        ],
    }


def wave_rows(report: dict[str, Any]) -> list[list[Any]]:
    """Wave estimation errors: the estimator on true frames, then each model's predictions."""
    true = report["waves_true_frames"]
    rows = []
    if true["vs_truth"]:
        rows += _error_rows("estimator on true frames vs ground truth", true["vs_truth"])
    for name, entry in report["models"].items():
        waves = entry["waves"]
        if waves["predicted_vs_truth"]:
            rows += _error_rows(
                f"{name}: predicted frames vs ground truth", waves["predicted_vs_truth"]
            )
        if waves["predicted_vs_true_frames"]:
            rows += _error_rows(
                f"{name}: predicted frames vs true frames", waves["predicted_vs_true_frames"]
            )
    return rows


def _error_rows(label: str, errors: dict[str, Any]) -> list[list[Any]]:
    rows = [
        [
            Left(label),
            errors["frames"],
            num(errors["median_speed_error_pct"], 1),
            num(errors["median_direction_error_deg"], 1),
        ]
    ]
    for pattern, sub in (errors.get("by_pattern") or {}).items():
        rows.append(
            [
                Left(f"  … {pattern} frames"),
                sub["frames"],
                num(sub["median_speed_error_pct"], 1),
                num(sub["median_direction_error_deg"], 1),
            ]
        )
    return rows


def stimulation_view(stim: dict[str, Any]) -> dict[str, Any]:
    """One model's decisions: counts by check and interlock, per seizure, the first
    :data:`MAX_DECISION_ROWS` decisions and how many more report.json has."""
    decisions = stim["decisions"][:MAX_DECISION_ROWS]
    return {
        "checks": ", ".join(f"{k} {v}" for k, v in sorted(stim["policy_decisions"].items()) if v),
        "blocked": ", ".join(
            f"{k} {v}" for k, v in sorted(stim["blocked_by_first_interlock"].items())
        ),
        "seizure_rows": [
            [
                i + 1,
                num(s["onset_s"], 2),
                num(s["offset_s"], 2),
                s["triggers"],
                num(s["first_trigger_s"], 3),
                num(s["lead_before_onset_s"], 3),
            ]
            for i, s in enumerate(stim["seizures"] or [])
        ],
        "decision_rows": [
            [
                num(r["time_s"], 3),
                r["input_seq"],
                r["outcome"],
                "—" if r.get("seizure") is None else f"#{r['seizure'] + 1}",
                num(_ms(r["lead_time_to_target_s"]), 1),
                Left(r["policy_reason"]),
                Left(r["bridge_reason"]),
            ]
            for r in decisions
        ],
        "decisions_left_out": len(stim["decisions"]) - len(decisions),
    }


def sweep_table(sweep: list[dict[str, Any]]) -> dict[str, Any]:
    """One model's policy sweep: the swept settings' names and one row per variant, the
    configured policy's first and marked, as the reference the variants are read against."""
    settings = list(sweep[0]["values"])
    return {
        "settings": settings,
        "rows": [
            [
                Left("configured" if row["configured"] else "variant"),
                *[row["values"][k] for k in settings],
                row["requests"],
                row["triggers"],
                num(row["sensitivity"], 2),
                num(row["false_triggers"], 0),
                num(row["false_triggers_per_hour"], 2),
                num(row["median_lead_before_onset_s"], 3),
            ]
            for row in sweep
        ],
    }


_LATENCIES = {
    "inference": "inference",
    "age": "ring -> published",
    "transit": "published -> received",
    "lsl_to_received": "LSL stamp -> received",
}
_LOOP_COUNTS = (
    "published_predictions",
    "skipped_windows",
    "refused_windows",
    "superseded_predictions",
    "missed_messages",
)


def latency_rows(models: dict[str, Any]) -> list[list[Any]]:
    """Percentiles of each latency a model's loop measured (realtime measures more)."""
    rows = []
    for name, entry in models.items():
        for key, label in _LATENCIES.items():
            p = entry["latency_ms"].get(key)
            if p:
                rows.append(
                    [
                        name,
                        Left(label),
                        p["n"],
                        *[num(p[q], 2) for q in ("p50", "p90", "p99", "max")],
                    ]
                )
    return rows


def loop_rows(models: dict[str, Any]) -> list[list[Any]]:
    """Each model's loop counters; "—" for one its mode does not count."""
    return [
        [name, *[entry["loop"].get(k, "—") for k in _LOOP_COUNTS]] for name, entry in models.items()
    ]


_MARKER_COUNTS = (
    "marker_stream_trains_played",
    "marker_stream_trains_read",
    "marker_stream_late_markers",
    "trains_decided_on_late_artefact",
)
"""What a realtime replay counts of the other tools' marker streams it played to its daemon."""


def marker_rows(models: dict[str, Any]) -> list[list[Any]]:
    """Each model's counts of the other tools' marker streams a realtime replay played to its
    daemon (none where no stream was played: fast mode, or no stream configured)."""
    return [
        [name, *[entry["loop"].get(k, "—") for k in _MARKER_COUNTS]]
        for name, entry in models.items()
        if _MARKER_COUNTS[0] in entry["loop"]
    ]


# ----------------------------------------------------------------------- numbers (filters)
def num(value: Any, digits: int) -> str:
    """A number to ``digits`` decimals; "n/a" for a missing or undefined one (null in
    report.json), "+inf" / "-inf" for a PSNR report.json writes as "inf" / "-inf"."""
    if value is None:
        return "n/a"
    if value in _INFINITIES:
        return f"{_INFINITIES[value]:+}"
    return f"{value:.{digits}f}"


def at(values: dict[str, list[Any]], name: str, index: int, digits: int = 2) -> str:
    """``values[name][index]`` formatted; "n/a" where that series is missing or shorter."""
    series = values.get(name) or []
    return num(series[index], digits) if index < len(series) else "n/a"


def beats_every_baseline(psnr: dict[str, list[float | str | None]]) -> bool:
    """Whether the model's PSNR beats every baseline's at every horizon; an undefined one
    (null), the model's or a baseline's, beats nothing and is beaten by nothing."""
    return all(
        _db_value(m) > _db_value(b)
        for base in _BASELINES
        for m, b in zip(psnr["model"], psnr[base], strict=True)
    )


def seizures_triggered_on(stim: dict[str, Any]) -> int:
    """How many of the ground truth's seizures had a trigger."""
    return sum(1 for s in stim["seizures"] if s["detected"])


def _fraction(stim: dict[str, Any]) -> str:
    if stim["sensitivity"] is None:
        return "n/a"
    return f"{seizures_triggered_on(stim)}/{len(stim['seizures'])} ({stim['sensitivity']:.0%})"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1e3 * seconds


def _db_value(value: float | str | None) -> float:
    """A PSNR from the JSON: "inf" is +inf (a perfect prediction, MSE 0), null undefined (NaN,
    which every comparison calls false)."""
    if value is None:
        return math.nan
    return _INFINITIES.get(value, value) if isinstance(value, str) else float(value)
