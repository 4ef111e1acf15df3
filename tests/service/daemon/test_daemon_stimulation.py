"""Stimulation requests through the whole daemon: scheduler -> loop -> policy -> bridge ->
emulator, with a real rig process, the emulator over UDP and uvicorn; what the interlocks
were told is read back from the audit log and checked against what the loop measured."""

import math
import re
import threading

import httpx
import numpy as np
import pylsl
import pytest

from bench.data.session import Session
from bench.data.session_io import read_xdf, write_xdf
from bench.data.synth import SynthConfig, generate_session
from bench.demo import TARGET, DemoOperator
from bench.replay.timeline import lay_out
from bench.rig.frame_source import SessionSource
from bench.rig.rig import SimulatedRig
from bench.rig.stimulation_artefact import StimulationArtefact
from firmware_bridge import read_audit_log
from service.api.served import ServedDaemon
from service.core.stimulation_markers import STREAM_NAME as STIMULATION_STREAM
from service.core.stimulation_markers import STREAM_TYPE as STIMULATION_TYPE
from service.core.stimulation_markers import StimulationMarker, parse_marker
from service.zmq_api.client import PredictionClient
from tests.service._loop_harness import (
    AUTH,
    Emulator,
    Rig,
    arm_when_ready,
    loop_settings,
    wait_until,
)

pytestmark = pytest.mark.slow

REQUEST_ALWAYS = {
    "target_electrodes": TARGET,
    "min_pgd": 0.0,
    "min_speed_mps": 1e-3,
    "max_speed_mps": 1e3,
    "min_amplitude_sd": 1e-6,
    "max_direction_error_deg": 180.0,
    "min_lead_ms": 0.0,
    "max_lead_ms": 1e9,
    "persistence_frames": 1,
}
"""The demo's target region with every other threshold at its permissive end: the test model
(3 training steps) predicts no seizure, so with these nearly every judged prediction becomes a
request and every request exercises the interlocks' inputs."""
STALE_AFTER_S = 0.5
"""The staleness interlock's limit here: generous, so that a loaded machine's lag shows up as
``stale_data`` blocks (which are checked) rather than leaving nothing sent."""
BASELINE_S = 0.5
"""``[loop] robust_sd_seconds`` here: the background the policy's amplitude unit is taken from,
which the first decision waits for (139 frames; 2 s, 556 frames, by default)."""
SCORED_BEFORE_PROVEN = 300
"""``health_min_scored`` here: more predictions than the 139 frames of background
(``BASELINE_S``) the first decision waits for, so the first decisions come while the model is
still unproven."""


def _requesting_settings(tmp_path, exported, source_id: str, scored_before_proven: int):
    """The bridge live, the policy requesting at nearly every judged prediction
    (``REQUEST_ALWAYS``) from ``BASELINE_S`` of data on, a generous staleness limit, and a
    model proven healthy once ``scored_before_proven`` of its predictions are scored (whatever
    its PSNR)."""
    _, window, step = exported
    return loop_settings(
        tmp_path,
        window,
        step,
        source_id,
        policy=REQUEST_ALWAYS,
        interlocks={"max_sample_age_s": STALE_AFTER_S},
        loop={
            "health_min_scored": scored_before_proven,
            "health_margin_db": 20.0,
            "robust_sd_seconds": BASELINE_S,
        },
    )


class _StimWatcher:
    """Subscribes to the daemon's ``stim`` topic; for each request, counts the missing frames
    in the ring at once (before they are overwritten) over the predictor's 16-frame window and
    over the wave estimate's whole measured window."""

    def __init__(self, daemon) -> None:
        self._daemon = daemon
        self.requests: dict[int, dict] = {}  # request_id -> what the loop had
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="test-stim", daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    def _watch(self) -> None:
        ring = self._daemon.ingestor.ring
        measured = self._daemon.settings.waves.past_frames
        with PredictionClient(self._daemon.publisher.endpoint, None, topics=("stim",)) as client:
            self._ready.set()
            while not self._stop.is_set():
                message = client.receive(timeout_s=0.2)
                if message is None or message.header["bridge"] is None:
                    continue
                seq = message.header["input_seq"]
                self.requests[message.header["bridge"]["request_id"]] = {
                    "missing_in_prediction_window": _missing(ring, seq, 16),
                    "missing_in_wave_window": _missing(ring, seq, measured),
                    "record": message.header["bridge"],
                }

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def _missing(ring, newest_seq: int, frames: int) -> int:
    window = ring.read_since(newest_seq - frames + 1, max_frames=frames)
    assert len(window) == frames and window.seq[-1] == newest_seq, "overwritten before read"
    return int(frames - np.count_nonzero(window.valid))


@pytest.mark.timeout(240)  # on a starved machine, 300 predictions take a while
def test_requests_reach_the_bridge_with_the_interlock_inputs_the_loop_measured(
    tmp_path, exported, source_id
):
    settings = _requesting_settings(tmp_path, exported, source_id, SCORED_BEFORE_PROVEN)
    rig = Rig(source_id, drop_probability=0.02).start()
    emulator = Emulator(settings).start()
    # /status's model health, between two readings of the bridge's request counter.
    health_seen: list[tuple[int, int, str]] = []
    try:
        with ServedDaemon(settings) as served, httpx.Client(base_url=served.url) as http:
            daemon = served.daemon
            watcher = _StimWatcher(daemon)
            # The demo's operator: arms once ready (the model is still unproven: allowed), and
            # re-arms after a fault (a loaded machine's stream can stall past the limit).
            operator = DemoOperator(daemon, lambda line: None, rearm_after_s=0.5)
            assert operator.arm_when_ready(60)
            last: dict = {}

            def proven_and_sent() -> bool:
                before = daemon.bridge.status().requests
                last.update(http.get("/status").json())
                model = last["model"]
                state = model.get("health", {}).get("state", "healthy" if model["healthy"] else "?")
                health_seen.append((before, daemon.bridge.status().requests, state))
                operator.tend()
                return model["healthy"] and len(emulator.device.pulses) >= 1

            try:
                wait_until(proven_and_sent, 150, "a proven model and a delivered train")
            except AssertionError as err:
                keys = ("armed", "model", "bridge", "faults", "scheduler", "not_ready_reasons")
                raise AssertionError(f"{err}; last status: {[last.get(k) for k in keys]}") from None
            watcher.stop()
            running_until = daemon.bridge.status().requests  # later ones may see the stop
    finally:
        rig.kill()
        emulator.stop()

    decisions = [r for r in read_audit_log(settings.bridge.audit_log) if r["event"] == "decision"]
    assert decisions, "no request reached the bridge"
    sent = [r for r in decisions if r["outcome"] == "sent"]
    assert len(sent) == len(emulator.device.pulses) >= 1

    # Age: measured (never a constant), on one clock (not seconds apart), and the staleness
    # interlock applied to exactly what it was told.
    for record in decisions:
        age = record["health"]["newest_sample_age_s"]
        assert age is not None and math.isfinite(age) and 0 < age < 10, record
        assert ("stale_data" in record["interlocks"]) == (age > STALE_AFTER_S), record

    # Missing frames: counted over (at least) the frames the prediction used and (at most)
    # the wave estimate's, and the interlock applied to that count.
    limit = settings.interlocks.max_missing_frames
    seen = watcher.requests
    assert seen, "no stim message seen"
    for loop_had in seen.values():
        recorded = loop_had["record"]["health"]["missing_frames"]
        assert loop_had["missing_in_prediction_window"] <= recorded, loop_had
        assert recorded <= loop_had["missing_in_wave_window"], loop_had
        assert ("missing_frames" in loop_had["record"]["interlocks"]) == (recorded > limit)
    assert any(r["record"]["health"]["missing_frames"] > 0 for r in seen.values())
    audited = {r["request_id"]: r for r in decisions}
    for request_id, loop_had in seen.items():  # the audit log holds what the loop published
        if request_id in audited:
            assert audited[request_id]["health"] == loop_had["record"]["health"]

    # Model health: what /status reported, and the model interlock applied to it. One wave
    # thread makes requests, so at most one request is between its health reading and its
    # request_id: requests numbered up to a counter read before a poll that said "unproven"
    # were judged unproven; those numbered past one read after "healthy", plus one, healthy
    # (until the test stops the daemon: a stopped model is "not running", not healthy).
    assert {state for _, _, state in health_seen} <= {"unproven", "healthy"}
    unproven_up_to = max((before for before, _, s in health_seen if s == "unproven"), default=0)
    healthy_after = 1 + min(after for _, after, s in health_seen if s == "healthy")
    by_id = sorted(
        (r for r in decisions if r["request_id"] <= running_until), key=lambda r: r["request_id"]
    )
    for record in by_id:
        healthy = record["health"]["model_healthy"]
        assert ("model" in record["interlocks"]) == (not healthy), record
        context = (record, unproven_up_to, healthy_after, health_seen)
        if record["request_id"] <= unproven_up_to:
            assert healthy is False, context
        elif record["request_id"] > healthy_after:
            assert healthy is True, context
    flags = [r["health"]["model_healthy"] for r in by_id]
    assert flags == sorted(flags), "health went back from proven to unproven"
    assert not flags[0], "never seen unproven"


def test_a_swapped_in_model_is_unproven_until_scored_and_may_be_armed_meanwhile(
    tmp_path, exported, source_id
):
    _, window, step = exported
    copy = window.with_name(f"copy-{source_id}.onnx")  # in the model directory, as swaps must be
    copy.write_bytes(window.read_bytes())  # same weights, another file: a real reload
    needed = 150  # the status right after the swap comes well within that many predictions
    settings = loop_settings(
        tmp_path, window, step, source_id,
        loop={"health_min_scored": needed, "health_margin_db": 20.0},
    )  # fmt: skip
    rig = Rig(source_id).start()
    emulator = Emulator(settings).start()
    try:
        with ServedDaemon(settings) as served, httpx.Client(base_url=served.url) as http:
            daemon = served.daemon

            def proven() -> bool:
                return daemon.accuracy.scored >= needed and daemon.model_healthy()

            wait_until(proven, 60, "the model to be proven")
            swap = http.put("/control/model", headers=AUTH, json={"path": str(copy)})
            assert swap.status_code == 200, swap.text

            model = http.get("/status").json()["model"]
            assert model["model_path"] == str(copy.resolve())  # served as resolved
            assert model["healthy"] is False, "a model swapped in a moment ago is called healthy"
            assert model["health"]["state"] == "unproven"
            scored = model["health"]["scored"]
            assert scored < needed and model["health"]["needed"] == needed
            assert model["health"]["summary"].startswith(
                f"unproven: {scored} of {needed} predictions scored"
            )
            assert not daemon.model_healthy()  # what the bridge's model interlock is told
            # Arming is allowed while unproven (the model interlock blocks every request).
            assert arm_when_ready(http) == {"armed": True}
            wait_until(proven, 60, "the new model to be proven")
            assert http.get("/status").json()["model"]["health"]["state"] == "healthy"
    finally:
        rig.kill()
        emulator.stop()


def test_a_delivered_train_s_artefact_never_reaches_the_loop_as_measured(
    tmp_path, exported, source_id
):
    """The rig records each train the emulator delivers (``bench.rig.stimulation_artefact``:
    mV at the target, the amplifier's recovery after); the daemon, having had the train sent,
    blanks every frame the artefact is on before any stage reads it as cortex. Read back from
    the daemon's own ring: each frame stamped in a train's artefact window is missing and
    holds a value of the background, never the artefact's."""
    settings = _requesting_settings(tmp_path, exported, source_id, scored_before_proven=50)
    emulator = Emulator(settings).start()
    session = generate_session(SynthConfig(duration_s=20.0, seed=3))
    rig = SimulatedRig(
        SessionSource(session, loop=True),
        name=settings.stream.name,
        source_id=source_id,
        artefact=StimulationArtefact(emulator.device, session.grid),
    )
    try:
        with rig, ServedDaemon(settings) as served, httpx.Client(base_url=served.url) as http:
            daemon = served.daemon
            markers = _marker_inlet(f"{source_id}-stimulation")
            recorder = _recording_inlet(source_id)  # the rig's stream, as LabRecorder reads it
            operator = DemoOperator(daemon, lambda line: None, rearm_after_s=0.5)
            assert operator.arm_when_ready(60)
            ring = daemon.ingestor.ring

            def recovered_from_a_train() -> bool:
                operator.tend()
                windows = rig.artefact.windows
                return bool(windows) and ring.latest(1).timestamps[0] > windows[0][1] + 0.2

            wait_until(recovered_from_a_train, 150, "a train delivered and recovered from")
            held = ring.read_since(0)
            status = http.get("/status").json()
            metrics = http.get("/metrics").text
            text, stamp = markers.pull_sample(timeout=30)
            recorded, recorded_stamps = recorder.pull_chunk(timeout=0.0, max_samples=100_000)
    finally:
        emulator.stop()

    start, end = rig.artefact.windows[0]
    on_artefact = (held.timestamps >= start) & (held.timestamps <= end)
    assert on_artefact.sum() >= 10, "the ring no longer holds the train's frames"
    assert not held.valid[on_artefact].any()
    # What the rig pushed there carried the artefact (up to its 5 mV rail); what the ring
    # holds there is the frame before the train, the background's size.
    pushed = session.frames.std()
    assert np.abs(rig.artefact.at(held.timestamps[on_artefact])).max() > 50 * pushed
    assert np.abs(held.frames[on_artefact]).max() < 10 * pushed
    assert held.valid[held.timestamps > end + 0.1].mean() > 0.9  # measured again after
    assert status["stream"]["blanked_frames"] >= on_artefact.sum()
    # The train is on the marker stream too, stamped at its sending: what it blanked covers
    # the artefact, and it names the train the emulator delivered.
    assert text is not None, "no stimulation marker"
    marker = parse_marker(text[0])
    assert isinstance(marker, StimulationMarker)
    assert stamp <= start and stamp + marker.blank_s >= end
    delivered = emulator.device.pulses[0]
    assert marker.outcome == "sent"
    assert list(marker.channels) == delivered["channels"]
    assert marker.train_duration_ms == delivered["train_duration_ms"]
    counted = re.search(r"^corticast_ingest_blanked_frames_total (\S+)$", metrics, re.MULTILINE)
    assert counted is not None and float(counted[1]) >= on_artefact.sum()

    # Recorded with the markers (as LabRecorder records both streams) and replayed, the
    # session's frames are blanked where the daemon's ring blanked them live.
    path = tmp_path / "recorded.xdf"
    write_xdf(
        path,
        Session(
            np.asarray(recorded, np.float32).reshape(-1, *session.grid.shape),
            np.asarray(recorded_stamps),
            info={"stimulation": [{"time": stamp, **marker.model_dump(mode="json")}]},
        ),
    )
    replayed = read_xdf(path)
    timeline = lay_out(replayed, settings.stream.sample_rate_hz, max_fill=10**6)
    blanked_in_replay = replayed.timestamps[0] + timeline.times_s[timeline.blanked]
    in_both = (held.timestamps >= replayed.timestamps[0]) & (held.timestamps <= stamp + 1.0)
    blanked_live = held.timestamps[in_both & (held.timestamps >= stamp)]
    blanked_live = blanked_live[blanked_live <= stamp + marker.blank_s]
    assert blanked_live.size >= 10
    # The same frames, on two inlets' clock offsets (µs apart): a frame within that of an
    # edge may fall either side.
    assert abs(blanked_in_replay.size - blanked_live.size) <= 1
    nearest = np.abs(blanked_in_replay[:, None] - blanked_live[None, :]).min(axis=1)
    assert np.count_nonzero(nearest < 1e-4) >= blanked_in_replay.size - 1


def _marker_inlet(source_id: str) -> pylsl.StreamInlet:
    """An inlet on the daemon's stimulation markers, subscribed before any train is sent
    (an outlet sends an inlet only what it pushes after the inlet opens)."""
    (info,) = pylsl.resolve_byprop("source_id", source_id, minimum=1, timeout=30)
    assert info.type() == STIMULATION_TYPE and info.name() == STIMULATION_STREAM
    inlet = pylsl.StreamInlet(info)
    inlet.open_stream(timeout=30)
    return inlet


def _recording_inlet(source_id: str) -> pylsl.StreamInlet:
    """An inlet on the rig's stream that keeps what it receives until pulled, stamped on this
    host's clock as the daemon's ingestor stamps it."""
    (info,) = pylsl.resolve_byprop("source_id", source_id, minimum=1, timeout=30)
    inlet = pylsl.StreamInlet(info, max_buflen=60, processing_flags=pylsl.proc_clocksync)
    inlet.open_stream(timeout=30)
    return inlet
