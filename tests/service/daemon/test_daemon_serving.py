"""``[model] serving = "auto"`` in the daemon's start path and at a hot swap: the probe's choice
is what serves, and /status, the metrics and arming say so. No rig: the probe runs before any
stream exists. The start tests share one cache directory, so later ones read what the first
measured; the swap tests write the start's record (:func:`seed_start_probe`)."""

import dataclasses
import errno
import hashlib
import logging
import os
import shutil
import threading
from types import SimpleNamespace

import httpx
import pytest
from prometheus_client import generate_latest

from models.held_out_check import stamp_check
from models.metadata import int8_path, int8_step_path
from service.api.served import ServedDaemon
from service.core.thread_placement import ThreadPlacement
from service.daemon.daemon import Daemon, DaemonStateError
from service.inference import host, onnx_predictor
from service.inference import predictor as predictor_module
from service.inference.model_files import ModelFileError, ModelFiles
from service.inference.predictor import DEFAULT_STREAM, PARITY_TOLERANCE, HostResourceError
from service.inference.serving_choice import Candidate, Measurement
from service.inference.serving_probe import ServingProbe
from service.inference.settings import ModelSettings
from tests.data.tiny_model import copy_tiny_model
from tests.service._fault_injection import sessions_out_of_descriptors
from tests.service._loop_harness import AUTH, loop_settings, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("serving-cache")


@pytest.fixture(autouse=True)
def one_core(monkeypatch):
    """One usable core: one thread count per backend, half the candidates to time."""
    monkeypatch.setattr(host, "usable_cores", lambda: 1)


def auto_settings(tmp_path, exported, source_id, cache_dir, **sections):
    _, window, step = exported
    model = {"serving": "auto", "serving_probe_runs": 20, "serving_cache_dir": cache_dir}
    return loop_settings(
        tmp_path, window, step, source_id, model=model, bridge={"dry_run": True}, **sections
    )


def test_auto_serves_the_probes_choice_and_says_so(tmp_path, exported, source_id, cache_dir):
    settings = auto_settings(tmp_path, exported, source_id, cache_dir)
    with Daemon(settings) as daemon:
        status = daemon.status()
        serving = status["serving"]
        assert serving["serving"] == "auto"
        assert {c["mode"] for c in serving["candidates"]} == {"window", "stream"}
        metrics = generate_latest(daemon.registry).decode()
        assert 'serving="auto"' in metrics
        chosen = serving["chosen"]
        if chosen is None:  # a host too loaded for any stride (the test cannot know): refused
            assert any("no way of serving" in r for r in daemon.readiness().reasons)
            assert 'fits="false"' in metrics
            return
        assert chosen["p99_ms"] <= 0.7 * chosen["stride"] * serving["frame_period_ms"]
        # What runs is the choice, not [model] mode = "window" / stride 1 of the file.
        info = daemon.predictor.info
        assert (info.mode, info.backend) == (chosen["mode"], chosen["backend"])
        assert status["scheduler"]["stride"] == chosen["stride"]
        assert f'stride="{chosen["stride"]}"' in metrics and 'fits="true"' in metrics
        assert f'mode="{chosen["mode"]}"' in metrics
        # The prediction-age alert's budget is the chosen stride's frames, not the file's.
        budget = daemon.registry.get_sample_value("corticast_config_prediction_budget_seconds")
        assert budget == pytest.approx(chosen["stride"] * serving["frame_period_ms"] / 1e3)
        assert chosen["precision"] == "fp32"  # no int8 copies beside this model
        assert f'precision="{info.precision}"' in metrics
        assert not any("serving" in reason for reason in daemon.readiness().reasons)


def test_when_nothing_fits_the_daemon_serves_but_refuses_to_arm_saying_what_would_help(
    tmp_path, exported, source_id, cache_dir
):
    # A staleness limit no inference can meet (the cached measurements still hold: the limit
    # is judged, not measured).
    settings = auto_settings(
        tmp_path, exported, source_id, cache_dir, interlocks={"max_sample_age_s": 1e-6}
    )
    with Daemon(settings) as daemon:
        assert daemon.status()["serving"]["chosen"] is None
        assert daemon.predictor.info.mode == "window"  # as configured
        [reason] = [r for r in daemon.readiness().reasons if "serving" in r]
        assert "no way of serving the model fits this host" in reason
        assert "would help: a faster backend" in reason and "a smaller model" in reason
        with pytest.raises(DaemonStateError, match="no way of serving the model fits"):
            daemon.arm()
        assert 'fits="false"' in generate_latest(daemon.registry).decode()


def test_when_nothing_fits_the_configured_way_must_be_servable(
    tmp_path, exported, source_id, cache_dir
):
    """``corticast serve`` checks only the window graph under auto (the probe picks the mode);
    when nothing fits, the configured way serves, so its files are checked then: one clear
    error, not a predictor failing for a step graph nobody checked."""
    lone = tmp_path / "lone.onnx"
    lone.write_bytes(exported[1].read_bytes())
    settings = auto_settings(
        tmp_path, exported, source_id, cache_dir, interlocks={"max_sample_age_s": 1e-6}
    )
    model = settings.model.model_copy(update={"path": lone, "step_path": None, "mode": "stream"})
    settings = settings.model_copy(update={"model": model})
    daemon = Daemon(settings)
    try:
        with pytest.raises(ModelFileError, match=r"\[model\] step_path '.*lone\.step\.onnx'"):
            daemon.start()
    finally:
        daemon.stop()


@pytest.mark.parametrize("serving", ["fixed", "auto, nothing fits"])
def test_the_serving_info_names_the_backend_that_runs_not_auto(
    tmp_path, exported, source_id, cache_dir, serving
):
    """``[model] backend = "auto"`` (the default) serves the first backend that loads here;
    under ``serving = "auto"`` it is the way served when nothing fits. The metric says which,
    as ``/status``'s model does: on a GPU host whose TensorRT failed over to the CPU,
    backend="auto" would hide it."""
    limits = {"max_sample_age_s": 1e-6} if serving != "fixed" else {}
    settings = auto_settings(tmp_path, exported, source_id, cache_dir, interlocks=limits)
    if serving == "fixed":
        model = settings.model.model_copy(update={"serving": "fixed"})
        settings = settings.model_copy(update={"model": model})
    assert settings.model.backend == "auto"
    with Daemon(settings) as daemon:
        metrics = generate_latest(daemon.registry).decode()
        running = daemon.predictor.info.backend
    assert running == "onnxruntime-cpu"
    [line] = [ln for ln in metrics.splitlines() if ln.startswith("corticast_serving_info{")]
    assert f'backend="{running}"' in line


def _start_probe(daemon: Daemon) -> ServingProbe:
    """The probe ``daemon``'s start runs, of its configured settings (the cache it reads)."""
    settings = daemon.settings
    return ServingProbe(
        settings.model,
        daemon.stream_spec,
        staleness_limit_s=settings.interlocks.max_sample_age_s,
        min_stride=settings.scheduler.stride,
    )


def seed_start_probe(daemon, window_p99_s):
    """The start's probe record for ``daemon``'s model, written as measured: window mode on
    ONNX Runtime CPU, one thread, at ``window_p99_s`` (stream mode slower, the GPU backends
    missing), so the way and stride chosen at start are known whatever this host's speed. The
    rule is the choice module's, tested there; what is under test here is the swap."""
    probe = _start_probe(daemon)
    tolerance = PARITY_TOLERANCE["fp32"]

    def row(c: Candidate) -> Measurement:
        if c.backend != "onnxruntime-cpu":
            return Measurement(c, problem="unavailable: not on this test host")
        p99 = window_p99_s * (1 if c.mode == "window" else 2)
        return Measurement(c, p99 / 2, p99, 20, 1, 0.0, tolerance)

    rows = [row(c) for c in probe.candidates()]
    probe.measure = lambda: rows
    probe.choose()  # cached where the daemon looks


def other_model(directory):
    """A copy of the tiny model with other content (its held-out check stamped in): files
    never measured before."""
    model = copy_tiny_model(directory)
    check = {"split": "val", "windows": 9, "data_range": 2.0,
             "model_psnr_db": [30.0, 29.0], "persistence_psnr_db": [29.0, 28.0]}  # fmt: skip
    stamp_check(model[1:], check)
    return model


def test_a_swap_under_auto_measures_the_new_files_the_way_chosen_at_start(
    tmp_path, source_id, caplog
):
    """The new files are measured (window mode, ORT CPU, one thread: the start's way), and
    their stride serves with them; a swap back to the start's files reads the start's record
    and serves its stride again. A limit of 1 s leaves the horizon (16 frames) as the bound."""
    first = copy_tiny_model(tmp_path / "models")
    second = other_model(tmp_path / "models" / "next")
    settings = auto_settings(
        tmp_path, first, source_id, tmp_path / "cache", interlocks={"max_sample_age_s": 1.0}
    )
    daemon = Daemon(settings)
    period_s = 1 / settings.stream.sample_rate_hz
    seed_start_probe(daemon, window_p99_s=11.5 * 0.7 * period_s)  # stride 12
    gauge = "corticast_config_prediction_budget_seconds"
    with caplog.at_level(logging.INFO, "corticast"), daemon:
        assert daemon.scheduler.stride == 12
        daemon.swap_model(second[1])
        serving = daemon.status()["serving"]
        [row] = serving["candidates"]
        assert (row["mode"], row["backend"], row["threads"], row["precision"]) == (
            "window", "onnxruntime-cpu", 1, "fp32"
        )  # fmt: skip
        assert row["fits"] and row["runs"] >= 20 and row["max_error"] == 0.0
        assert serving["measured"] == str(second[1].resolve())
        assert f"measured at the hot swap to {second[1].resolve()}" in serving["note"]
        stride = serving["chosen"]["stride"]
        assert stride == row["needs_stride"]
        assert daemon.scheduler.stride == daemon.status()["scheduler"]["stride"] == stride
        assert daemon.registry.get_sample_value(gauge) == pytest.approx(stride * period_s)
        p99 = daemon.registry.get_sample_value("corticast_serving_probe_p99_seconds")
        assert p99 == row["p99_s"]
        assert f'stride="{stride}"' in generate_latest(daemon.registry).decode()
        # A scheduler that died is restarted by the supervisor's reload at the swap's stride.
        dead = daemon.scheduler
        dead.stop()
        wait_until(lambda: daemon.scheduler is not dead and daemon.scheduler.running, 30,
                   "the supervisor's reload")  # fmt: skip
        assert daemon.scheduler.stride == stride
        assert daemon.predictor.info.model_path == str(second[1].resolve())

        daemon.swap_model(first[1])  # the start's record holds this way: not measured again
        back = daemon.status()["serving"]
        assert back["measured"] == str(first[1].resolve())
        assert daemon.scheduler.stride == back["chosen"]["stride"] == 12
        assert daemon.registry.get_sample_value(gauge) == pytest.approx(12 * period_s)
    assert caplog.text.count("serving probe: measured window onnxruntime-cpu x1 fp32 in") == 1
    assert f"serving (auto) window onnxruntime-cpu x1 fp32 at stride {stride} (was 12)" in (
        caplog.text
    )


@pytest.mark.skipif(
    not ThreadPlacement("rr", 1, frozenset()).realtime_permitted(),
    reason="SCHED_RR is not permitted here",
)
def test_a_swap_asked_on_a_real_time_thread_is_loaded_and_measured_under_the_normal_policy(
    tmp_path, source_id, monkeypatch
):
    """Under the drop-in every daemon thread is real-time (SCHED_RR 1), the one a swap
    arrives on too: seconds of loading, checking and warming up the new model's sessions and
    of back-to-back measurement there would fill a CPU, and the kernel would stop the loop's
    threads with it. All of it runs under the normal policy, and the thread is real-time
    again after."""
    first = copy_tiny_model(tmp_path / "models")
    second = other_model(tmp_path / "models" / "next")
    settings = auto_settings(
        tmp_path, first, source_id, tmp_path / "cache", interlocks={"max_sample_age_s": 1.0}
    )
    daemon = Daemon(settings)
    seed_start_probe(daemon, window_p99_s=11.5 * 0.7 / settings.stream.sample_rate_hz)
    measure, build, seen, after = ServingProbe.choose_way, Daemon._build_predictor, [], []

    def observed(name, original):
        def run(self, *args, **kwargs):
            seen.append((name, os.sched_getscheduler(0)))
            return original(self, *args, **kwargs)

        return run

    def swap() -> None:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))
        daemon.swap_model(second[1])
        after.append(os.sched_getscheduler(0))

    for_swap = ModelFiles.for_swap  # its checks parse the files' metadata

    def checked(*args, **kwargs):
        seen.append(("check", os.sched_getscheduler(0)))
        return for_swap(*args, **kwargs)

    with daemon:  # the start's load on this (normal) thread is not the swap's
        monkeypatch.setattr(ModelFiles, "for_swap", checked)
        monkeypatch.setattr(ServingProbe, "choose_way", observed("measure", measure))
        # Builds the predictor (its sessions, their warm-up runs) and checks it fits.
        monkeypatch.setattr(Daemon, "_build_predictor", observed("load", build))
        thread = threading.Thread(target=swap)
        thread.start()
        thread.join(120)
    assert seen == [
        ("check", os.SCHED_OTHER),
        ("load", os.SCHED_OTHER),
        ("measure", os.SCHED_OTHER),
    ]
    assert after == [os.SCHED_RR]


@pytest.mark.skipif(
    not ThreadPlacement("rr", 1, frozenset()).realtime_permitted(),
    reason="SCHED_RR is not permitted here",
)
def test_a_start_on_a_real_time_thread_probes_under_the_normal_policy(
    tmp_path, source_id, monkeypatch
):
    """Under the drop-in the daemon starts on a real-time thread (SCHED_RR 1). The start's
    probe, back-to-back inference for seconds to a minute, would fill a CPU there and be
    stopped ~50 ms a second by the kernel (inside its own timings), and it would time what a
    swap, measured under the normal policy, then compares against. It runs under the normal
    policy; the thread is real-time again after, and the model loaded at start too."""
    settings = auto_settings(
        tmp_path, copy_tiny_model(tmp_path / "models"), source_id, tmp_path / "cache"
    )
    daemon = Daemon(settings)
    measure, seen, after, failed = ServingProbe.measure, [], [], []

    def observed(self):
        seen.append(os.sched_getscheduler(0))
        return measure(self)

    def start() -> None:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))
        try:
            daemon.start()
        except BaseException as err:  # said below, not lost on this thread
            failed.append(err)
        after.append(os.sched_getscheduler(0))

    monkeypatch.setattr(ServingProbe, "measure", observed)
    try:
        thread = threading.Thread(target=start)
        thread.start()
        thread.join(300)
    finally:
        daemon.stop()
    assert failed == [] and not thread.is_alive()
    assert seen == [os.SCHED_OTHER], "the start's probe ran real-time"
    assert after == [os.SCHED_RR]


def test_a_cached_choice_that_fails_to_load_at_start_gives_way_to_the_next_that_fits(
    tmp_path, source_id, caplog
):
    """A record measured while ONNX Runtime CUDA ran (its provider is listed whether or not
    CUDA's libraries load, so an update that breaks them leaves the key as it was): the start
    must not fail on it at every restart while ONNX Runtime CPU, measured beside it, fits.
    The failed way is a row saying why, as in a fresh probe, and the next one that fits
    serves. No GPU here: the record is written as measured (:func:`seed_start_probe`'s
    rows, the CUDA row made the fastest)."""
    settings = auto_settings(
        tmp_path,
        copy_tiny_model(tmp_path / "models"),
        source_id,
        tmp_path / "cache",
        interlocks={"max_sample_age_s": 1.0},
    )
    daemon = Daemon(settings)
    probe = _start_probe(daemon)
    period_s = 1 / settings.stream.sample_rate_hz
    tolerance = PARITY_TOLERANCE["fp32"]

    def row(c: Candidate) -> Measurement:
        if c == Candidate("window", "onnxruntime-cuda", 1):
            return Measurement(c, 1e-4, 2e-4, 20, 1, 0.0, tolerance)
        if c == Candidate("window", "onnxruntime-cpu", 1):
            return Measurement(c, 1e-3, 3.5 * 0.7 * period_s, 20, 1, 0.0, tolerance)
        return Measurement(c, problem="unavailable: not on this test host")

    probe.measure = lambda: [row(c) for c in probe.candidates()]
    assert probe.choose().chosen.measurement.candidate.backend == "onnxruntime-cuda"
    with caplog.at_level(logging.WARNING, "corticast"), daemon:
        serving = daemon.status()["serving"]
        assert daemon.predictor.info.backend == "onnxruntime-cpu"
        assert serving["chosen"]["backend"] == "onnxruntime-cpu"
        assert daemon.scheduler.stride == serving["chosen"]["stride"] == 4
        [cuda] = [c for c in serving["candidates"] if c["backend"] == "onnxruntime-cuda"
                  and c["mode"] == "window"]  # fmt: skip
        assert not cuda["fits"] and "failed to load at start" in cuda["reason"]
        assert not any("serving" in reason for reason in daemon.readiness().reasons)
    assert "window onnxruntime-cuda fp32 failed to load at start" in caplog.text


@pytest.mark.parametrize("when", ["measuring", "loading the choice"])
def test_a_host_out_of_descriptors_at_start_fails_the_start_and_is_no_verdict_on_a_way(
    tmp_path, source_id, monkeypatch, when
):
    """A passing descriptor shortage (ONNX Runtime's "system error number 24", injected at
    the first session built) says nothing of the way it hit: as the way's row, the start
    would serve a worse way and cache that verdict; as the chosen way failing to load, the
    start would give way to the next. The start fails (exit 1: systemd restarts it), nothing
    is tried after it, and the cache is as it was: none where the probe was measuring, the
    record read where it was read."""
    settings = auto_settings(
        tmp_path,
        copy_tiny_model(tmp_path / "models"),
        source_id,
        tmp_path / "cache",
        interlocks={"max_sample_age_s": 1.0},
    )
    daemon = Daemon(settings)
    cache = _start_probe(daemon).cache_path
    if when == "loading the choice":  # window mode chosen, stream mode fitting behind it
        seed_start_probe(daemon, window_p99_s=2.5 * 0.7 / settings.stream.sample_rate_hz)
    recorded = cache.read_bytes() if cache.exists() else None
    sessions = sessions_out_of_descriptors(monkeypatch)
    try:
        with pytest.raises(HostResourceError, match="out of file descriptors") as failed:
            daemon.start()
    finally:
        daemon.stop()
    assert (failed.value.exit_code, failed.value.errno) == (1, errno.EMFILE)
    assert len(sessions) == 1
    assert (cache.read_bytes() if cache.exists() else None) == recorded


def test_a_swap_whose_measurement_fits_no_stride_is_refused_and_the_old_model_serves_on(
    tmp_path, source_id
):
    """A staleness limit of 10 µs, which only the start's (written) measurement fits: any
    real prediction takes longer. Through the HTTP route: 409, saying why."""
    first = copy_tiny_model(tmp_path / "models")
    second = other_model(tmp_path / "models" / "next")
    settings = auto_settings(
        tmp_path, first, source_id, tmp_path / "cache", interlocks={"max_sample_age_s": 1e-5}
    )
    served = ServedDaemon(settings)
    daemon = served.daemon
    seed_start_probe(daemon, window_p99_s=1e-6)  # stride 1
    with served, httpx.Client(base_url=served.url, headers=AUTH, timeout=120) as http:
        predictor, before = daemon.predictor, http.get("/status").json()
        answer = http.put("/control/model", json={"path": str(second[1])})
        assert answer.status_code == 409, answer.text
        detail = answer.json()["detail"]
        assert f"cannot swap to {str(second[1].resolve())!r}" in detail
        assert "it fits no stride: p99 > 0.007 ms (staleness)" in detail  # the limit
        assert "window onnxruntime-cpu x1 fp32 (p99 " in detail  # the measured p99
        assert "would help: a faster backend, a smaller model, or a restart with it" in detail
        after = http.get("/status").json()
        assert daemon.predictor is predictor and daemon.scheduler.stride == 1
        assert after["model"]["files"] == before["model"]["files"]
        assert after["serving"] == before["serving"] and "note" not in after["serving"]
        assert after["scheduler"]["stride"] == 1


def test_a_swap_whose_measurement_runs_out_of_descriptors_is_no_verdict_on_the_way(
    tmp_path, source_id, monkeypatch
):
    """The swap's measurement of the way chosen at start meets a process out of descriptors
    (its session build, after the new model's own; the error injected there): as the way's
    row it would refuse the swap as fitting no stride (409) and record that. The host's
    failure (503): the old model serves on at its stride, and nothing is recorded."""
    first = copy_tiny_model(tmp_path / "models")
    second = other_model(tmp_path / "models" / "next")
    settings = auto_settings(
        tmp_path, first, source_id, tmp_path / "cache", interlocks={"max_sample_age_s": 1.0}
    )
    daemon = Daemon(settings)
    seed_start_probe(daemon, window_p99_s=11.5 * 0.7 / settings.stream.sample_rate_hz)
    with daemon:
        predictor, records = daemon.predictor, sorted((tmp_path / "cache").iterdir())
        built = sessions_out_of_descriptors(monkeypatch, failing=2)
        with pytest.raises(HostResourceError, match="out of file descriptors"):
            daemon.swap_model(second[1])
        assert len(built) == 2  # the new model's session, then the measurement's
        assert daemon.predictor is predictor and daemon.scheduler.stride == 12
        assert sorted((tmp_path / "cache").iterdir()) == records


def test_a_swap_under_auto_refuses_files_beside_it_that_break_the_directory_rules(
    tmp_path, source_id
):
    """Measured, a swap reads more than the file named: the step graph and the int8 copies
    beside it (metadata, hashes; an int8 way loads the copies). Each passes the model
    directory's rules before anything reads it, as the named file does: an int8 copy that is
    a symlink out of the directory is refused (403), a step graph beside it over the size
    limit too (422), with nothing loaded, measured or changed. Through the HTTP route."""
    first = copy_tiny_model(tmp_path / "models")
    outside = copy_tiny_model(tmp_path / "outside")
    linked = other_model(tmp_path / "models" / "linked")
    int8 = int8_path(linked[1])
    int8.symlink_to(outside[1])
    big = other_model(tmp_path / "models" / "big")
    with big[2].open("r+b") as handle:  # sparse: 64 MiB that take no disk
        handle.truncate(64 * 2**20)
    cache = tmp_path / "cache"
    settings = auto_settings(
        tmp_path, first, source_id, cache, interlocks={"max_sample_age_s": 1.0}
    )
    served = ServedDaemon(settings)
    daemon = served.daemon
    seed_start_probe(daemon, window_p99_s=2.5 * 0.7 / settings.stream.sample_rate_hz)
    records = sorted(cache.iterdir())
    with served, httpx.Client(base_url=served.url, headers=AUTH, timeout=120) as http:
        predictor, before = daemon.predictor, http.get("/status").json()

        answer = http.put("/control/model", json={"path": str(linked[1])})
        assert answer.status_code == 403, answer.text
        models = (tmp_path / "models").resolve()
        assert answer.json()["detail"] == (
            f"the int8 copy {str(linked[1].resolve().parent / int8.name)!r} is not a file inside "
            f"the model directory {str(models)!r} ([model] directory): models load only from "
            "there (a swap under [model] serving = 'auto' reads it)"
        )

        answer = http.put("/control/model", json={"path": str(big[1])})
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"] == (
            f"the step graph {str(big[2].resolve())!r} is 67108864 bytes, more than [model] "
            "max_file_bytes (33554432) (a swap under [model] serving = 'auto' reads it)"
        )

        after = http.get("/status").json()
        assert daemon.predictor is predictor
        assert (after["model"], after["serving"]) == (before["model"], before["serving"])
    assert sorted(cache.iterdir()) == records  # nothing measured


def test_a_swap_hashes_each_file_once_and_reads_records_keyed_as_before(
    tmp_path, source_id, monkeypatch, caplog
):
    """A swap names the same files to the predictor it loads (its info's hash) and to its
    probe's cache path, full key and way key: each file is read for its hash once, the
    window graph and the step graph beside it (the key's). The hashes are what they were: the
    start's record, written by a probe outside any swap, is what a swap to the start's own
    files reads, not measured again."""
    first = copy_tiny_model(tmp_path / "models")
    settings = auto_settings(
        tmp_path, first, source_id, tmp_path / "cache", interlocks={"max_sample_age_s": 1.0}
    )
    daemon = Daemon(settings)
    seed_start_probe(daemon, window_p99_s=2.5 * 0.7 / settings.stream.sample_rate_hz)
    caplog.clear()  # the seeding's own "measured" (kept where an earlier test set INFO)
    hashes = []

    def sha256(*args):
        hashes.append(args)
        return hashlib.sha256(*args)

    with caplog.at_level(logging.INFO, "corticast"), daemon:
        monkeypatch.setattr(predictor_module, "hashlib", SimpleNamespace(sha256=sha256))
        daemon.swap_model(first[1])
        [row] = daemon.status()["serving"]["candidates"]
    assert len(hashes) == 2
    assert (row["needs_stride"], row["p99_s"]) == (3, 2.5 * 0.7 / settings.stream.sample_rate_hz)
    assert "serving probe: using cached measurements" in caplog.text
    assert "serving probe: measured" not in caplog.text


def test_a_swap_measures_the_way_by_its_backend_name_not_the_predictors_label(
    tmp_path, source_id, monkeypatch
):
    """A loaded predictor's ``info.backend`` is a label, not always a backend's name: TensorRT
    says "tensorrt+cudagraph" once it has captured a CUDA graph. The way chosen at start is
    measured under its name, so a swap back to the start's files reads the start's record. No
    TensorRT here: the ONNX Runtime sessions (real ones) are labelled as TensorRT labels its
    own."""
    labelled = onnx_predictor.session_info
    monkeypatch.setattr(
        onnx_predictor,
        "session_info",
        lambda *args, **kwargs: dataclasses.replace(
            labelled(*args, **kwargs), backend="onnxruntime-cpu+cudagraph"
        ),
    )
    first = copy_tiny_model(tmp_path / "models")
    settings = auto_settings(
        tmp_path, first, source_id, tmp_path / "cache", interlocks={"max_sample_age_s": 1.0}
    )
    daemon = Daemon(settings)
    seed_start_probe(daemon, window_p99_s=2.5 * 0.7 / settings.stream.sample_rate_hz)
    with daemon:
        assert daemon.predictor.info.backend == "onnxruntime-cpu+cudagraph"
        daemon.swap_model(first[1])  # the start's own files: its record holds the way
        [row] = daemon.status()["serving"]["candidates"]
        assert (row["backend"], row["fits"], row["needs_stride"]) == ("onnxruntime-cpu", True, 3)
        assert daemon.scheduler.stride == 3


def test_after_a_start_where_nothing_fit_a_swap_that_fits_lifts_the_refusal_to_arm(
    tmp_path, source_id
):
    """Nothing fits at start (the start's record: every way too slow for the horizon), so the
    configured way serves and arming is refused; a swap to files that fit that way, measured,
    serves their stride, and the refusal goes: what serves now fits; the note says the
    configured way was measured, not one "chosen at start". A swap back to the start's files
    measures them again (their record did not fit: a swap is measured beside the live loop,
    and a busy moment must not refuse it until a restart), and they fit now."""
    first = copy_tiny_model(tmp_path / "models")
    second = other_model(tmp_path / "models" / "next")
    settings = auto_settings(
        tmp_path, first, source_id, tmp_path / "cache", interlocks={"max_sample_age_s": 1.0}
    )
    daemon = Daemon(settings)
    seed_start_probe(daemon, window_p99_s=0.5)  # needs a stride past the 16-frame horizon
    with daemon:
        assert daemon.status()["serving"]["chosen"] is None
        assert any("no way of serving" in r for r in daemon.readiness().reasons)
        daemon.swap_model(second[1])
        serving = daemon.status()["serving"]
        [row] = serving["candidates"]
        assert (row["mode"], row["backend"], row["threads"]) == ("window", "onnxruntime-cpu", 1)
        assert daemon.scheduler.stride == serving["chosen"]["stride"] == row["needs_stride"]
        measured = "window onnxruntime-cpu x1 fp32, the configured way (nothing fitted at start)"
        assert measured in serving["note"]  # nothing was chosen at start
        assert not any("serving" in r for r in daemon.readiness().reasons)
        daemon.swap_model(first[1])
        assert daemon.model_files.path == first[1].resolve()
        assert daemon.status()["serving"]["candidates"][0]["p99_s"] < 0.5  # measured now
        assert not any("serving" in r for r in daemon.readiness().reasons)


def test_outside_auto_a_swap_measures_nothing_and_keeps_the_stride(tmp_path, source_id):
    first = copy_tiny_model(tmp_path / "models")
    second = other_model(tmp_path / "models" / "next")
    cache = tmp_path / "cache"
    settings = loop_settings(
        tmp_path, first[1], first[2], source_id,
        model={"serving_cache_dir": cache}, scheduler={"stride": 3},
        interlocks={"max_sample_age_s": 1e-5}, bridge={"dry_run": True},
    )  # fmt: skip
    with Daemon(settings) as daemon:
        daemon.swap_model(second[1])
        assert daemon.model_files.path == second[1].resolve()
        assert daemon.scheduler.stride == daemon.status()["scheduler"]["stride"] == 3
        assert daemon.status()["serving"] == {"serving": "fixed"}
    assert not cache.exists()


@pytest.fixture(scope="module")
def int8_rows(int8_pair):
    """The probe's rows for the tiny model with its int8 copies, measured once (one core)."""
    window, step = int8_pair
    model = ModelSettings(path=window, step_path=step, serving="auto", serving_probe_runs=20)
    probe = ServingProbe(model, DEFAULT_STREAM, staleness_limit_s=1.0, cores=1)
    return probe.measure()


def _daemon_choosing(settings, rows, target: Candidate) -> Daemon:
    """A daemon whose start finds, cached where it looks, the probe's ``rows`` with
    ``target``'s made the fastest: which precision wins depends on this host's CPU, and the
    rule is the choice module's, tested there."""
    rows = [
        dataclasses.replace(m, p50_s=1e-5, p99_s=1e-5) if m.candidate == target else m for m in rows
    ]
    daemon = Daemon(settings)
    probe = _start_probe(daemon)
    assert [m.candidate for m in rows] == probe.candidates()  # what the daemon will offer
    probe.measure = lambda: rows
    probe.choose()
    return daemon


@pytest.mark.parametrize("mode", ["window", "stream"])
def test_an_int8_choice_serves_the_int8_files_and_says_so(
    tmp_path, int8_pair, source_id, int8_rows, mode, caplog
):
    """Which precision wins depends on this host's CPU; to see the daemon serve an int8
    choice, the measured int8 row of ``mode`` is made the fastest in the cache it reads (the
    rule is the choice module's, tested there)."""
    settings = auto_settings(tmp_path, (None, *int8_pair), source_id, tmp_path / "cache")
    daemon = _daemon_choosing(settings, int8_rows, Candidate(mode, "onnxruntime-cpu", 1, "int8"))
    window, _ = int8_pair
    served = int8_path(window) if mode == "window" else int8_step_path(window)
    with caplog.at_level(logging.INFO, "corticast"), daemon:
        info = daemon.predictor.info
        assert (info.mode, info.precision, info.model_path) == (mode, "int8", str(served))
        serving = daemon.status()["serving"]
        chosen = serving["chosen"]
        assert (chosen["mode"], chosen["precision"]) == (mode, "int8")
        assert "note" not in serving  # the int8 copy serving is what the probe chose
        metrics = generate_latest(daemon.registry).decode()
        assert 'precision="int8"' in metrics and f'mode="{mode}"' in metrics
    assert f"serving (auto) {mode} onnxruntime-cpu x1 int8 at stride 1 from" in caplog.text
    assert "using cached measurements" in caplog.text


def test_after_an_int8_choice_a_swap_serves_the_int8_copies_beside_the_files_named(
    tmp_path, int8_pair, source_id, int8_rows, caplog
):
    """The way chosen at start is int8 (made so in the start's record, as above): a swap to
    files without int8 copies measures and serves their fp32, saying so; a swap back to the
    fp32 files named at start serves their int8 copies again, from the start's record."""
    models = tmp_path / "models"
    models.mkdir()
    window, step = (models / p.name for p in int8_pair)
    for original in (*int8_pair, int8_path(int8_pair[0]), int8_step_path(int8_pair[0])):
        shutil.copyfile(original, models / original.name)
    settings = auto_settings(
        tmp_path, (None, window, step), source_id, tmp_path / "cache",
        interlocks={"max_sample_age_s": 1.0},
    )  # fmt: skip
    daemon = _daemon_choosing(
        settings, int8_rows, Candidate("window", "onnxruntime-cpu", 1, "int8")
    )
    plain = other_model(models / "next")
    with caplog.at_level(logging.INFO, "corticast"), daemon:
        assert daemon.predictor.info.precision == "int8"
        daemon.swap_model(plain[1])
        assert daemon.predictor.info.precision == "fp32"
        [row] = daemon.status()["serving"]["candidates"]
        assert (row["mode"], row["precision"], row["runs"] >= 20) == ("window", "fp32", True)
        assert (
            "the way chosen at start but in fp32: they offer no int8 graphs"
            in (daemon.status()["serving"]["note"])
        )
        answer = daemon.swap_model(window)
        assert answer["path"] == str(int8_path(window).resolve())
        assert daemon.predictor.info.precision == "int8"
        serving = daemon.status()["serving"]
        assert serving["measured"] == str(window.resolve())
        assert (serving["chosen"]["precision"], serving["chosen"]["stride"]) == ("int8", 1)
        assert daemon.scheduler.stride == 1
    assert "offers none for window mode (no int8 copy beside it): measured in fp32" in (caplog.text)
    assert caplog.text.count("serving probe: measured window onnxruntime-cpu x1") == 1


def test_a_start_hashes_each_file_once(tmp_path, source_id, monkeypatch):
    """The start's probe (its cache path and keys, here read from its record) and the
    predictor it then loads name the same files, the window graph and the step graph beside
    it: each is read for its hash once."""
    first = copy_tiny_model(tmp_path / "models")
    settings = auto_settings(
        tmp_path, first, source_id, tmp_path / "cache", interlocks={"max_sample_age_s": 1.0}
    )
    seed_start_probe(Daemon(settings), window_p99_s=2.5 * 0.7 / settings.stream.sample_rate_hz)
    hashes = []

    def sha256(*args):
        hashes.append(args)
        return hashlib.sha256(*args)

    monkeypatch.setattr(predictor_module, "hashlib", SimpleNamespace(sha256=sha256))
    with Daemon(settings) as daemon:
        assert daemon.status()["serving"]["chosen"] is not None
    assert len(hashes) == 2  # the window graph and the step graph
