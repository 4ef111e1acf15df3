"""``report.html``: the replay report for a researcher, from ``report.json``'s contents.

A summary first (what was replayed, how fast, and per model one sentence and one table row),
then a section per question (how accurate, what the waves look like, what would have been
stimulated and when, how fast the loop was), then the definitions and settings every number
depends on. Self-contained apart from the PNGs beside it; no scripts.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

MAX_DECISION_ROWS = 300
"""Decisions listed in the HTML (report.json has all of them)."""
_BASELINES = ("persistence", "linear", "ar")
_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; max-width: 1180px; margin: 1.5em auto;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .6em 0 1em; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
.meta { color: #555; } img { max-width: 100%; border: 1px solid #eee; margin: .4em 0; }
.note { color: #555; font-size: 13px; } dt { font-weight: 600; } dd { margin: 0 0 .5em 1.5em; }
pre { background: #f7f7f7; padding: .6em; overflow-x: auto; font-size: 12px; }
"""


def render_html(report: dict[str, Any]) -> str:
    """The whole page for one report (``ReplayReport.data``, strict-JSON form)."""
    session, run = report["session"], report["run"]
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>corticast replay: {_e(session['spec'])}</title><style>{_STYLE}</style></head>",
        "<body>",
        f"<h1>corticast replay: {_e(session['spec'])}</h1>",
        f"<p class='meta'>Created {_e(report['created'])} · mode <b>{_e(run['mode'])}</b> · "
        f"stride {run['stride']} · models {_e(', '.join(run['models']))} · "
        f"{_num(run['x_realtime'], 1)}x real time</p>",
        _summary(report),
        _accuracy(report),
        _strips(report),
        _waves(report),
        _stimulation(report),
        _sweep(report),
        _latency(report),
        _definitions(report),
        "</body></html>",
    ]
    return "\n".join(part for part in parts if part)


# ---------------------------------------------------------------------- sections
def _summary(report: dict[str, Any]) -> str:
    session, run, models = report["session"], report["run"], report["models"]
    seizures = session["seizures"]
    truth = (
        "no ground truth (a recording): accuracy and decisions are reported, sensitivity cannot be"
        if not session["ground_truth"]
        else f"ground truth with {len(seizures or [])} seizure(s)"
        + (": " + ", ".join(f"{on:.1f}–{off:.1f} s" for on, off in seizures) if seizures else "")
    )
    period_ms = 1e3 * run["stride"] / session["sample_rate_hz"]
    items = [
        f"Session: {session['duration_s']:.1f} s, {session['slots']} frame slots at "
        f"{session['sample_rate_hz']:g} Hz, {session['missing_frames']} dropped; {truth}.",
        f"Replay: <b>{_e(run['mode'])}</b>, a prediction every {run['stride']} frame(s) "
        f"({period_ms:.1f} ms), {len(run['models'])} model(s) on the same frames, "
        f"the loop ran at {_num(run['x_realtime'], 1)}x real time "
        f"({_num(run['replay_wall_s'], 1)} s wall; {_num(run.get('x_realtime_total'), 1)}x "
        "with reading the session and building this report"
        + (
            f"; {_num(run['x_realtime_cpu'], 1)}x by its CPU time, a floor for a machine with "
            "nothing else running"
            if run["mode"] == "fast" and run.get("x_realtime_cpu")
            else ""
        )
        + "). "
        "The bridge ran as a dry run, armed: every request was judged by every interlock "
        "and nothing was sent.",
    ]
    if not run["policy"]["target_electrodes"]:
        items.append(
            "<b>No target region is configured</b> ([policy] target_electrodes is empty): the "
            "policy never requests stimulation. Configure one to see decisions."
        )
    for name, entry in models.items():
        if entry["loop"].get("misaligned_predictions"):
            items.append(
                f"<b>Warning</b> ({_e(name)}): {entry['loop']['misaligned_predictions']} "
                "prediction(s) name a frame slot whose timestamp does not match the session's: "
                "frames were lost or added between rig and daemon, and their scores and "
                "decision times are unreliable."
            )
    items += [_model_sentence(name, entry) for name, entry in models.items()]
    header = [
        "model",
        "PSNR +1 (dB)",
        "PSNR +8",
        "PSNR +16",
        "persistence +16",
        "linear +16",
        "fitted AR +16",
        "SSIM +16",
        "requests",
        "triggers",
        "sensitivity",
        "false triggers / h",
        "median lead before onset (s)",
        "inference p50 / p99 (ms)",
    ]
    rows = []
    for name, entry in models.items():
        acc, stim = entry["accuracy"], entry["stimulation"]
        psnr, ssim = acc["psnr_db"], acc["ssim"]
        inference = entry["latency_ms"]["inference"] or {}
        rows.append(
            [
                name,
                _at(psnr, "model", 0),
                _at(psnr, "model", 7),
                _at(psnr, "model", 15),
                _at(psnr, "persistence", 15),
                _at(psnr, "linear", 15),
                _at(psnr, "ar", 15),
                _at(ssim, "model", 15, 3),
                stim["requests"],
                stim["triggers"],
                _fraction(stim),
                _num(stim["false_triggers_per_hour"], 2),
                _num(stim["median_lead_before_onset_s"], 3),
                f"{_num(inference.get('p50'), 2)} / {_num(inference.get('p99'), 2)}",
            ]
        )
    return (
        "<h2 id='summary'>Summary</h2><ul>"
        + "".join(f"<li>{item}</li>" for item in items)
        + "</ul>"
        + _table(header, rows)
        + "<p class='note'>PSNR and SSIM on predicted frames +1, +8, +16 (3.6, 28.8, 57.6 ms "
        "ahead), in the first model's normalised units with R = 2 (see Definitions). "
        "A trigger is a request that passed every interlock.</p>"
    )


def _model_sentence(name: str, entry: dict[str, Any]) -> str:
    acc, stim = entry["accuracy"], entry["stimulation"]
    psnr = acc["psnr_db"]
    if psnr:
        beats = all(
            _db_value(m) > _db_value(b)
            for base in _BASELINES
            for m, b in zip(psnr["model"], psnr[base], strict=True)
        )
        verdict = "beats" if beats else "does <b>not</b> beat"
        accuracy = (
            f"PSNR at +16 {_at(psnr, 'model', 15)} dB vs persistence "
            f"{_at(psnr, 'persistence', 15)}, linear {_at(psnr, 'linear', 15)} and fitted AR "
            f"{_at(psnr, 'ar', 15)} dB ({verdict} every baseline at every horizon) over "
            f"{acc['scored_windows']} windows"
        )
    else:
        accuracy = "no window could be scored"
    if stim["sensitivity"] is not None:
        detected = sum(1 for s in stim["seizures"] if s["detected"])
        decisions = (
            f"triggered on {detected}/{len(stim['seizures'])} seizures, median lead before "
            f"onset {_num(stim['median_lead_before_onset_s'], 3)} s, "
            f"{stim['false_triggers']} false trigger(s) "
            f"({_num(stim['false_triggers_per_hour'], 2)} per hour outside seizures)"
        )
    else:
        decisions = f"{stim['triggers']} trigger(s) ({_num(stim['triggers_per_hour'], 2)} per hour)"
    return f"<b>{_e(name)}</b>: {accuracy}; {decisions}."


def _accuracy(report: dict[str, Any]) -> str:
    models = report["models"]
    first = next(iter(models.values()))["accuracy"]
    if not first["psnr_db"]:
        return "<h2 id='accuracy'>Prediction accuracy</h2><p>No window could be scored.</p>"
    columns = [*models, *_BASELINES]

    def values(metric: str, column: str) -> list[Any]:
        source = models[column]["accuracy"] if column in models else first
        key = "model" if column in models else column
        return source[metric][key]

    header = ["horizon", *[f"{c}{' (baseline)' if c in _BASELINES else ''}" for c in columns]]
    rows = [
        [f"+{k + 1} ({3.6 * (k + 1):.1f} ms)", *[_num(values("psnr_db", c)[k], 2) for c in columns]]
        for k in range(len(first["psnr_db"]["model"]))
    ]
    for label, key in (
        ("all horizons pooled", "pooled_psnr_db"),
        ("pooled, windows in seizures", "pooled_psnr_db_in_seizure"),
        ("pooled, windows outside seizures", "pooled_psnr_db_outside_seizure"),
    ):
        rows.append([label, *[_num(_pooled(models, first, key, c), 2) for c in columns]])
    ssim_rows = [
        [f"+{k}", *[_num(values("ssim", c)[k - 1], 3) for c in columns]] for k in (1, 4, 8, 16)
    ]
    counts = ", ".join(
        f"{_e(n)}: {m['accuracy']['scored_windows']} scored, "
        f"{m['accuracy']['unscorable_windows']} left out"
        for n, m in models.items()
    )
    return (
        "<h2 id='accuracy'>Prediction accuracy</h2>"
        f"<p class='note'>Windows: {counts} (a window is left out when one of its 16 true "
        "frames was dropped). Baselines are scored on the first model's windows.</p>"
        "<h3>PSNR (dB) per horizon</h3>"
        + _table(header, rows)
        + _img(report, "psnr")
        + "<h3>SSIM per horizon</h3>"
        + _table(header, ssim_rows)
        + _img(report, "ssim")
    )


def _strips(report: dict[str, Any]) -> str:
    if "strips" not in report.get("figures", {}):
        return ""
    return (
        "<h2 id='examples'>Prediction examples</h2><p class='note'>Each group: the frames that "
        "really followed (top) and each model's prediction from the same window, at 1, 4, 8 "
        "and 16 frames ahead; colour scale shared within a group, µV.</p>" + _img(report, "strips")
    )


def _waves(report: dict[str, Any]) -> str:
    true = report["waves_true_frames"]
    header = ["comparison", "frames", "median speed error (%)", "median direction error (deg)"]
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
    table = _table(header, rows) if rows else "<p>No frame with a defined reference.</p>"
    return (
        "<h2 id='waves'>Travelling waves</h2><p class='note'>The loop's wave estimator "
        "(past frames + 16 predicted) against the same estimator with the 16 true frames in "
        f"place of the prediction ({true['windows']} windows) and against the generator's "
        "ground truth where it defines one velocity (plane waves, seizure discharges). Errors "
        "are per predicted frame; frames with no phase gradient (no finite speed) are not "
        "counted as errors.</p>"
        + table
        + _img(report, "waves")
        + _img(report, "waves_first_seizure")
    )


def _stimulation(report: dict[str, Any]) -> str:
    policy = report["run"]["policy"]
    parts = [
        "<h2 id='stimulation'>Stimulation decisions</h2>",
        "<p class='note'>Every request the policy made (all thresholds held on "
        f"{policy['persistence_frames']} consecutive predicted frames), placed at the time of "
        "the newest measured frame it was computed from, and what the bridge's interlocks "
        "did with it. Target electrodes: "
        f"{_e(str(policy['target_electrodes']) or 'none (the policy never requests)')}.</p>",
        _img(report, "decisions"),
    ]
    for name, entry in report["models"].items():
        stim = entry["stimulation"]
        parts.append(f"<h3>{_e(name)}</h3>")
        checks = ", ".join(f"{k} {v}" for k, v in sorted(stim["policy_decisions"].items()) if v)
        blocked = ", ".join(
            f"{k} {v}" for k, v in sorted(stim["blocked_by_first_interlock"].items())
        )
        parts.append(
            "<p>"
            f"Policy decisions by deciding check (ok = request): {_e(checks or 'none')}.<br>"
            f"Requests {stim['requests']}; triggers {stim['triggers']} "
            f"({_num(stim['triggers_per_hour'], 2)} per hour); blocked by interlock: "
            f"{_e(blocked or 'none')}.</p>"
        )
        if stim["seizures"]:
            parts.append(
                _table(
                    [
                        "seizure",
                        "onset (s)",
                        "offset (s)",
                        "triggers",
                        "first trigger (s)",
                        "lead before onset (s)",
                    ],
                    [
                        [
                            i + 1,
                            _num(s["onset_s"], 2),
                            _num(s["offset_s"], 2),
                            s["triggers"],
                            _num(s["first_trigger_s"], 3),
                            _num(s["lead_before_onset_s"], 3),
                        ]
                        for i, s in enumerate(stim["seizures"])
                    ],
                )
            )
        rows = stim["decisions"][:MAX_DECISION_ROWS]
        if rows:
            more = len(stim["decisions"]) - len(rows)
            parts.append(
                _table(
                    [
                        "time (s)",
                        "slot",
                        "outcome",
                        "in seizure",
                        "lead to target (ms)",
                        "policy",
                        "bridge",
                    ],
                    [
                        [
                            _num(r["time_s"], 3),
                            r["input_seq"],
                            r["outcome"],
                            "—" if r.get("seizure") is None else f"#{r['seizure'] + 1}",
                            _num(
                                None
                                if r["lead_time_to_target_s"] is None
                                else 1e3 * r["lead_time_to_target_s"],
                                1,
                            ),
                            _Left(r["policy_reason"]),
                            _Left(r["bridge_reason"]),
                        ]
                        for r in rows
                    ],
                )
                + (f"<p class='note'>{more} more in report.json.</p>" if more > 0 else "")
            )
    return "".join(parts)


def _sweep(report: dict[str, Any]) -> str:
    sweeps = {n: m["sweep"] for n, m in report["models"].items() if m["sweep"]}
    if not sweeps:
        return ""
    parts = [
        "<h2 id='sweep'>Policy sweep</h2><p class='note'>The same predictions and wave "
        "estimates judged by each policy variant (the other thresholds as configured), each "
        "with its own dry-run bridge.</p>",
        _img(report, "sweep"),
    ]
    for name, table in sweeps.items():
        keys = list(table[0]["values"])
        parts.append(f"<h3>{_e(name)}</h3>")
        parts.append(
            _table(
                [
                    *keys,
                    "requests",
                    "triggers",
                    "sensitivity",
                    "false triggers",
                    "false / h",
                    "median lead (s)",
                ],
                [
                    [
                        *[row["values"][k] for k in keys],
                        row["requests"],
                        row["triggers"],
                        _num(row["sensitivity"], 2),
                        _num(row["false_triggers"], 0),
                        _num(row["false_triggers_per_hour"], 2),
                        _num(row["median_lead_before_onset_s"], 3),
                    ]
                    for row in table
                ],
            )
        )
    return "".join(parts)


def _latency(report: dict[str, Any]) -> str:
    header = ["model", "quantity", "n", "p50 (ms)", "p90", "p99", "max"]
    rows = []
    labels = {
        "inference": "inference",
        "age": "ring -> published",
        "transit": "published -> received",
        "lsl_to_received": "LSL stamp -> received",
    }
    for name, entry in report["models"].items():
        for key, label in labels.items():
            p = entry["latency_ms"].get(key)
            if p:
                rows.append(
                    [
                        name,
                        _Left(label),
                        p["n"],
                        *[_num(p[q], 2) for q in ("p50", "p90", "p99", "max")],
                    ]
                )
    loop_rows = [
        [
            name,
            *[
                entry["loop"].get(k, "—")
                for k in (
                    "published_predictions",
                    "skipped_windows",
                    "refused_windows",
                    "superseded_predictions",
                    "missed_messages",
                )
            ],
        ]
        for name, entry in report["models"].items()
    ]
    note = (
        "Fast mode waits for nothing: 'ring -> published' is compute time only and no window "
        "is ever skipped."
        if report["run"]["mode"] == "fast"
        else "Realtime: times on the machine's LSL clock; skipped windows are those the "
        "daemon passed over because inference was still busy."
    )
    return (
        "<h2 id='latency'>Latency and skipped windows</h2>"
        f"<p class='note'>{note}</p>"
        + _table(header, rows)
        + _table(
            [
                "model",
                "predictions",
                "skipped windows",
                "refused windows",
                "superseded (wave stage)",
                "messages missed",
            ],
            loop_rows,
        )
        + _img(report, "latency")
    )


def _definitions(report: dict[str, Any]) -> str:
    items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in report["definitions"].items())
    run = report["run"]
    settings = {
        k: run[k] for k in ("scheduler", "policy", "waves", "interlocks", "sweep", "config")
    }
    return (
        "<h2 id='definitions'>Definitions and settings</h2>"
        f"<dl>{items}</dl><h3>Settings of this run</h3>"
        f"<pre>{_e(json.dumps(settings, indent=1))}</pre>"
    )


# ---------------------------------------------------------------------- helpers
class _Left(str):
    """A table cell to align left (text rather than a number)."""


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            left = i == 0 or isinstance(cell, _Left)
            cells.append(f"<td{' class=l' if left else ''}>{_e(str(cell))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _img(report: dict[str, Any], key: str) -> str:
    name = report.get("figures", {}).get(key)
    return f"<p><img src='{_e(name)}' alt='{_e(key)}'></p>" if name else ""


def _error_rows(label: str, errors: dict[str, Any]) -> list[list[Any]]:
    rows = [
        [
            _Left(label),
            errors["frames"],
            _num(errors["median_speed_error_pct"], 1),
            _num(errors["median_direction_error_deg"], 1),
        ]
    ]
    for pattern, sub in (errors.get("by_pattern") or {}).items():
        rows.append(
            [
                _Left(f"  … {pattern} frames"),
                sub["frames"],
                _num(sub["median_speed_error_pct"], 1),
                _num(sub["median_direction_error_deg"], 1),
            ]
        )
    return rows


def _pooled(models: dict[str, Any], first: dict[str, Any], key: str, column: str) -> Any:
    if column in models:
        return models[column]["accuracy"][key].get("model")
    return first[key].get(column)


def _at(values: dict[str, list[Any]], name: str, index: int, digits: int = 2) -> str:
    series = values.get(name) or []
    return _num(series[index], digits) if index < len(series) else "n/a"


def _fraction(stim: dict[str, Any]) -> str:
    if stim["sensitivity"] is None:
        return "n/a"
    detected = sum(1 for s in stim["seizures"] if s["detected"])
    return f"{detected}/{len(stim['seizures'])} ({stim['sensitivity']:.0%})"


def _db_value(value: float | None) -> float:
    """A PSNR from the JSON: null stands for +inf (a perfect prediction, MSE 0)."""
    return math.inf if value is None else float(value)


def _num(value: Any, digits: int) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}"


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)
