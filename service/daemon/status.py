"""What the daemon reports about itself: readiness, the status document served at
``/status`` and by the ZeroMQ status query, and the part of it the ``status`` topic carries.

Readiness means: started and not stopping, the stream live, measured at the rate it must keep
and stamped no later than it arrives, the model running, the wave stage (which turns
predictions into stimulation requests) running, neither of them stuck in a call
(``service.daemon.stalls``), the bridge connected (or in dry run) and not refusing to arm.
The document is a snapshot of every stage, strict JSON (no NaN, no numpy scalars), built from
the daemon's parts as they are when asked.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from firmware_bridge import StimulationBridge
from service.core.scores import PSNR_SCALE
from service.inference.scheduler import Scheduler
from service.ingest.ingestor import Ingestor
from service.ingest.lsl import wanted

if TYPE_CHECKING:
    from service.daemon.daemon import Daemon


@dataclass(frozen=True)
class Readiness:
    """Whether the daemon may be armed, and if not, every reason why not."""

    ready: bool
    reasons: tuple[str, ...]

    @classmethod
    def judge(
        cls,
        ingestor: Ingestor,
        scheduler: Scheduler | None,
        bridge: StimulationBridge | None,
        *,
        started: bool,
        stopping: bool,
        reload_failure: str | None,
        waves_running: bool = True,
        waves_failure: str | None = None,
        model_waiting: str | None = None,
        serving_refusal: str | None = None,
        control_plane_down: str | None = None,
        markers_unread: tuple[str, ...] = (),
        stalled: tuple[str, ...] = (),
        bridge_failure: str | None = None,
    ) -> Readiness:
        """Judge the stages as they are now; ``reload_failure`` is the supervisor's latest
        error reloading the model, if that is failing; ``waves_running`` whether the wave
        stage runs (armed without it, nothing would ever be requested) and ``waves_failure``
        the supervisor's latest error restarting it; ``model_waiting`` why a loaded model
        cannot predict yet (a robust-online model before its first input statistics);
        ``serving_refusal`` why no measured way of serving the model fits this host;
        ``control_plane_down`` why the HTTP API and query socket (in a process of their own)
        do not serve; ``markers_unread`` why each stimulation marker stream of another tool
        is not read (its trains would be read as cortex); ``stalled`` why the scheduler or
        the wave stage is taken as stuck (armed, the loop would not be closed);
        ``bridge_failure`` the supervisor's latest error replacing a failed bridge (its
        close still under way)."""
        reasons = []
        if not started:
            reasons.append("daemon not started")
        if stopping:
            reasons.append("daemon stopping")
        connected = ingestor.status().connected
        fresh = ingestor.is_fresh()
        if not fresh:  # none found names what is looked for: a [stream] setting may be wrong
            found = (
                "data stale"
                if connected
                else "no stream found yet with " + wanted(ingestor.stream_settings)
            )
            reasons.append("stream not live: " + found)
        # Fresh is connected too: a stream back since ``connected`` was read has its rate
        # not measured yet, and must not pass unchecked.
        if (connected or fresh) and (rate_problem := ingestor.rate_problem()) is not None:
            reasons.append(rate_problem)
        if (connected or fresh) and (ahead := ingestor.stamp_lead_problem()) is not None:
            reasons.append(ahead)
        if scheduler is None or not scheduler.running:
            reasons.append(
                "model not running"
                + (f": reload failed: {reload_failure}" if reload_failure else "")
            )
        if not waves_running:
            reasons.append(
                "wave stage not running"
                + (f": restart failed: {waves_failure}" if waves_failure else "")
            )
        reasons.extend(stalled)
        if model_waiting is not None:
            reasons.append(model_waiting)
        if serving_refusal is not None:
            reasons.append(serving_refusal)
        if control_plane_down is not None:
            reasons.append(control_plane_down)
        reasons.extend(markers_unread)
        state = bridge.status() if bridge is not None else None
        if state is not None and state.error is not None:
            reasons.append(
                f"stimulator bridge failed: {state.error}"
                + (f"; not reopened yet: {bridge_failure}" if bridge_failure else "")
            )
        elif state is None or not (state.dry_run or state.connected):
            reasons.append("stimulator bridge not connected")
        if state is not None and state.arming_refused is not None:
            reasons.append(f"stimulator bridge refuses arming: {state.arming_refused}")
        return cls(not reasons, tuple(reasons))


def status_document(daemon: Daemon) -> dict[str, Any]:
    """JSON-able snapshot of ``daemon`` for ``/status`` and the ZeroMQ status query."""
    readiness = daemon.readiness()
    ingest = dataclasses.asdict(daemon.ingestor.status())
    bridge = daemon.bridge.status() if daemon.bridge is not None else None
    loop = daemon.loop
    latency = np.array(loop.recent_latency) if loop is not None else np.zeros(0)
    decision_age = np.array(loop.recent_decision_age) if loop is not None else np.zeros(0)
    record = daemon.accuracy.record() if daemon.accuracy is not None else None
    health = daemon.model_health()
    scheduler = daemon.scheduler
    settings = daemon.settings
    return _json_safe(
        {
            "ready": readiness.ready,
            "not_ready_reasons": list(readiness.reasons),
            "stream": {
                **ingest,
                "stimulation_marker_streams": [i.status() for i in daemon.marker_inlets],
            },
            "model": {
                **(dataclasses.asdict(daemon.predictor.info) if daemon.predictor else {}),
                "files": daemon.model_files.as_dict(),
                "held_out_shortfall_db": daemon.model_files.held_out_shortfall,
                "held_out_check_data": daemon.model_files.held_out_check_data,
                "healthy": health.healthy,
                "health": {
                    "state": health.state,
                    "scored": health.scored,
                    "needed": health.needed,
                    "summary": health.describe(),
                    # What it is judged on: PSNR of the MSE pooled over all horizons.
                    "model_psnr_db": health.model_psnr_db,
                    "persistence_psnr_db": health.persistence_psnr_db,
                },
            },
            "serving": daemon.serving_status(),
            "scheduler": {
                "stride": settings.scheduler.stride,
                "missing_frames": settings.scheduler.missing_frames,
                "predictions": scheduler.predictions if scheduler else 0,
                "skipped_windows": scheduler.skipped if scheduler else 0,
                "refused_windows": scheduler.refused if scheduler else 0,
                "wave_stage_superseded": loop.superseded if loop else 0,
                # Served by a model a swap or reload replaced, never scored (live_accuracy).
                "unscored_after_swap": (
                    daemon.accuracy.unscored_after_swap if daemon.accuracy is not None else 0
                ),
                # Held values (NaN from a broken contact) in true frames, left out of them.
                "held_values_not_scored": (
                    daemon.accuracy.held_values_not_scored if daemon.accuracy is not None else 0
                ),
                # Live scores forgotten for a stimulation marker that came late.
                "scores_forgotten": (
                    daemon.accuracy.scores_forgotten if daemon.accuracy is not None else 0
                ),
                # Rests under a real-time policy ([realtime] idle_share), seconds.
                "rested_s": scheduler.rested_s if scheduler else 0.0,
                "wave_stage_rested_s": loop.rested_s if loop else 0.0,
            },
            "latency_ms": _percentiles(latency, decision_age),
            "live_psnr_db": {k: v.tolist() for k, v in record.psnr.items()} if record else {},
            "live_pooled_psnr_db": record.pooled_psnr if record else {},
            "live_psnr_scale": PSNR_SCALE,
            "blend": daemon.blend.status(),
            "waves": loop.latest_wave if loop else None,
            "dead_electrodes": loop.dead_electrodes if loop else [],
            "noisy_electrodes": loop.noisy_electrodes if loop else [],
            "armed": bool(bridge and bridge.armed),
            "bridge": dataclasses.asdict(bridge) if bridge else None,
            "interlocks": settings.interlocks.model_dump(mode="json"),
            "policy": daemon.policy.model_dump(mode="json"),
            "last_stimulation_decision": loop.latest_decision if loop else None,
            "trains_decided_on_late_artefact": loop.trains_decided_on_late_artefact if loop else 0,
            "realtime": {
                "policy": settings.realtime.policy,
                "ingest": daemon.ingestor.placement_report,
                "inference": scheduler.placement_report if scheduler else None,
                "zmq_io": daemon.publisher_io_report,
            },
            "faults": daemon.supervisor.fault_counts(),
            "supervisor_steps_failing": daemon.supervisor.failing(),
        }
    )


_STATUS_TOPIC_FIELDS: dict[str, tuple[str, ...] | None] = {
    "armed": None,
    "ready": None,
    "not_ready_reasons": None,
    "stream": (
        "connected", "fresh", "newest_age_s", "measured_rate_hz", "rate_problem",
        "stamp_lead_s", "stamp_lead_problem", "missing_frames", "blanked_frames", "gaps",
        "reconnects",
    ),
    "model": ("model", "healthy", "health"),
    "scheduler": ("stride", "predictions", "skipped_windows"),
    "latency_ms": None,
    "bridge": (
        "connected", "dry_run", "last_disarm_reason", "last_disarm_cause",
        "minute_budget_left", "day_budget_left", "error", "arming_refused",
    ),
    "faults": None,
    "supervisor_steps_failing": None,
}  # fmt: skip
"""What the ``status`` topic carries of the document: key -> its fields kept (None: all)."""


def status_topic_header(document: dict[str, Any]) -> dict[str, Any]:
    """The ``status`` topic's header: the part of ``document`` (a :func:`status_document`) a
    subscriber watches the loop by, under the same names as in ``/status``; the rest (the
    policy, interlocks, serving table, live scores per horizon) stays a query away."""
    header = {}
    for key, fields in _STATUS_TOPIC_FIELDS.items():
        value = document[key]
        if fields is not None and value is not None:
            value = {field: value[field] for field in fields if field in value}
        header[key] = value
    return header


def _percentiles(latency: np.ndarray, decision_age: np.ndarray) -> dict[str, float | None]:
    """p50 and p99, in ms, of recent predictions' inference time and age, and of the data's
    age at recent policy decisions (None before there is any)."""
    pairs = latency.reshape(-1, 2)  # (inference, age) per prediction
    samples = {"inference": pairs[:, 0], "age": pairs[:, 1], "decision_age": decision_age}
    return {
        f"{name}_p{q}": float(np.percentile(1e3 * samples[name], q)) if samples[name].size else None
        for name in ("inference", "age", "decision_age")
        for q in (50, 99)
    }


def _json_safe(value: Any) -> Any:
    """NaN/inf become None and numpy scalars plain numbers, so the snapshot is strict JSON."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    return value
