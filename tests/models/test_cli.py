"""train -> export -> evaluate through the command line, as a user runs them."""

import json
import logging
import re
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

import models.evaluation
import models.quantize
from bench.data.session_io import write_xdf
from bench.data.synth import SynthConfig, generate_session
from models.cli import EVALUATION_BATCH
from models.metadata import (
    describe_shortfall,
    held_out_shortfall,
    int8_path,
    read_model_metadata,
)
from models.quantize import Int8Settings
from models.sources import load_sessions, load_spec, parse_mixture, parse_synthetic
from models.training import load_checkpoint
from models.windows import SplitWindows
from service.cli.app import app
from service.core.grid import ElectrodeGrid
from service.daemon.daemon import Daemon
from tests.data.tiny_model import DIRECTORY as TINY
from tests.service._loop_harness import loop_settings

runner = CliRunner()
DATA = "synthetic:5@5"


def _train(run_dir, family="convlstm", *extra):
    args = ["train", family, "--data", DATA, "--run", str(run_dir), "--steps", "3"]
    args += ["--hidden", "3,4", "--batch-size", "2", "--window-stride", "16", *extra]
    return runner.invoke(app, args)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    result = _train(run_dir, "mr_layer_lstm", "--no-adversarial")
    assert result.exit_code == 0, result.output
    return run_dir


CHEAP_INT8 = Int8Settings(
    calibration_data="synthetic-mix:9000@4",
    guard_data="synthetic-mix:9100@4",
    calibration_windows=16,
    guard_windows=32,
)
"""A few seconds of data for ``--int8``'s calibration and guard (the defaults take ~18 s)."""


@pytest.fixture(scope="module")
def exported_window(trained, tmp_path_factory):
    """``corticast export RUN OUT --int8`` of the trained run: (the window graph, what it
    printed); the int8 copy beside it is calibrated and guarded on :data:`CHEAP_INT8`.

    The window graph only: a 16-frame step graph costs a minute of tracing; the step export
    is covered by ``test_export.py`` (a short one), by ``test_tiny_model.py`` (a 16-frame one,
    committed) and, for ``--step`` reaching the exporter, by the refusal test below.
    """
    # export makes the folder it is given (it used to fail on ONNX's external-data file)
    window = tmp_path_factory.mktemp("export") / "not" / "made" / "model.onnx"
    weights = window.parent / "weights.run"
    real = models.quantize.export_int8
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(models.quantize, "export_int8", lambda *a, **k: real(*a, CHEAP_INT8, **k))
        result = runner.invoke(
            app, ["export", str(trained), str(window), "--int8", "--weights-copy", str(weights)]
        )
    assert result.exit_code == 0, result.output
    return window, result.output


def test_train_records_its_data_and_resumes(trained):
    state = load_checkpoint(trained)
    assert state["steps_done"] == 3
    assert state["config"]["data"] == (DATA,)
    assert state["provenance"]["sessions"][0]["seed"] == 5
    again = _train(trained, "mr_layer_lstm", "--no-adversarial")
    assert again.exit_code == 0, again.output
    assert load_checkpoint(trained)["steps_done"] == 3  # already done: nothing retrained
    assert f"{trained} has trained its 3 steps already: nothing to do" in again.output


def test_a_file_spec_is_recorded_absolute_so_another_folder_s_file_of_its_name_is_no_resume(
    tmp_path, monkeypatch
):
    """``--data s.xdf`` names the file in the folder it was typed in. Recorded as typed, the
    run's export (its held-out check reloads the data) or a resume from another folder read
    whatever file of that name is there: a resume from a folder holding another recording
    was taken for the same run. Recorded absolute, it is the same file from anywhere, and the
    other folder's is a different configuration."""
    from bench.data.session_io import write_xdf
    from bench.data.synth import SynthConfig, generate_session

    first, other = tmp_path / "first", tmp_path / "other"
    for folder, seed in ((first, 1), (other, 2)):
        folder.mkdir()
        write_xdf(folder / "s.xdf", generate_session(SynthConfig(duration_s=5.0, seed=seed)))
    run_dir = tmp_path / "run"
    args = ["train", "mr_layer_lstm", "--data", "s.xdf::blank_ms=5::markers=pulser"]
    args += ["--run", str(run_dir), "--steps", "2", "--hidden", "3,4", "--batch-size", "2"]
    args += ["--window-stride", "16", "--no-adversarial"]
    monkeypatch.chdir(first)
    with pytest.warns(RuntimeWarning, match="no stimulation marker stream named 'pulser'"):
        result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    recorded = f"{first / 's.xdf'}::blank_ms=5::markers=pulser"
    assert load_checkpoint(run_dir)["config"]["data"] == (recorded,)
    with pytest.warns(RuntimeWarning, match="no stimulation marker stream named 'pulser'"):
        again = runner.invoke(app, args)  # from the same folder: the same run, resumed
    assert again.exit_code == 0, again.output
    monkeypatch.chdir(other)
    with pytest.warns(RuntimeWarning, match="no stimulation marker stream named 'pulser'"):
        elsewhere = runner.invoke(app, args)
    assert elsewhere.exit_code != 0
    assert "holds a run with a different configuration (['data'])" in elsewhere.output


def test_export_writes_a_self_describing_window_graph(trained, exported_window):
    window, output = exported_window
    assert "window graph, max |ONNX - PyTorch|" in output
    # The slow stage was announced before it ran (on stderr: stdout keeps the results).
    assert output.index("exporting the window graph to") < output.index("wrote ")
    metadata = read_model_metadata(window)
    state = load_checkpoint(trained)
    assert metadata.family == "mr_layer_lstm"
    assert metadata.config["hidden"] == [3, 4]
    assert metadata.normalisation == state["normalisation"]
    assert metadata.provenance["run"]["data"] == [DATA]
    assert metadata.provenance["training_data"]["grid"] == {"rows": 18, "cols": 20, "pitch_m": 5e-4}
    assert metadata.provenance["steps_done"] == 3


def test_export_records_a_held_out_check_the_daemon_can_read(exported_window):
    """The exported graph is scored beside persistence on the run's validation split, and
    the verdict printed is the one the file carries (three training steps: below)."""
    window, output = exported_window
    check = read_model_metadata(window).provenance["held_out_check"]
    assert (check["data"], check["split"]) == ("run-validation", "val")
    assert check["windows"] > 0 and check["data_range"] == 2.0
    assert len(check["model_psnr_db"]) == len(check["persistence_psnr_db"]) == 16
    shortfall = held_out_shortfall(read_model_metadata(window))
    assert shortfall, check  # an untrained absolute model is below persistence somewhere
    verdict = f"held-out check on the validation split of its training data ({check['windows']} "
    assert f"{verdict}windows): {describe_shortfall(shortfall)}" in output.splitlines()


def test_int8_copies_carry_a_held_out_check_of_their_own_the_daemon_warns_from(
    exported_window, tmp_path, source_id, caplog
):
    """``export --int8`` scores the int8 window graph through itself on the fp32 check's
    windows and records that in the int8 files: a daemon serving them warns at start, as it
    does for fp32 (before, the copies carried no check and it was silent)."""
    out, output = exported_window
    fp32 = read_model_metadata(out).provenance["held_out_check"]
    int8 = read_model_metadata(int8_path(out)).provenance["held_out_check"]
    assert int8["persistence_psnr_db"] == fp32["persistence_psnr_db"]  # the same windows
    assert int8["model_psnr_db"] != fp32["model_psnr_db"]  # scored through the int8 graph
    shortfall = held_out_shortfall(read_model_metadata(int8_path(out)))
    assert shortfall, int8  # three training steps: below persistence somewhere
    verdict = "int8 copies: held-out check on the validation split of its training data ("
    assert f"{verdict}{int8['windows']} windows): {describe_shortfall(shortfall)}" in (
        output.splitlines()
    )

    logging.getLogger().addHandler(caplog.handler)  # the CLI's logging set-up replaced it
    settings = loop_settings(tmp_path, int8_path(out), None, source_id, bridge={"dry_run": True})
    with caplog.at_level(logging.WARNING, "corticast.daemon"), Daemon(settings) as daemon:
        assert daemon.predictor.info.precision == "int8"
        status = daemon.status()["model"]
    assert status["held_out_shortfall_db"] == {str(f): db for f, db in shortfall.items()}
    warning = f"model {str(int8_path(out))!r} is {describe_shortfall(shortfall)}"
    assert warning in caplog.text


def test_export_copies_the_weights_without_what_only_resuming_needs(trained, exported_window):
    window, output = exported_window
    copy = load_checkpoint(window.parent / "weights.run")
    original = load_checkpoint(trained)
    assert f"wrote {window.parent / 'weights.run' / 'checkpoint.pt'}" in output
    assert "training" in original and "training" not in copy and "rng" not in copy
    assert copy["config"] == original["config"] and copy["steps_done"] == original["steps_done"]
    assert copy["normalisation"] == original["normalisation"]
    for name, tensor in original["generator"].items():
        assert np.array_equal(copy["generator"][name].numpy(), tensor.numpy()), name


def test_an_export_stopped_before_its_check_is_recorded_leaves_the_served_files_as_they_were(
    trained, exported_window, tmp_path, monkeypatch
):
    """Stopped between writing the graphs and recording their check (a kill, Ctrl-C, a
    failure), export left at OUT a file the daemon serves without its below-persistence
    warning, over the model that was there. The files go into place only once checked."""
    import models.export
    import models.held_out_check

    graph, _ = exported_window

    def export(run, out, step_out=None, **_):  # the fixture's graph, not a minute's tracing
        for path in (out, step_out):
            path.parent.mkdir(parents=True, exist_ok=True)  # as export_from_checkpoint does
            shutil.copyfile(graph, path)
        return [f"wrote {out} and {step_out}"]

    def killed(*_, **__):
        raise KeyboardInterrupt  # where a kill would land

    served, step = tmp_path / "served" / "model.onnx", tmp_path / "steps" / "model.step.onnx"
    served.parent.mkdir()
    served.write_bytes(b"the model the daemon serves")
    monkeypatch.setattr(models.export, "export_from_checkpoint", export)
    monkeypatch.setattr(models.held_out_check, "held_out_check", killed)
    result = runner.invoke(app, ["export", str(trained), str(served), "--step", str(step)])
    assert result.exit_code == 130, result.output  # as a Ctrl-C ends it
    assert served.read_bytes() == b"the model the daemon serves"
    assert list(served.parent.iterdir()) == [served]  # nothing left beside it
    assert not step.parent.exists()  # made for the step graph, which never went there


def test_an_export_of_a_run_that_does_not_load_makes_no_folder_for_its_files(tmp_path):
    """A mistyped run directory is refused naming it, and the folders OUT and --step name,
    made for the files before the run was read, are not left behind empty."""
    out, step = tmp_path / "models" / "new" / "model.onnx", tmp_path / "steps" / "m.step.onnx"
    missing = tmp_path / "no-such-run"
    result = runner.invoke(app, ["export", str(missing), str(out), "--step", str(step)])
    assert result.exit_code == 1, result.output
    assert str(missing) in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_evaluate_scores_checkpoint_and_onnx_alike(trained, exported_window, tmp_path):
    window, _ = exported_window
    out = tmp_path / "eval"
    args = ["evaluate", str(trained), str(window), "--data", DATA, "--out", str(out)]
    result = runner.invoke(app, [*args, "--names", "torch,onnx"])
    assert result.exit_code == 0, result.output
    assert "| frame | torch | onnx | persistence | linear | ar |" in result.output
    report = json.loads((out / "evaluation.json").read_text())
    assert report["baselines"] == ["persistence", "linear", "ar"]
    torch_mse = np.array(report["predictors"]["torch"]["mse"])
    onnx_mse = np.array(report["predictors"]["onnx"]["mse"])
    np.testing.assert_allclose(onnx_mse, torch_mse, rtol=1e-4)
    assert (out / "psnr.png").stat().st_size > 10_000


def test_evaluate_refuses_two_models_of_one_name_rather_than_score_one(trained, tmp_path):
    """Models are scored by name: two of one name (``--names a,a``, or one path given twice
    without names) left one column in the table and the report, the other model's scores
    silently gone, and the verdict line printed twice for the one that stayed."""
    args = ["evaluate", str(trained), str(trained), "--data", DATA, "--out", str(tmp_path)]
    for names in (["--names", "a,a"], []):
        result = runner.invoke(app, [*args, *names])
        assert result.exit_code == 1, result.output
        assert "names two models" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "evaluation.json").exists()


@pytest.mark.parametrize(
    ("made", "said"),
    [
        ({"sample_rate_hz": 500.0}, r"rate 500 Hz != the model's 277\.78 Hz"),
        (
            {"grid": ElectrodeGrid(18, 20, pitch_m=0.4e-3)},
            r"grid 18x20 at 0\.4 mm pitch != the model's 18x20 at 0\.5 mm pitch",
        ),
    ],
)
def test_evaluate_refuses_data_of_another_stream_than_the_models(tmp_path, made, said):
    """A recording at another rate or on another array than a model's was scored as if it
    were the model's stream (exit 0, a table of numbers for a stream the daemon would never
    serve it); adapt and export --int8 refused such data, evaluate did not."""
    path = tmp_path / "other.xdf"
    write_xdf(path, generate_session(SynthConfig(duration_s=3.0, seed=2, **made)))
    out = tmp_path / "eval"
    for model in (TINY / "run", TINY / "model.onnx"):
        result = runner.invoke(
            app, ["evaluate", str(model), "--data", str(path), "--out", str(out)]
        )
        assert result.exit_code == 1, result.output
        assert re.search(
            rf"the data do not fit the model .*session 0 \(.*other\.xdf\): {said}", (result.output)
        ), result.output
    assert not (out / "evaluation.json").exists()


def test_evaluate_builds_the_windows_a_batch_at_a_time(trained, tmp_path, monkeypatch):
    """``evaluate`` keeps only sums so that a held-out split of any length fits in memory, but
    the command built every window of the split before scoring the first: 46 kB a window, so
    an hour's recording at stride 1 held ~9 GB of windows and their stacked copies."""
    built, at_first_score = [0], []
    item, persistence = SplitWindows.__getitem__, models.evaluation.persistence

    def counted(self, index):
        built[0] += 1
        return item(self, index)

    def scored(*args, **kwargs):
        at_first_score.append(built[0])
        return persistence(*args, **kwargs)

    monkeypatch.setattr(SplitWindows, "__getitem__", counted)
    monkeypatch.setattr(models.evaluation, "persistence", scored)
    args = ["evaluate", str(trained), "--data", DATA, "--out", str(tmp_path)]
    result = runner.invoke(app, [*args, "--window-stride", "1", "--ar-lags", "0"])
    assert result.exit_code == 0, result.output
    windows = json.loads((tmp_path / "evaluation.json").read_text())["n_windows"]
    assert windows > 2 * EVALUATION_BATCH
    assert at_first_score[0] <= EVALUATION_BATCH < windows == built[0]


def test_a_family_that_cannot_stream_refuses_the_step_export(tmp_path):
    run_dir = tmp_path / "run"
    assert _train(run_dir, "mr_lstm", "--no-adversarial").exit_code == 0
    result = runner.invoke(
        app, ["export", str(run_dir), str(tmp_path / "m.onnx"), "--step", str(tmp_path / "s.onnx")]
    )
    assert result.exit_code == 1
    assert "model family 'mr_lstm' cannot stream one frame at a time" in result.output
    assert not list(tmp_path.glob("*.onnx"))  # refused before anything was written


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "lstm", "--data", DATA, "--run", "{tmp}"], "unknown model 'lstm'"),
        (  # a mistyped path: said so, not "neither a session file nor ..."
            ["train", "convlstm", "--data", "nowhere.xdf", "--run", "{tmp}"],
            "data 'nowhere.xdf' does not exist: give a session file (.xdf, .nwb), synthetic:",
        ),
        (["train", "convlstm", "--data", "{tmp}", "--run", "{tmp}/r"], "' is not a file: give"),
        (  # not "must be a training run directory or an .onnx file": it is named .onnx
            ["evaluate", "{tmp}/nowhere.onnx", "--data", DATA, "--out", "{tmp}"],
            "/nowhere.onnx' does not exist",
        ),
        (["train", "convlstm", "--data", "synthetic:3", "--run", "{tmp}"], "SEEDS@SECONDS"),
        (["train", "convlstm", "--data", DATA, "--run", "{tmp}", "--hidden", "8"], "--hidden"),
        (["train", "convlstm", "--data", DATA, "--run", "{tmp}", "--threads", "-1"], "--threads"),
        (["evaluate", "{tmp}", "--data", DATA, "--out", "{tmp}"], "no checkpoint in"),
        (["export", "{tmp}", "{tmp}/m.onnx"], "no checkpoint in"),
    ],
)
def test_mistakes_get_one_clear_line(tmp_path, args, message):
    result = runner.invoke(app, [a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_synthetic_specs():
    assert parse_synthetic("synthetic:100-102@60") == ([100, 101, 102], 60.0)
    assert parse_synthetic("synthetic:1,4,9@2.5") == ([1, 4, 9], 2.5)
    for bad, message in [
        ("synthetic:5-3@10", "must not run backwards"),
        ("synthetic:1,1@10", "names a seed twice"),
        ("synthetic:0-5000@1", "more than 1000"),
        ("synthetic:1@0", "must be > 0 s"),
        ("synthetic:a@1", "must look like"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_synthetic(bad)


def test_mixture_specs():
    assert parse_mixture("synthetic-mix:0-2@5") == ([0, 1, 2], 5.0, ("pink", "ou", "field"))
    assert parse_mixture("synthetic-mix:4@1.5/without=ou")[2] == ("pink", "field")
    assert parse_mixture("synthetic-mix:4@1.5/without=ou,field")[2] == ("pink",)
    assert parse_mixture("synthetic-mix:4@1.5/only=field")[2] == ("field",)
    for bad, message in (
        ("synthetic-mix:a@5", "must look like synthetic-mix:SEEDS@SECONDS"),
        ("synthetic-mix:3-1@5", "must not run backwards"),
        ("synthetic-mix:1@5/except=ou", "'except=ou' .* must be without=FAMILY or only=FAMILY"),
        ("synthetic-mix:1@5/only", "must be without=FAMILY or only=FAMILY"),
        ("synthetic-mix:1@5/only=blue", "unknown generator family 'blue' .* pink, ou, field"),
        ("synthetic-mix:1@5/without=pink,ou,field", "leaves out every generator family"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_mixture(bad)


def test_mixture_spec_loads_labelled_sessions_of_the_families_asked():
    left_out = load_spec("synthetic-mix:0-5@1/without=ou")
    assert len(left_out) == 6 and all(s.info["family"] in ("pink", "field") for s in left_out)
    assert {s.info["family"] for s in load_spec("synthetic-mix:0-2@1/only=ou")} == {"ou"}


@pytest.mark.parametrize(
    "specs",
    [
        ["synthetic:5@2", "synthetic:4-6@2"],
        ["synthetic-mix:3@2", "synthetic-mix:3@2/only=ou"],  # seed 3 is ou in both
    ],
)
def test_a_generated_session_named_by_two_specs_is_refused_as_a_seed_named_twice_is(specs):
    """Two specs naming one generated session (the same seed and length, and for the mixture
    the same family) would train on it twice, or weigh its windows twice in every score, as a
    seed named twice in one spec would; a recording named twice is refused, and so is this."""
    with pytest.raises(ValueError, match=r"names the generated session .* twice"):
        load_sessions(specs)
    # The same seed of another family is another session: held-out runs name such pairs.
    assert len(load_sessions(["synthetic-mix:3@1/without=ou", "synthetic-mix:3@1/only=ou"])) == 2


def test_training_with_drops_and_set_options_records_them(tmp_path):
    # An irregular family, sized with --set, on windows losing frames: the run says so.
    args = ["train", "trajgru", "--data", DATA, "--run", str(tmp_path), "--steps", "2",
            "--batch-size", "2", "--window-stride", "16", "--set", "hidden=[2,3,4]",
            "--set", "links=2", "--set", "head_channels=2", "--drop-random", "0.2",
            "--drop-burst", "0.1", "--learning-rate", "0.003"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    state = load_checkpoint(tmp_path)
    assert state["config"]["model"]["hidden"] == [2, 3, 4]
    assert state["config"]["drops"] == {"random_rate": 0.2, "burst_rate": 0.1}
    assert state["config"]["learning_rate"] == 0.003
    assert state["provenance"]["drops"]["fill"] == "irregular"
    bad = runner.invoke(app, [*args[:6], "--set", "hidden"])
    assert bad.exit_code != 0 and "--set must be KEY=VALUE" in bad.output


def test_models_lists_every_family_with_its_paper_and_input():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0
    lines = {line.split()[0]: line for line in result.output.splitlines()}
    assert "paper 000  regular window" in lines["mr_layer_lstm"]
    assert "paper 003  irregular" in lines["trajgru_attention"]
    assert "paper 001" in lines["mspn"]


def test_train_with_robust_online_normalisation_records_the_schedule(tmp_path):
    result = _train(
        tmp_path, "mr_layer_lstm", "--no-adversarial", "--normalisation", "robust-online",
        "--normalisation-window-s", "2", "--normalisation-update-s", "0.5",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    state = load_checkpoint(tmp_path)
    want = {"kind": "robust-online", "window_s": 2.0, "update_s": 0.5, "min_s": 0.5}
    assert state["normalisation"] == want and state["config"]["normalisation"] == want
    bad = _train(tmp_path / "bad", "mr_layer_lstm", "--normalisation", "zscore")
    assert bad.exit_code != 0 and "--normalisation must be one of" in bad.output
    # int8 calibrates in a fixed normalisation: refused before anything is written, not after
    # the fp32 graph is, which was then left without its held-out check.
    out = tmp_path / "exported" / "m.onnx"
    refused = runner.invoke(app, ["export", str(tmp_path), str(out), "--int8"])
    assert refused.exit_code == 1 and "int8 export needs a fixed normalisation" in refused.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("step_name", "flags", "what"),
    [
        ("model.onnx", [], "OUT, the window graph"),
        ("model.int8.onnx", ["--int8"], "the int8 copy of the window graph"),
        ("model.int8.step.onnx", ["--int8"], "the int8 copy of the step graph"),
        ("model.raster-decode.onnx", ["--raster"], "the raster decode stage"),
    ],
)
def test_a_step_graph_named_where_the_export_writes_another_is_refused_before_writing(
    trained, tmp_path, step_name, flags, what
):
    """Written there, the step graph overwrote that graph (or it the step graph), and the
    daemon served one as the other."""
    out = tmp_path / "model.onnx"
    result = runner.invoke(
        app, ["export", str(trained), str(out), "--step", str(tmp_path / step_name), *flags]
    )
    assert result.exit_code != 0
    said = f"--step '{tmp_path / step_name}' is where this export writes {what}"
    assert said in result.output, result.output
    assert "give the step graph a file of its own" in result.output
    assert list(tmp_path.iterdir()) == []
