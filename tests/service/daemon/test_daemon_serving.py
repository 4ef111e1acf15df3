"""``[model] serving = "auto"`` in the daemon's start path: the probe's choice is what serves,
and /status, the metrics and arming say so. No rig: the probe runs before any stream exists.
The tests share one cache directory, so later ones read what the first measured."""

import dataclasses
import logging

import pytest
from prometheus_client import generate_latest

from models.metadata import int8_path, int8_step_path
from service.daemon.daemon import Daemon, DaemonStateError
from service.inference import host
from service.inference.model_files import ModelFileError
from service.inference.predictor import DEFAULT_STREAM
from service.inference.serving_choice import Candidate
from service.inference.serving_probe import ServingProbe
from service.inference.settings import ModelSettings
from tests.data.tiny_model import copy_tiny_model
from tests.service._loop_harness import loop_settings

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


def test_a_model_swapped_in_is_said_not_to_be_the_one_measured(tmp_path, source_id, cache_dir):
    """The probe runs at start: after a hot swap to other files, /status's serving block still
    shows the start's table, and says for which files, and that the new ones were not
    measured."""
    first = copy_tiny_model(tmp_path / "models")
    second = copy_tiny_model(tmp_path / "models" / "next")
    settings = auto_settings(tmp_path, first, source_id, cache_dir)
    with Daemon(settings) as daemon:
        before = daemon.status()["serving"]
        assert before["measured"] == str(first[1].resolve())
        assert "note" not in before
        daemon.swap_model(second[1])
        after = daemon.status()["serving"]
    assert after["measured"] == before["measured"]
    assert after["candidates"] == before["candidates"]
    assert str(second[1].resolve()) in after["note"] and "not for" in after["note"]


@pytest.fixture(scope="module")
def int8_rows(int8_pair):
    """The probe's rows for the tiny model with its int8 copies, measured once (one core)."""
    window, step = int8_pair
    model = ModelSettings(path=window, step_path=step, serving="auto", serving_probe_runs=20)
    probe = ServingProbe(model, DEFAULT_STREAM, staleness_limit_s=1.0, cores=1)
    return probe.measure()


@pytest.mark.parametrize("mode", ["window", "stream"])
def test_an_int8_choice_serves_the_int8_files_and_says_so(
    tmp_path, int8_pair, source_id, int8_rows, mode, caplog
):
    """Which precision wins depends on this host's CPU; to see the daemon serve an int8
    choice, the measured int8 row of ``mode`` is made the fastest in the cache it reads (the
    rule is the choice module's, tested there)."""
    settings = auto_settings(tmp_path, (None, *int8_pair), source_id, tmp_path / "cache")
    target = Candidate(mode, "onnxruntime-cpu", 1, "int8")
    rows = [
        dataclasses.replace(m, p50_s=1e-5, p99_s=1e-5) if m.candidate == target else m
        for m in int8_rows
    ]
    daemon = Daemon(settings)
    probe = ServingProbe(
        settings.model,
        daemon.stream_spec,
        staleness_limit_s=settings.interlocks.max_sample_age_s,
        min_stride=settings.scheduler.stride,
    )
    assert [m.candidate for m in rows] == probe.candidates()  # what the daemon will offer
    probe.measure = lambda: rows
    probe.choose()  # cached where the daemon looks
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
