"""``corticast doctor`` on the tiny model: host facts, the probe's table and its choice,
without starting the daemon; one line for bad input."""

import dataclasses
import shutil

import pytest
from typer.testing import CliRunner

from models.held_out_check import stamp_check
from models.metadata import describe_shortfall, int8_path, int8_step_path
from service.cli.app import app
from service.core.realtime_host import read_realtime_host
from service.inference import host
from service.inference.serving_choice import Candidate
from service.inference.serving_probe import ServingProbe
from tests.service._fault_injection import sessions_out_of_descriptors

runner = CliRunner()
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("serving-cache")


@pytest.fixture(autouse=True)
def one_core(monkeypatch):
    """One usable core: one thread count per backend, half the candidates to time."""
    monkeypatch.setattr(host, "usable_cores", lambda: 1)


def config(tmp_path, window, cache_dir, extra=""):
    path = tmp_path / "doctor.toml"
    path.write_text(
        f'[model]\npath = "{window}"\nserving_probe_runs = 20\n'
        f'serving_cache_dir = "{cache_dir}"\n{extra}'
    )
    return str(path)


def test_doctor_prints_the_host_the_table_and_the_choice(tmp_path, exported, cache_dir):
    result = runner.invoke(app, ["doctor", "--config", config(tmp_path, exported[1], cache_dir)])
    assert result.exit_code in (0, 1), result.output
    out = result.output
    for fact in ("cpu ", "usable cores      1", "sgemm peak", "onnxruntime ", "gpu extra"):
        assert fact in out
    assert "candidate" in out and "p50 ms" in out and "p99 ms" in out
    lines = out.splitlines()
    [header] = [line for line in lines if line.startswith("candidate ")]
    assert header.split()[:2] == ["candidate", "precision"] and "accuracy" in header
    rows = [line for line in lines if line.startswith(("window ", "stream "))]
    assert any(r.startswith("window onnxruntime-cpu x1") for r in rows)
    assert any(r.startswith("stream onnxruntime-cpu x1") for r in rows)
    assert not any("int8" in r for r in rows)  # no int8 copies beside this model
    chosen = [r for r in rows if r.endswith("<==")]
    if result.exit_code == 0:  # whether any stride fits depends on the host's load
        assert len(chosen) == 1 and "yes, at stride" in chosen[0]
        assert any(line.startswith("chosen ") and "fits stride" in line for line in lines)
        assert 'serving = "fixed"' in out  # the config does not serve it yet
    else:
        assert not chosen and "error: no candidate fits" in out
    assert list(cache_dir.glob("*.json"))  # what a daemon started next would read


def test_doctor_says_when_nothing_fits_and_exits_1(tmp_path, exported, cache_dir):
    extra = "[interlocks]\nmax_sample_age_s = 1e-6\n"
    [cached] = cache_dir.glob("*.json")
    before = cached.read_text()
    result = runner.invoke(
        app, ["doctor", "--remeasure", "--config", config(tmp_path, exported[1], cache_dir, extra)]
    )
    assert cached.read_text() != before  # measured again and cached anew
    assert result.exit_code == 1
    assert "error: no candidate fits" in result.output and "a faster backend" in result.output


def test_doctor_says_what_the_kernel_does_to_a_full_real_time_cpu_and_warns_at_no_rest(
    tmp_path, exported, cache_dir
):
    """The kernel stops a real-time thread that leaves its CPU no idle time for ~50 ms a
    second: the doctor names the mechanisms this host has and how [realtime] would run, and
    warns where the loop's threads would be let fill a CPU (idle_share = 0)."""
    stoppers = read_realtime_host().stoppers()
    extra = '[realtime]\npolicy = "fifo"\nidle_share = 0.0\n'
    result = runner.invoke(
        app, ["doctor", "--config", config(tmp_path, exported[1], cache_dir, extra)]
    )
    lines = result.output.splitlines()
    [kernel] = [line for line in lines if line.startswith("real-time ")]
    assert all(stopper in kernel for stopper in stoppers)
    [placement] = [line for line in lines if line.startswith("[realtime] ")]
    assert "policy fifo, priorities ingest 20 / inference 10 / ZeroMQ I/O 11, idle_share 0;" in (
        placement
    )
    warned = [line for line in lines if line.startswith("warning ") and "idle_share = 0" in line]
    assert len(warned) == (1 if stoppers else 0)

    quiet = runner.invoke(app, ["doctor", "--config", config(tmp_path, exported[1], cache_dir)])
    assert "policy off, idle_share 0.1" in quiet.output
    assert "idle_share = 0" not in quiet.output


def test_a_probe_out_of_descriptors_is_one_line_exit_1_and_records_no_verdict(
    tmp_path, exported, monkeypatch
):
    """The doctor writes the cache the daemon's start reads: a way whose session build met a
    process out of descriptors (the error injected at the first session built) was a row
    saying it failed, recorded for the daemon as that way's verdict. The host's failure: one
    line, exit 1 (a run later may work), nothing recorded."""
    cache = tmp_path / "cache"
    sessions_out_of_descriptors(monkeypatch)
    result = runner.invoke(app, ["doctor", "--config", config(tmp_path, exported[1], cache)])
    assert result.exit_code == 1, result.output
    [error] = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert "this process is out of file descriptors" in error
    assert not cache.exists() or not any(cache.iterdir())


def test_doctor_names_a_bad_model_path_in_one_line(tmp_path, cache_dir):
    result = runner.invoke(
        app, ["doctor", "--config", config(tmp_path, tmp_path / "none.onnx", cache_dir)]
    )
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: [model] path")
    assert "does not exist" in result.output and "Traceback" not in result.output


def test_a_missing_relative_model_path_names_the_directory_it_was_looked_for_in(
    tmp_path, cache_dir, monkeypatch
):
    """As other relative paths do (test_config): under systemd the working directory is
    /var/lib/corticast, not the config file's, where 'model.onnx' may well lie."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "model.onnx").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app, ["doctor", "--config", config(tmp_path / "etc", "model.onnx", cache_dir)]
    )
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: [model] path 'model.onnx' does not exist (a relative path is read from the "
        f"working directory, {str(tmp_path)!r}, not from the config file's)"
    )


def test_doctor_refuses_a_configured_stride_past_the_horizon_in_one_line(
    tmp_path, exported, cache_dir
):
    """No stride past the 16-frame horizon can be chosen: said before measuring anything (with
    serving = 'fixed' the config load refuses it: test_config)."""
    extra = 'serving = "auto"\n[scheduler]\nstride = 17\n'
    result = runner.invoke(
        app, ["doctor", "--config", config(tmp_path, exported[1], cache_dir, extra)]
    )
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[-1].startswith("error: [scheduler] stride 17"), result.output
    assert "candidate" not in result.output  # nothing measured


def test_doctor_shows_the_int8_copies_beside_the_model_in_the_precision_column(tmp_path, int8_pair):
    result = runner.invoke(
        app, ["doctor", "--config", config(tmp_path, int8_pair[0], tmp_path / "cache")]
    )
    assert result.exit_code in (0, 1), result.output
    rows = {
        tuple(line.split()[:4]): line
        for line in result.output.splitlines()
        if line.startswith(("window onnxruntime-cpu x", "stream onnxruntime-cpu x"))
    }
    for mode in ("window", "stream"):
        fp32 = rows[(mode, "onnxruntime-cpu", "x1", "fp32")]
        int8 = rows[(mode, "onnxruntime-cpu", "x1", "int8")]
        assert "parity " in fp32 and "guard " not in fp32
        assert "guard " in int8 and " dB (>= -0.1)" in int8


def test_doctor_warns_as_the_daemon_would_when_the_int8_copy_it_chose_is_below_persistence(
    tmp_path, int8_pair, monkeypatch
):
    """The daemon warns at start from the held-out check of the files it serves; the doctor says
    the same of its choice, here the int8 copy, whose own check is below persistence where
    fp32's is not. Which precision wins depends on this host's CPU, so the measured int8 window
    row is made the fastest (the rule is the choice module's, tested there)."""
    window, step = int8_pair
    for path in (window, step, int8_path(window), int8_step_path(window)):
        shutil.copy(path, tmp_path / path.name)
    window, step = tmp_path / window.name, tmp_path / step.name
    check = {"data": "run-validation", "split": "val", "windows": 9, "data_range": 2.0,
             "persistence_psnr_db": [20.0, 18.0]}  # fmt: skip
    stamp_check([window, step], {**check, "model_psnr_db": [21.0, 18.5]})
    stamp_check(
        [int8_path(window), int8_step_path(window)], {**check, "model_psnr_db": [21.0, 17.5]}
    )
    target = Candidate("window", "onnxruntime-cpu", 1, "int8")
    measure = ServingProbe.measure

    def int8_fastest(probe):
        return [
            dataclasses.replace(m, p50_s=1e-5, p99_s=1e-5) if m.candidate == target else m
            for m in measure(probe)
        ]

    monkeypatch.setattr(ServingProbe, "measure", int8_fastest)
    outputs = {}
    for serving in ("fixed", "auto"):  # the second reads what the first measured
        extra = f'serving = "{serving}"\n'
        result = runner.invoke(
            app, ["doctor", "--config", config(tmp_path, window, tmp_path / "c", extra)]
        )
        assert result.exit_code == 0, result.output
        outputs[serving] = result.output
    [chosen] = [line for line in outputs["auto"].splitlines() if line.endswith("<==")]
    assert chosen.split()[:4] == ["window", "onnxruntime-cpu", "x1", "int8"]
    shortfall = describe_shortfall({2: 0.5})
    assert f"warning           model {str(int8_path(window))!r} is {shortfall}" in outputs["auto"]
    assert "warning " not in outputs["fixed"]  # served as configured: fp32, above persistence
