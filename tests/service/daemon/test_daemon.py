"""The daemon with every real part on loopback: LSL rig process, uvicorn, ZeroMQ, emulator."""

import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import pytest

from firmware_bridge import read_audit_log
from service.api.served import ServedDaemon, ServedDaemonError
from service.core.descriptors import MOST_DESCRIPTORS
from service.core.errors import CorticastError
from service.core.realtime_settings import RealtimeSettings
from service.inference.onnx_predictor import OnnxPredictor
from service.zmq_api.client import PredictionClient
from tests.service._fault_injection import CrashingPredictor
from tests.service._loop_harness import (
    AUTH,
    TOKEN,
    Emulator,
    Rig,
    arm_device_when_ready,
    arm_when_ready,
    armed_and_served,
    disarm_found_armed,
    free_port,
    loop_settings,
    wait_until,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def settings(tmp_path, exported, source_id):
    _, window, step = exported
    return loop_settings(tmp_path, window, step, source_id)


def test_the_loop_end_to_end_and_its_recovery(settings, exported, source_id):
    # One fit of the live AR baseline (none again within the test), so the forecast the blend
    # served beside the model can be recomputed from the daemon's fit afterwards.
    loop = settings.loop.model_copy(update={"ar_refit_every_s": 3600.0})
    settings = settings.model_copy(update={"loop": loop})
    rig = Rig(source_id).start()
    emulator = Emulator(settings).start()
    try:
        with ServedDaemon(settings) as served, httpx.Client(base_url=served.url) as http:
            daemon = served.daemon
            wait_until(lambda: http.get("/readyz").status_code == 200, 30, "ready")
            assert http.get("/healthz").json() == {"status": "alive"}

            # Predictions on ZeroMQ are exactly the model applied to the input they claim.
            pub, query = daemon.publisher.endpoint, daemon.query.endpoint
            reference = OnnxPredictor(exported[1], daemon.stream_spec, threads=1)
            with PredictionClient(pub, query) as client:
                message = None
                while message is None:
                    message = client.receive(timeout_s=5.0)
                seq = message.header["input_seq"]
                window = daemon.ingestor.ring.read_since(seq - 15, max_frames=16)
                assert list(window.seq) == list(range(seq - 15, seq + 1))
                assert message.header["input_timestamp"] == window.timestamps[-1]
                # What is served is the model blended with persistence and the live AR
                # baseline by the weights it carries (the model alone until the blend has
                # enough scored predictions; no AR share before the AR's first fit).
                weights = message.blend_weights[:, None, None].astype(np.float32)
                ar_weights = message.blend_ar_weights[:, None, None].astype(np.float32)
                last = window.frames[-1]
                served = last + weights * (reference.predict(window.frames) - last)
                if ar_weights.any():
                    ar = daemon.accuracy.ar_forecast(window.frames)
                    served += ar_weights * (ar - last)
                scale = float(np.max(reference.metadata.normalisation["scale"]))
                np.testing.assert_allclose(message.array, served, atol=1e-4 * scale)
                # The query socket answers from the same history.
                np.testing.assert_array_equal(client.by_seq(seq).array, message.array)
                assert client.latest().header["input_seq"] >= seq
                assert client.status()["ready"] is True
            # The same newest prediction over HTTP, decoded (it was a 500: undecoded bytes).
            latest = http.get("/predictions/latest")
            assert latest.status_code == 200, latest.text
            frames = np.asarray(latest.json()["frames_uv"], dtype=np.float32)
            assert frames.shape == (16, *daemon.stream_spec.grid.shape)

            # Control: no token -> 401 and still disarmed; with the token -> armed.
            refused = http.post("/control/arm")
            assert refused.status_code == 401 and "bearer token" in refused.json()["detail"]
            assert http.get("/status").json()["armed"] is False
            assert arm_device_when_ready(http, emulator) == {"armed": True}
            status = http.get("/status").json()
            assert status["armed"] and status["model"]["backend"] == "onnxruntime-cpu"
            assert status["scheduler"]["predictions"] > 0
            # The rig's timestamps (jittered, samples dropped) keep the rate configured.
            assert status["stream"]["rate_problem"] is None
            assert status["stream"]["measured_rate_hz"] == pytest.approx(277.78, rel=1e-3)
            # Stamped as taken, sent after: never ahead of the LSL clock it arrives by.
            assert status["stream"]["stamp_lead_problem"] is None
            assert status["stream"]["stamp_lead_s"] <= 0.01
            blend = status["blend"]
            assert blend["enabled"] and len(blend["weights"]) == 16
            assert all(0.0 <= w <= 1.0 for w in blend["weights"])
            assert blend["ar"] and len(blend["ar_weights"]) == 16
            assert len(status["live_psnr_db"]["served"]) == len(status["live_psnr_db"]["model"])
            # Over all horizons (pooled MSE): what the health rule judges, shown beside it.
            assert {"model", "persistence"} <= set(status["live_pooled_psnr_db"])
            assert status["model"]["health"]["persistence_psnr_db"] is not None
            assert status["live_psnr_scale"] == "PSNR at R = 2 normalised units"
            # Beside the predictions' latency, the data's age at the policy's decisions.
            assert set(status["latency_ms"]) == {
                f"{name}_p{q}" for name in ("inference", "age", "decision_age") for q in (50, 99)
            }
            metrics = http.get("/metrics").text
            assert "corticast_inference_latency_seconds_bucket" in metrics
            assert "corticast_decision_data_age_seconds_bucket" in metrics
            assert "corticast_ingest_rate_hz 277." in metrics
            assert "corticast_ingest_stamp_lead_seconds " in metrics
            assert 'corticast_blend_weight{horizon="16"}' in metrics
            assert 'corticast_blend_ar_weight{horizon="16"}' in metrics
            # A disarm says what it did: the first finds the loop armed, the second does not.
            disarmed = disarm_found_armed(http, emulator, settings.bridge.audit_log)
            assert disarmed == {"armed": False, "was_armed": True, "device_confirmed": True}
            assert http.post("/control/disarm", headers=AUTH).json()["was_armed"] is False
            assert arm_device_when_ready(http, emulator) == {"armed": True}

            # The rig dies: not ready, and disarmed (by the daemon and, without heartbeats
            # from an armed host... here the host disarms it first).
            rig.kill()
            wait_until(lambda: http.get("/readyz").status_code == 503, 30, "not ready")
            assert "stream not live" in " ".join(http.get("/readyz").json()["reasons"])
            wait_until(lambda: not http.get("/status").json()["armed"], 30, "disarmed")
            wait_until(lambda: not emulator.device.armed, 30, "the device to disarm")
            # It comes back: the daemon reconnects and predicts again, still disarmed.
            before = daemon.scheduler.predictions
            rig.start()
            wait_until(lambda: http.get("/readyz").status_code == 200, 30, "ready again")
            wait_until(lambda: daemon.scheduler.predictions > before + 10, 30, "predictions")
            assert http.get("/status").json()["armed"] is False
            assert http.get("/status").json()["faults"].get("stream", 0) >= 1
    finally:
        rig.kill()
        emulator.stop()
    events = [record["event"] for record in read_audit_log(settings.bridge.audit_log)]
    assert events[0] == "start" and events[-1] == "close"
    assert "arm" in events and "disarm" in events


@pytest.mark.parametrize("taken", ["api", "pub"])
def test_a_port_in_use_ends_the_served_daemon_with_one_error_naming_it(
    tmp_path, exported, source_id, taken
):
    """``corticast demo`` (the README's first command) ended in a traceback, "the daemon's HTTP
    server did not start (see the log)", whether the API's port was another program's or the
    daemon's own start failed: both fail on uvicorn's thread, which only logs why."""
    _, window, step = exported
    with socket.create_server(("127.0.0.1", 0)) as other:
        port = other.getsockname()[1]
        sections = {"api": {"port": port}} if taken == "api" else {}
        if taken == "pub":
            sections["zmq"] = {"pub_endpoint": f"tcp://127.0.0.1:{port}"}
        settings = loop_settings(tmp_path, window, step, source_id, **sections)
        with pytest.raises(ServedDaemonError) as raised, ServedDaemon(settings):
            pass
    message = str(raised.value)
    if taken == "api":
        assert message == (
            f"the HTTP API cannot listen at 127.0.0.1:{port} (Address already in use): if "
            "another program (another demo?) listens there, set another [api] port in the "
            "--config file or CORTICAST_API__PORT"
        )
    else:
        assert message.startswith(
            f"the daemon could not start: cannot bind 'pub_endpoint' 'tcp://127.0.0.1:{port}': "
            "Address already in use"
        )
    assert isinstance(raised.value, CorticastError)  # the CLI's one line, no traceback


def test_bad_api_requests_get_json_errors_and_change_nothing(settings):
    with ServedDaemon(settings) as served, httpx.Client(base_url=served.url) as http:
        assert http.get("/readyz").status_code == 503  # no rig at all
        assert http.post("/control/arm", headers=AUTH).status_code == 409
        bad_token = http.post("/control/arm", headers={"Authorization": "Bearer nope"})
        assert bad_token.status_code == 401 and bad_token.json()["detail"] == "invalid bearer token"
        policy = http.put("/control/policy", headers=AUTH, json={"min_pgd": 7})
        assert policy.status_code == 422
        assert policy.json()["error"] == "invalid request"
        assert any(p["where"].endswith("min_pgd") for p in policy.json()["detail"])
        unknown = http.put("/control/policy", headers=AUTH, json={"min_pdg": 0.5})
        assert unknown.status_code == 422
        density = http.put(
            "/control/policy",
            headers=AUTH,
            json={"stimulation": {"amplitude_ua": 900, "phase_width_us": 900}},
        )
        assert density.status_code == 422 and "25" in json.dumps(density.json())
        off_grid = http.put(
            "/control/policy", headers=AUTH, json={"target_electrodes": [[0, 20]], "min_pgd": 0.9}
        )
        assert off_grid.status_code == 422
        [problem] = off_grid.json()["detail"]
        assert problem["where"] == "body.target_electrodes.0" and "(0, 20)" in problem["problem"]
        assert http.get("/status").json()["policy"]["min_pgd"] != 0.9  # nothing changed
        outside = http.put("/control/model", headers=AUTH, json={"path": "/nowhere.onnx"})
        assert outside.status_code == 403 and "/nowhere.onnx" in outside.json()["detail"]
        missing = http.put("/control/model", headers=AUTH, json={"path": "nowhere.onnx"})
        assert missing.status_code == 404 and "nowhere.onnx" in missing.json()["detail"]
        assert http.get("/predictions/latest").status_code == 404
        ok = http.put("/control/policy", headers=AUTH, json={"min_pgd": 0.7})
        assert ok.status_code == 200 and http.get("/status").json()["policy"]["min_pgd"] == 0.7


def test_the_gil_interval_and_thread_priorities_apply_while_the_daemon_runs(settings):
    # The frozen heap: test_daemon_heap.py (this process's heap is frozen by tests/conftest.py).
    # Pinning needs no permission: the ingest and inference threads go where [realtime] says.
    cpu = max(os.sched_getaffinity(0))
    realtime = RealtimeSettings(ingest_cpus=(cpu,), inference_cpus=(cpu,))
    settings = settings.model_copy(update={"realtime": realtime})
    before = sys.getswitchinterval()
    with ServedDaemon(settings) as served:
        assert sys.getswitchinterval() == pytest.approx(0.0005)
        threads = {t.name: t for t in threading.enumerate()}
        assert os.getpriority(os.PRIO_PROCESS, threads["corticast-waves"].native_id) == (
            os.getpriority(os.PRIO_PROCESS, 0) + settings.loop.wave_niceness
        )
        wait_until(
            lambda: all(served.daemon.status()["realtime"][t] for t in ("ingest", "inference")),
            10,
            "placements",
        )
        status = served.daemon.status()["realtime"]
        assert status["zmq_io"] is None  # pinning only: the publisher's threads are left alone
        for stage, name in (("ingest", "corticast-ingest"), ("inference", "corticast-scheduler")):
            tid = threads[name].native_id
            assert os.sched_getaffinity(tid) == {cpu}
            assert (status[stage]["tid"], status[stage]["cpus"]) == (tid, [cpu])
            assert status[stage]["policy"] == "SCHED_OTHER" and status[stage]["refused"] == []
        # The other threads stay where the process runs.
        assert os.sched_getaffinity(threads["corticast-waves"].native_id) == os.sched_getaffinity(0)
        assert served.daemon.loop.running
    assert sys.getswitchinterval() == before


def test_hot_swap_switches_models_without_a_gap(settings, exported, source_id):
    _, window, _ = exported
    copy = window.with_name(f"copy-{source_id}.onnx")  # in the model directory, as swaps must be
    copy.write_bytes(window.read_bytes() + b"")  # same weights, another file: a real reload
    rig = Rig(source_id).start()
    try:
        with ServedDaemon(settings) as served, httpx.Client(base_url=served.url) as http:
            daemon = served.daemon
            # Enough scored that a blend fitted across the swap would show it.
            wait_until(lambda: daemon.blend.windows > 100, 60, "scored predictions")
            seen = []
            with PredictionClient(daemon.publisher.endpoint, None) as client:
                swap = http.put("/control/model", headers=AUTH, json={"path": str(copy)})
                assert swap.status_code == 200, swap.text
                # Until a few predictions of the new model arrived (a generous deadline).
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and _made_by(seen, copy.resolve()) <= 5:
                    message = client.receive(timeout_s=1.0)
                    if message is not None:
                        seen.append(message.header)
            paths = [h["predictor"]["model_path"] for h in seen]
            # Old model up to the switch, new model after it, and predictions throughout.
            served_copy = str(copy.resolve())  # a swap serves its files resolved
            switch = paths.index(served_copy)
            assert set(paths[:switch]) <= {str(window)} and set(paths[switch:]) == {served_copy}
            seqs = [h["input_seq"] for h in seen]
            assert seqs == sorted(seqs) and len(seen) > switch + 5
            status = http.get("/status").json()
            assert status["model"]["model_path"] == served_copy
            # The blend was reset with the live scores: it is fitted on the new model's only.
            fitted, scored = daemon.blend.windows, daemon.accuracy.scored
            assert abs(fitted - scored) < 50, (fitted, scored)
            # The old model's predictions still waiting for their true frames at the switch
            # (one per frame at stride 1, over the 16 predicted frames) were served, never
            # scored: counted, in /status and the metric alike.
            unscored = status["scheduler"]["unscored_after_swap"]
            assert unscored >= 1
            metric = "corticast_accuracy_unscored_after_swap_predictions_total"
            assert daemon.registry.get_sample_value(metric) == unscored
    finally:
        rig.kill()


def _made_by(headers: list[dict], model) -> int:
    return sum(h["predictor"]["model_path"] == str(model) for h in headers)


def test_sigterm_disarms_and_exits_cleanly_with_a_complete_audit_log(settings, tmp_path):
    config = _config_file(tmp_path, settings, mode="stream", dry_run=True)
    bridge = settings.bridge
    json_logs = {**os.environ, "CORTICAST_LOG_FORMAT": "json"}
    serve = [*SERVE, "--config", str(config)]
    with _serving(serve, settings, ready_path="/healthz", env=json_logs) as (process, _):
        process.send_signal(signal.SIGTERM)
        # A generous deadline: how fast it stops is for bench/, that it stops is tested here.
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert any(entry["message"] == "daemon stopped" for entry in lines)
    events = [record["event"] for record in read_audit_log(bridge.audit_log)]
    assert events == ["start", "disarm", "close"]  # stopping disarms first, then closes


_SLOW_SWAP_LAUNCHER = """
import sys, threading
import firmware_bridge.stimulation_bridge as bridge_module
import service.daemon.daemon

# Fault injection: a hot swap's model load (every load after the start's) is held until the
# bridge has been told to disarm for the stop; each step is announced on stderr, in one write
# (print writes the text and its newline apart, and a log line from another thread could land
# between them).
def say(text):
    sys.stderr.write(text + "\\n")
    sys.stderr.flush()
disarmed = threading.Event()
real_load, loads = service.daemon.daemon.predictor_from_settings, []
def held_load(*args):
    loads.append(real_load(*args))
    if len(loads) > 1:
        say("launcher: swap loading")
        disarmed.wait(60)
    return loads[-1]
service.daemon.daemon.predictor_from_settings = held_load
real_disarm = bridge_module.StimulationBridge.disarm_without_waiting
def disarm(self, reason="operator request", **kwargs):
    confirmed = real_disarm(self, reason, **kwargs)
    say(f"launcher: disarmed ({reason})")
    disarmed.set()
    return confirmed
bridge_module.StimulationBridge.disarm_without_waiting = disarm
real_stop = service.daemon.daemon.Daemon.stop
def stop(self):
    say("launcher: daemon stop")
    real_stop(self)
service.daemon.daemon.Daemon.stop = stop

from service.cli.app import app
app(sys.argv[1:])
"""


def test_sigterm_disarms_before_the_server_waits_for_a_model_swap_in_flight(
    settings, exported, source_id, tmp_path
):
    """uvicorn's graceful shutdown waits for requests in flight (a swap still loading its
    model) before it stops the daemon; the disarm must come first, not after that wait."""
    config = _config_file(tmp_path, settings, mode="window", dry_run=False)
    launcher = tmp_path / "launcher.py"
    launcher.write_text(_SLOW_SWAP_LAUNCHER)
    rig = Rig(source_id).start()
    emulator = Emulator(settings).start()
    try:
        launch = [sys.executable, str(launcher), "serve", "--config", str(config)]
        with _serving(launch, settings) as (process, url):
            with httpx.Client(base_url=url) as api:
                arm_when_ready(api)
            swap = threading.Thread(target=_put_model, args=(url, exported[1]), daemon=True)
            swap.start()
            for line in process.stdout:
                if line.startswith("launcher: swap loading"):
                    break
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=60)
    finally:
        rig.kill()
        emulator.stop()
    assert process.returncode == 0, output
    steps = [line for line in output.splitlines() if line.startswith("launcher: ")]
    assert steps[:2] == ["launcher: disarmed (daemon stopping)", "launcher: daemon stop"], steps
    assert not emulator.device.armed
    events = [record["event"] for record in read_audit_log(settings.bridge.audit_log)]
    assert events[:3] == ["start", "arm", "disarm"] and events[-1] == "close"


def _put_model(url: str, path) -> None:
    with contextlib.suppress(httpx.HTTPError):  # the server may close it as it shuts down
        httpx.put(f"{url}/control/model", headers=AUTH, json={"path": str(path)}, timeout=60)


def test_a_control_process_that_dies_disarms_and_is_started_again(settings, source_id, tmp_path):
    """``corticast serve`` runs the HTTP API and the query socket in a process of their own. If
    it dies, no operator can disarm over HTTP: the loop's process disarms and starts it again.
    """
    config = _config_file(tmp_path, settings, mode="window", dry_run=False)
    rig = Rig(source_id).start()
    emulator = Emulator(settings).start()
    try:
        with (
            _serving([*SERVE, "--config", str(config)], settings) as (process, url),
            _poller(url) as poll,
        ):
            # The newest prediction, read through the control link (a 500 before: the API
            # served the stored frames' bytes as if decoded).
            wait_until(lambda: _answers(poll, "/predictions/latest"), 30, "a prediction")
            latest = httpx.get(f"{url}/predictions/latest").json()
            assert np.asarray(latest["frames_uv"]).shape == tuple(latest["header"]["shape"])
            with httpx.Client(base_url=url) as api:
                arm_device_when_ready(api, emulator)
            [control] = _children(process.pid)
            os.kill(control, signal.SIGKILL)
            wait_until(lambda: not emulator.device.armed, 30, "the device to be disarmed")
            wait_until(lambda: _answers(poll, "/readyz"), 60, "the control process to serve again")
            assert _children(process.pid) != [control]
            status = httpx.get(f"{url}/status").json()
            assert status["armed"] is False
            # Counted as a fault of its own, whatever else disarmed (a stale stream on a loaded
            # machine may have come first).
            assert status["faults"].get("control") == 1
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=60)
    finally:
        rig.kill()
        emulator.stop()
    assert process.returncode == 0, output
    assert "exited with status -9: stimulation disarmed; starting it again" in output


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _config_file(tmp_path, settings, *, mode: str, dry_run: bool):
    """``settings`` as the config file of a `corticast serve` in its own process: its stream,
    model files, bridge port and audit log, ephemeral ZeroMQ ports, its API port and token."""
    config = tmp_path / "corticast.toml"
    config.write_text(
        f"""
[stream]
source_id = "{settings.stream.source_id}"
[model]
path = "{settings.model.path}"
step_path = "{settings.model.step_graph}"
mode = "{mode}"
[bridge]
dry_run = {str(dry_run).lower()}
port = {settings.bridge.port}
audit_log = "{settings.bridge.audit_log}"
[zmq]
pub_endpoint = "tcp://127.0.0.1:*"
query_endpoint = "tcp://127.0.0.1:*"
[api]
port = {settings.api.port}
token = "{TOKEN}"
"""
    )
    return config


SERVE = [sys.executable, "-m", "service.cli.app", "serve"]


@contextlib.contextmanager
def _serving(
    command: list[str], settings, *, ready_path: str = "/readyz", env=None, preexec_fn=None
):
    """`corticast serve` run by ``command`` in its own process (output piped, as text), from
    when its API answers ``ready_path``: yields it and the API's URL; killed on the way out.
    ``preexec_fn`` runs in the child before the command (a lowered limit it inherits)."""
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        preexec_fn=preexec_fn,
    )
    url = f"http://127.0.0.1:{settings.api.port}"
    try:
        with _poller(url) as poll:
            wait_until(lambda: _answers(poll, ready_path) or process.poll() is not None, 60,
                       f"the server to answer {ready_path}")  # fmt: skip
        assert process.poll() is None, process.communicate()[0]
        yield process, url
    finally:
        process.kill()


def _poller(url: str) -> httpx.Client:
    """One client for every poll of a wait: ``httpx.get`` makes a client each call, and each
    parses the CA bundle (~20 ms of CPU here, every 50 ms, beside the server it waits for)."""
    return httpx.Client(base_url=url, timeout=0.5)


def _answers(poll: httpx.Client, path: str) -> bool:
    try:
        return poll.get(path).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_loops_process_takes_the_file_descriptors_the_host_allows(settings, tmp_path):
    """Each subscriber's connection is a descriptor of the loop's process, and any local user
    may connect: started at a low soft limit (256 here, 1024 under systemd), it raises its own,
    or a few hundred idle connections to the publisher left it without one for a file it must
    open (here the model a swap loads)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard <= 512:
        pytest.skip(f"the hard descriptor limit is {hard}: nothing to raise")
    config = _config_file(tmp_path, settings, mode="window", dry_run=True)
    publisher = ("127.0.0.1", free_port())
    config.write_text(
        config.read_text().replace("pub_endpoint = \"tcp://127.0.0.1:*\"",
                                   f"pub_endpoint = \"tcp://{publisher[0]}:{publisher[1]}\"")
    )  # fmt: skip
    started_low = partial(resource.setrlimit, resource.RLIMIT_NOFILE, (256, hard))
    serve = [*SERVE, "--config", str(config)]
    with (
        _serving(serve, settings, ready_path="/healthz", preexec_fn=started_low) as (process, url),
        contextlib.ExitStack() as held,
    ):
        limits = Path(f"/proc/{process.pid}/limits").read_text()
        for _ in range(300):
            held.enter_context(socket.create_connection(publisher, timeout=30))
        swapped = httpx.put(f"{url}/control/model", headers=AUTH,
                            json={"path": str(settings.model.path)}, timeout=60)  # fmt: skip
    process.communicate(timeout=60)  # killed: its output read, its pipe closed
    assert swapped.status_code == 200, swapped.text
    [line] = [row for row in limits.splitlines() if row.startswith("Max open files")]
    expected = MOST_DESCRIPTORS if hard == resource.RLIM_INFINITY else min(hard, MOST_DESCRIPTORS)
    assert int(line.split()[3]) == expected, line


def test_a_crashed_predictor_disarms_and_is_reloaded(settings, source_id):
    rig = Rig(source_id).start()
    emulator = Emulator(settings).start()
    try:
        with ServedDaemon(settings) as served, httpx.Client(base_url=served.url) as http:
            daemon = served.daemon
            wait_until(lambda: http.get("/readyz").status_code == 200, 30, "ready")
            _starve_for_a_moment(rig, http)  # as a loaded host may, between ready and the arm
            arm_when_ready(http)
            daemon.scheduler.swap_predictor(CrashingPredictor(daemon.predictor.info)).close()
            wait_until(lambda: daemon.supervisor.fault_counts().get("predictor", 0) >= 1, 30,
                       "the fault to be counted")  # fmt: skip
            assert not daemon.bridge.armed  # the host at once, the device on the bridge's thread
            wait_until(lambda: not emulator.device.armed, 30, "the device disarmed")
            # The supervisor reloaded the model from its file and predicts again.
            wait_until(lambda: daemon.scheduler.running and daemon.scheduler.predictions > 5,
                       30, "predictions after the reload")  # fmt: skip
            assert http.get("/status").json()["armed"] is False
    finally:
        rig.kill()
        emulator.stop()


def _starve_for_a_moment(rig: Rig, http: httpx.Client) -> None:
    """The rig starved of CPU until the daemon is not ready (its data stale), then let go
    after half a second: a loaded host does this by itself."""
    pid = rig.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(lambda: http.get("/readyz").status_code == 503, 30, "the stream to go stale")
    finally:
        threading.Timer(0.5, _let_go, (pid,)).start()


def _let_go(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # killed meanwhile: the test has ended
        os.kill(pid, signal.SIGCONT)


def test_losing_the_stimulator_disarms_and_reconnecting_needs_an_operator(settings, source_id):
    with armed_and_served(settings, source_id) as (_served, http, emulator):
        emulator.stop()  # the device goes away: heartbeats go unanswered
        wait_until(lambda: not http.get("/status").json()["armed"], 30, "disarmed")
        wait_until(lambda: http.get("/readyz").status_code == 503, 30, "not ready")
        assert "bridge not connected" in " ".join(http.get("/readyz").json()["reasons"])
        back = Emulator(settings).start()  # it comes back
        try:
            wait_until(lambda: http.get("/readyz").status_code == 200, 30, "ready again")
            assert http.get("/status").json()["armed"] is False  # stays disarmed
            arm_when_ready(http)
        finally:
            back.stop()
