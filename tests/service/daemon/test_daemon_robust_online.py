"""A robust-online model in the running daemon: swapped in, fed its statistics from the ring by
the daemon's own updater, each prediction the model applied with the statistics of its time."""

import dataclasses
import time

import httpx
import numpy as np
import onnx
import pytest

from models.metadata import METADATA_KEY, read_model_metadata
from service.api.served import ServedDaemon
from service.core.robust_scale import RobustScale, refresh_boundary, robust_stats
from service.daemon.daemon import Daemon
from service.inference import scale_updater
from service.inference.onnx_predictor import OnnxPredictor
from service.zmq_api.client import PredictionClient
from tests.service._loop_harness import (
    TOKEN,
    Emulator,
    Rig,
    arm_daemon_when_ready,
    loop_settings,
    wait_until,
)

pytestmark = pytest.mark.slow
SCALE = RobustScale(window_s=2.0, update_s=0.25, min_s=0.25)


def _robust_copy(window, name):
    """The tiny model's window graph relabelled robust-online (same weights, new metadata)."""
    model = onnx.load(str(window))
    metadata = read_model_metadata(window)
    metadata = dataclasses.replace(metadata, normalisation=SCALE.to_dict())
    for entry in model.metadata_props:
        if entry.key == METADATA_KEY:
            entry.value = metadata.to_json()
    out = window.with_name(name)  # in the model directory, as swaps must be
    onnx.save(model, str(out))
    return out


def test_a_robust_online_model_is_fed_statistics_from_the_ring(tmp_path, exported, source_id):
    _, window, step = exported
    settings = loop_settings(tmp_path, window, step, source_id)
    robust = _robust_copy(window, f"robust-{source_id}.onnx")
    rig = Rig(source_id).start()
    try:
        with ServedDaemon(settings) as served, httpx.Client(base_url=served.url) as http:
            daemon = served.daemon
            wait_until(lambda: daemon.scheduler.predictions > 20, 30, "predictions")
            auth = {"Authorization": f"Bearer {TOKEN}"}
            swap = http.put("/control/model", headers=auth, json={"path": str(robust)})
            assert swap.status_code == 200, swap.text
            assert daemon.scale_updater.not_ready_reason() is None  # stats at once, from the ring
            reference = OnnxPredictor(robust, daemon.stream_spec, threads=1)
            window_frames, update, least = SCALE.frames(daemon.stream_spec.sample_rate_hz)
            checked = 0
            with PredictionClient(daemon.publisher.endpoint, None) as client:
                deadline = time.monotonic() + 30
                while checked < 5 and time.monotonic() < deadline:
                    message = client.receive(timeout_s=1.0)
                    if message is None or message.header["predictor"]["model_path"] != str(
                        robust.resolve()
                    ):
                        continue
                    seq = message.header["input_seq"]
                    ring = daemon.ingestor.ring
                    past = ring.read_since(seq - 15, max_frames=16).frames
                    # The statistics of the last refresh boundary, or of the one before when
                    # the prediction ran while the updater was still computing the new ones.
                    matches = []
                    for boundary in (
                        refresh_boundary(seq, update),
                        refresh_boundary(seq, update) - update,
                    ):
                        first = max(0, boundary - window_frames)
                        held = ring.read_since(first, max_frames=boundary - first)
                        centre, scale = robust_stats(held.frames, held.valid, least)
                        reference.normaliser.set_stats(centre, scale)
                        want = reference.predict(past)
                        matches.append(np.allclose(message.array, want, atol=1e-4 * scale.max()))
                    assert any(matches), f"prediction at {seq} used neither refresh's statistics"
                    checked += 1
            assert checked == 5
            status = http.get("/status").json()
            assert status["model"]["model_path"] == str(robust.resolve())
            assert status["ready"] or "statistics" not in " ".join(status["not_ready_reasons"])
    finally:
        rig.kill()


def test_a_failed_statistics_updater_disarms_and_is_restarted(
    tmp_path, exported, source_id, monkeypatch
):
    """The updater is a stage of the loop like the others: when its thread dies the model
    runs on frozen input statistics, so the fault disarms first, then the updater is started
    again. It used to stay dead, armed, with only the readiness saying why."""
    _, window, step = exported
    settings = loop_settings(tmp_path, window, step, source_id)
    robust = _robust_copy(window, f"robust-{source_id}.onnx")
    rig = Rig(source_id).start()
    emulator = Emulator(settings).start()
    try:
        with Daemon(settings) as daemon:
            wait_until(lambda: daemon.scheduler.predictions > 20, 30, "predictions")
            daemon.swap_model(robust)
            wait_until(lambda: daemon.readiness().ready, 30, "readiness")
            arm_daemon_when_ready(daemon)
            updater = daemon.scale_updater

            failed: list[bool] = []

            def failing_once(*args):  # fault injection: the statistics cannot be computed once
                if not failed:
                    failed.append(True)
                    raise RuntimeError("simulated statistics failure")
                return robust_stats(*args)

            # Once: a failure that lasted would be counted again at each restart, and the count
            # read below would depend on how soon it is read.
            monkeypatch.setattr(scale_updater, "robust_stats", failing_once)
            wait_until(lambda: not daemon.armed, 10, "the fault to disarm")

            def faults() -> float:  # counted just after the disarm: the disarm comes first
                sample = daemon.registry.get_sample_value(
                    "corticast_daemon_faults_total", {"stage": "scale"}
                )
                return sample or 0.0

            wait_until(lambda: faults() >= 1, 10, "the fault to be counted")
            time.sleep(0.5)  # a reader slow to read the count (a loaded machine)
            assert faults() == 1
            monkeypatch.undo()
            wait_until(lambda: updater.not_ready_reason() is None, 10, "the restart")
            assert updater.running
    finally:
        rig.kill()
        emulator.stop()
