"""``corticast listen``: the daemon's ZeroMQ messages, one line each, as they arrive.

What a researcher runs first to see that predictions flow, before writing a client of their
own (``service.zmq_api.client``; the header of each topic is documented in
``service.zmq_api.publisher`` and the README). Lines are for reading; ``--json`` prints one JSON
object per message for tools (``jq``), with the payload summarised, not dumped.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from service.core.cli_options import ConfigOption
from service.core.errors import EXIT_UNUSABLE
from service.core.user_errors import fail, or_exit
from service.waves.summary import SUMMARY_FIELDS, wave_summary

SILENT_HINT_S = 5.0
"""After this long with nothing received, say where the messages would come from: ZeroMQ
connects to an endpoint no one binds without a word, so a daemon not running, or another
endpoint than the daemon's, shows only as silence."""


def listen(
    config: ConfigOption = None,
    topics: Annotated[
        str, typer.Option(help="Comma-separated topics: prediction, wave, stim, status.")
    ] = "prediction,wave,stim",
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per message (header + summary).")
    ] = False,
    pub: Annotated[
        str | None,
        typer.Option(help="PUB endpoint to connect to (default: [zmq] pub_endpoint, on loopback)."),
    ] = None,
    count: Annotated[int | None, typer.Option(help="Stop after this many messages.")] = None,
    seconds: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    server_key: Annotated[
        Path | None, typer.Option(help="CURVE: the daemon's public .key file.")
    ] = None,
    client_key: Annotated[
        Path | None, typer.Option(help="CURVE: this client's .key_secret file.")
    ] = None,
) -> None:
    """Print the daemon's ZeroMQ messages as they arrive, one line per message.

    A prediction line gives the newest input frame's sequence number and LSL time, the age of
    that frame at publication, the inference time and the peak predicted amplitude; a wave line
    the median speed and mean direction of the predicted frames that carry a wave (and how
    many do), and the median PGD and amplitude of all of them; a stim line the policy's check
    and reason and the bridge's verdict; a status line whether the daemon is armed (else why
    it was disarmed) and ready (else why not), the model's health, the stream's rate and
    newest sample age, the predictions so far and the faults.
    Gaps in each topic's msg_seq are counted and reported at the end.
    """
    from service.config import load_settings
    from service.zmq_api.client import HandshakeError, PredictionClient
    from service.zmq_api.wire import TOPICS

    chosen = tuple(t.strip() for t in topics.split(",") if t.strip())
    unknown = [t for t in chosen if t not in TOPICS]
    if not chosen or unknown:
        fail(f"--topics must name some of {', '.join(TOPICS)}, got {topics!r}", EXIT_UNUSABLE)
    settings = or_exit(lambda: load_settings(config))
    endpoint = pub or connectable(settings.zmq.pub_endpoint)
    client = or_exit(
        lambda: PredictionClient(
            endpoint,
            None,
            chosen,
            server_key_file=server_key,
            client_key_file=client_key,
        )
    )
    started = time.monotonic()
    deadline = None if seconds is None else started + seconds
    received = 0
    hinted = False
    typer.echo(f"listening on {endpoint} to {', '.join(chosen)} (Ctrl-C stops)", err=True)
    with client:
        try:
            while count is None or received < count:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                message = client.receive(timeout_s=min(left, 1.0) if left else 1.0)
                if message is None:
                    if not hinted and time.monotonic() - started >= SILENT_HINT_S:
                        hinted = _hint_silence(endpoint, chosen)
                    continue
                received += 1
                summary = summarise(message.topic, message.header, message.array)
                typer.echo(json.dumps(summary) if as_json else line(summary))
        except KeyboardInterrupt:
            pass
        except HandshakeError as err:  # a key the daemon refuses: nothing would ever come
            fail(str(err))
        missed = {topic: n for topic, n in client.missed.items() if n}
    if received == 0 and not hinted:
        _hint_silence(endpoint, chosen)
    noun = "message" if received == 1 else "messages"
    typer.echo(f"{received} {noun}; missed: {missed or 'none'}", err=True)


def _hint_silence(endpoint: str, topics: tuple[str, ...]) -> bool:
    """Say once why nothing may have arrived (True: said)."""
    said = (
        f"nothing received from {endpoint}: is `corticast serve` running, publishing there "
        "([zmq] pub_endpoint of its --config, or --pub)?"
    )
    if topics != ("status",):
        said += (
            " Predictions, waves and stim decisions come only while its stream is live "
            "(--topics status says why not)."
        )
    typer.echo(said, err=True)
    return True


def connectable(endpoint: str) -> str:
    """A bind endpoint as a client on this machine connects to it (``*``/``0.0.0.0`` ->
    loopback)."""
    for wildcard in ("//*:", "//0.0.0.0:", "//[::]:"):
        endpoint = endpoint.replace(wildcard, "//127.0.0.1:")
    return endpoint


def summarise(topic: str, header: dict[str, Any], payload: np.ndarray | None) -> dict[str, Any]:
    """The fields a line shows, as JSON-able values (``--json`` prints this)."""
    summary: dict[str, Any] = {"topic": topic, "msg_seq": header.get("msg_seq")}
    if topic == "prediction":
        latency = header.get("latency") or {}
        summary |= {
            "input_seq": header.get("input_seq"),
            "input_timestamp": header.get("input_timestamp"),
            "age_ms": _ms(latency.get("age_s")),
            "inference_ms": _ms(latency.get("inference_s")),
            "peak_abs_uv": None if payload is None else float(np.abs(payload).max()),
            "missing_frames": header.get("missing_frames"),
            "model": (header.get("predictor") or {}).get("model"),
        }
    elif topic == "wave":
        summary["input_seq"] = header.get("input_seq")
        summary |= _wave_medians(header, payload)
    elif topic == "stim":
        policy, bridge = header.get("policy") or {}, header.get("bridge") or {}
        summary |= {
            "input_seq": header.get("input_seq"),
            "check": policy.get("check"),
            "reason": policy.get("reason"),
            "outcome": bridge.get("outcome", "no bridge"),
        }
    elif topic == "status":
        stream, bridge = header.get("stream") or {}, header.get("bridge") or {}
        summary |= {
            "armed": header.get("armed"),
            "last_disarm_reason": bridge.get("last_disarm_reason"),
            "ready": header.get("ready"),
            "not_ready_reasons": header.get("not_ready_reasons") or [],
            "model_health": ((header.get("model") or {}).get("health") or {}).get("state"),
            "stream_rate_hz": stream.get("measured_rate_hz"),
            "stream_age_ms": _ms(stream.get("newest_age_s")),
            "predictions": (header.get("scheduler") or {}).get("predictions"),
            "faults": header.get("faults") or {},
        }
    else:
        summary["header"] = {k: v for k, v in header.items() if k not in ("schema", "topic")}
    return summary


def line(summary: dict[str, Any]) -> str:
    """One human-readable line of a :func:`summarise` result."""
    topic = summary["topic"]
    if topic == "prediction":
        return (
            f"prediction seq {summary['input_seq']} t {_num(summary['input_timestamp'], 4)} s  "
            f"age {_num(summary['age_ms'], 2)} ms  inference {_num(summary['inference_ms'], 2)} "
            f"ms  peak {_num(summary['peak_abs_uv'], 1)} µV  missing {summary['missing_frames']}"
        )
    if topic == "wave":
        return (
            f"wave       seq {summary['input_seq']} speed {_num(summary.get('speed_mps'), 3)} "
            f"m/s  direction {_num(summary.get('direction_deg'), 0)}° "
            f"(of {summary.get('wave_frames', '-')} wave frames)  "
            f"pgd {_num(summary.get('pgd'), 2)}  "
            f"amplitude {_num(summary.get('amplitude_uv'), 1)} µV"
        )
    if topic == "stim":
        return (
            f"stim       seq {summary['input_seq']} {summary['check']}: {summary['reason']}  "
            f"-> {summary['outcome']}"
        )
    if topic == "status":
        return _status_line(summary)
    return f"{topic:<10} {json.dumps(summary['header'])}"


def _status_line(summary: dict[str, Any]) -> str:
    """What an on-call engineer checks first (armed? ready? why not?), then the numbers."""
    armed = "ARMED" if summary["armed"] else f"disarmed ({summary['last_disarm_reason'] or '-'})"
    reasons = summary["not_ready_reasons"]
    ready = "ready" if summary["ready"] else "not ready: " + "; ".join(reasons or ["-"])
    faults = ", ".join(f"{stage} {_num(n, 0)}" for stage, n in summary["faults"].items()) or "none"
    return (
        f"status     {armed}  {ready}  model {summary['model_health']}  "
        f"stream {_num(summary['stream_rate_hz'], 2)} Hz, newest "
        f"{_num(summary['stream_age_ms'], 1)} ms old  predictions {summary['predictions']}  "
        f"faults {faults}"
    )


def _wave_medians(header: dict[str, Any], payload: np.ndarray | None) -> dict[str, float | None]:
    """The daemon's own summary of the predicted frames (``service.waves.summary``, as in
    ``/status``), from the payload's columns; None where it is undefined or absent."""
    fields = header.get("fields") or []
    predicted = int(header.get("n_predicted") or 0)
    if (
        payload is None
        or payload.ndim != 2
        or predicted < 1
        or not set(SUMMARY_FIELDS) <= set(fields)
    ):
        return dict.fromkeys(SUMMARY_FIELDS)
    rows = payload[-predicted:]
    summary = wave_summary(*(rows[:, fields.index(name)] for name in SUMMARY_FIELDS))
    return {name: value if math.isfinite(value) else None for name, value in summary.items()}


def _ms(seconds: Any) -> float | None:
    return None if not isinstance(seconds, int | float) else seconds * 1e3


def _num(value: Any, digits: int) -> str:
    if not isinstance(value, int | float) or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}f}"
