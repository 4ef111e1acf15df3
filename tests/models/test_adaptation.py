"""`corticast adapt`: fine-tuning on a rig's own recordings, stopped on held-out data, scored
before and after on a part neither saw, exported for the daemon."""

import dataclasses
import json
import re
import shutil
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import models.cli
from bench.data.session_io import read_xdf, write_nwb, write_xdf
from bench.data.synth import SynthConfig, generate_session
from models.adaptation import ADAPTED_FILE, AdaptSettings, adapt
from models.loading import load_predictor, trained_on
from models.metadata import check_shortfall, describe_shortfall, read_model_metadata
from models.training import load_checkpoint, write_checkpoint
from service.api.served import ServedDaemon
from service.cli.app import app
from service.config import ApiSettings
from service.core.grid import ElectrodeGrid
from service.inference.backends import create_predictor
from service.inference.model_files import ModelFileError, ModelFiles
from service.inference.predictor import DEFAULT_STREAM
from service.inference.settings import ModelSettings
from tests._tool_recording import write_tool_recording
from tests.data.tiny_model import copy_tiny_model
from tests.service._loop_harness import AUTH, loop_settings

TINY_RUN = Path(__file__).parents[1] / "data" / "tiny_model" / "run"
QUICK = AdaptSettings(minutes=5, max_steps=6, check_every=3, batch_size=4, window_stride=8)


class _Clock:
    """A clock that moves only when read: each reading is ``step`` seconds after the last."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture(scope="module")
def quick_run(session, tmp_path_factory):
    """``adapt`` of the tiny run on ``session`` with ``QUICK``: its result and its run
    directory (shared, not changed: copy it to write into it)."""
    out = tmp_path_factory.mktemp("quick") / "adapted"
    return adapt(TINY_RUN, session, out, QUICK, progress=False), out


def test_an_adapted_run_exports_and_serves_and_is_scored_before_and_after(
    quick_run, adapted_cli_run, session
):
    result, out = quick_run

    assert result.steps == 6 and result.stopped_because == "all 6 steps done"
    assert 0 <= result.best_step <= 6
    assert result.validation_mse[1] <= result.validation_mse[0]
    assert result.report.predictors[:2] == ["before", "after"]
    assert {"persistence", "linear", "ar"} <= set(result.report.predictors)
    assert (out / ADAPTED_FILE).is_file()
    state = load_checkpoint(out)
    source = load_checkpoint(TINY_RUN)
    assert state["normalisation"] == source["normalisation"]  # served in the same units
    assert state["provenance"]["adapted"]["from"] == str(TINY_RUN)

    # An adapted run's export, adapt's own through export_from_checkpoint (exporting this run
    # too would trace another graph of the same model: ~10 s of the suite), serves.
    window = adapted_cli_run[0] / "adapted.onnx"
    predictor = create_predictor(
        "onnxruntime-cpu", "window", model_path=window, stream=DEFAULT_STREAM, threads=1
    )
    future = predictor.predict(session.frames[:16].astype(np.float32))
    assert future.shape == (16, 18, 20) and np.all(np.isfinite(future))


def test_a_run_that_only_gets_worse_keeps_the_weights_it_started_with(session, tmp_path):
    harmful = AdaptSettings(
        minutes=5, max_steps=40, check_every=2, patience=2, learning_rate=5.0, batch_size=4,
        window_stride=8,
    )  # fmt: skip
    result = adapt(TINY_RUN, session, tmp_path / "adapted", harmful, progress=False)

    assert result.stopped_because == "no better held-out error in 2 checks"
    assert (result.steps, result.best_step) == (4, 0)  # two checks, neither better than start
    adapted, original = load_checkpoint(tmp_path / "adapted"), load_checkpoint(TINY_RUN)
    for name, weights in original["generator"].items():
        torch.testing.assert_close(adapted["generator"][name], weights)
    np.testing.assert_array_equal(result.report.psnr["after"], result.report.psnr["before"])
    assert result.validation_mse[1] == result.validation_mse[0]


def test_before_and_after_are_scored_on_the_channels_the_daemon_will_score(tmp_path):
    """A rig's recording with a broken contact: the daemon will not score its flat channel,
    so neither does the table that says whether tuning helped."""
    clean = generate_session(SynthConfig(duration_s=8.0, seed=6))
    frames = clean.frames.copy()
    frames[:, 9, 4] = 0.0
    recorded = dataclasses.replace(clean, frames=frames)
    result = adapt(TINY_RUN, recorded, tmp_path / "adapted", QUICK, progress=False)
    assert result.report.scored_fraction == pytest.approx(359 / 360)


def test_the_budget_ends_the_run_at_the_next_step(session, tmp_path):
    settings = AdaptSettings(minutes=1, max_steps=1000, check_every=500, window_stride=8)
    result = adapt(TINY_RUN, session, tmp_path / "a", settings, progress=False, clock=_Clock(45))
    assert result.steps == 2  # started at 45 s, deadline 105 s: read 90 s, then 135 s
    assert result.stopped_because == "the 1-minute budget ran out"


def test_sessions_of_another_grid_or_an_existing_run_are_refused(session, tmp_path):
    small = generate_session(SynthConfig(duration_s=12.0, seed=3, grid=ElectrodeGrid(8, 8)))
    with pytest.raises(
        ValueError, match=r"do not fit the model: session 0: grid 8x8 .* != the model's 18x20"
    ):
        adapt(TINY_RUN, small, tmp_path / "a", QUICK, progress=False)
    with pytest.raises(FileExistsError, match="already holds a run"):
        adapt(TINY_RUN, session, TINY_RUN, QUICK, progress=False)


def test_a_recording_of_the_models_array_fits_it_whatever_its_pitch_rounded_to(session, tmp_path):
    """An XDF file records the pitch in mm: 0.71 mm is 0.00071 m written and
    0.0007099999999999999 m read back. A model trained at 0.71 mm refused that recording of its
    own array ('grid 18x20 at 0.00071 m != the model's 18x20 at 0.00071 m')."""
    pitch = 0.71e-3
    run = tmp_path / "run"
    shutil.copytree(TINY_RUN, run)
    state = load_checkpoint(run)
    state["provenance"]["grid"]["pitch_m"] = pitch
    write_checkpoint(run, state)
    on_array = dataclasses.replace(
        session, grid=ElectrodeGrid(session.grid.rows, session.grid.cols, pitch)
    )
    write_xdf(tmp_path / "rig.xdf", on_array)
    recorded = read_xdf(tmp_path / "rig.xdf")
    assert recorded.grid.pitch_m != pitch  # the round trip this is about
    quick = dataclasses.replace(QUICK, max_steps=2, check_every=2)
    result = adapt(run, recorded, tmp_path / "adapted", quick, progress=False)
    assert result.steps == 2


def test_the_command_tunes_the_default_exports_and_says_how_to_swap_it_in(adapted_cli_run):
    """Without ``--from`` it tunes the shipped checkpoint (``adapted_cli_run``: a copy of the
    tiny run stands in for it there; that the shipped one is the shipped model is
    ``test_shipped_weights``' job)."""
    out, printed, said_on_stderr = adapted_cli_run
    output = printed + said_on_stderr
    assert load_checkpoint(out)["provenance"]["adapted"]["from"] == str(out.parent / "source")
    assert "| frame | before | after | persistence | linear | ar |" in output
    assert "PUT /control/model" in output
    # The curl it shows reaches a daemon started with the defaults.
    api = ApiSettings()
    assert f"http://{api.host}:{api.port}/control/model" in output
    assert (out / "adapted.onnx").is_file() and not (out / "adapted.step.onnx").exists()

    # The exported graph carries its check on the tail the table scored (the check thins the
    # windows its own way, so the figures agree within a fraction of a dB), and the verdict
    # printed and the daemon's reading of the file are that check's.
    check = read_model_metadata(out / "adapted.onnx").provenance["held_out_check"]
    assert (check["data"], check["split"]) == ("adapted-tail", "test")
    table = json.loads((out / ADAPTED_FILE).read_text())["scored"]["predictors"]
    for name, scored in (("model", "after"), ("persistence", "persistence")):
        np.testing.assert_allclose(check[f"{name}_psnr_db"], table[scored]["psnr"], atol=0.25)
    shortfall = check_shortfall(check)
    assert shortfall, check  # the tiny model is 4 dB below persistence at frame 1
    assert (
        "held-out check on the held-out tail of the sessions it was adapted on "
        f"({check['windows']} windows): {describe_shortfall(shortfall)}"
    ) in output
    files = ModelFiles(out / "adapted.onnx", None)
    assert files.held_out_shortfall == shortfall
    assert "scored on the held-out tail of the sessions it was adapted on" in (
        files.below_persistence_warning()
    )


def test_a_run_stopped_before_its_check_is_recorded_leaves_no_file_to_serve(
    adapted_cli_run, tmp_path, monkeypatch, memoized_export
):
    """Killed between its export and the record of its check, adapt left adapted.onnx, which
    the daemon would serve without warning that it falls below persistence. The files are
    checked before they are put where a swap names them; a rerun into that directory says how
    to finish it, and that command writes them with their check."""
    import models.held_out_check

    def killed(*_, **__):
        raise KeyboardInterrupt  # where a kill would land

    out = tmp_path / "adapted"
    # The run of ``adapted_cli_run`` (its source, data and 2 steps), so its graph's trace is
    # reused.
    root = adapted_cli_run[0].parent
    data = ["synthetic:5@12", str(root / "fragment.nwb")]
    args = ["adapt", *data, "--from", str(root / "source"), "--out", str(out)]
    with monkeypatch.context() as patch:
        patch.setattr(models.held_out_check, "held_out_check", killed)
        stopped = CliRunner().invoke(app, [*args, "--max-steps", "2", "--no-step"])
    assert stopped.exit_code == 130, stopped.output  # as a Ctrl-C ends it
    assert not list(out.glob("*.onnx"))

    again = CliRunner().invoke(app, args)
    assert again.exit_code == 1, again.output
    said = " ".join(again.output.split())
    assert "stopped in before its files were exported and checked" in said
    window, step = out / "adapted.onnx", out / "adapted.step.onnx"
    assert f"`corticast export {out} {window} --step {step}`" in said  # the tiny family streams
    # Run without its step graph (a minute's export on a busy CPU; the window graph is the
    # stopped run's, reused): what is checked is the window graph's record.
    done = CliRunner().invoke(app, ["export", str(out), str(window)])
    assert done.exit_code == 0, done.output
    check = read_model_metadata(out / "adapted.onnx").provenance["held_out_check"]
    assert (check["data"], check["split"]) == ("adapted-tail", "test")


def test_the_command_without_a_shipped_checkpoint_says_what_to_pass(tmp_path, monkeypatch):
    monkeypatch.setattr(models.cli, "SHIPPED_RUN", tmp_path / "missing.run")
    result = CliRunner().invoke(app, ["adapt", "synthetic:5@12", "--out", str(tmp_path / "a")])
    assert result.exit_code == 2
    assert "pass --from RUN_DIR" in result.output


def test_the_command_refuses_its_out_before_loading_the_data(tmp_path):
    """An hour's recordings take minutes to load: OUT, a file here, is named before them (the
    data, a file that is not there, was named first)."""
    out = tmp_path / "adapted"
    out.write_text("notes")
    absent = tmp_path / "absent.xdf"
    result = CliRunner().invoke(app, ["adapt", str(absent), "--out", str(out)])
    assert result.exit_code == 1
    assert "adapted' is a file, not a run directory" in result.output
    assert "absent.xdf" not in result.output


@pytest.mark.parametrize(
    ("field", "value"), [("minutes", 0), ("check_stride", 0), ("max_steps", 1)]
)
def test_settings_out_of_range_are_refused_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        AdaptSettings(**{field: value})


def test_an_out_that_is_a_file_is_refused_before_any_tuning(session, tmp_path):
    """OUT names a file, or a directory inside one: refused at once, naming the file, not
    after the whole budget was spent tuning (the clock is read only once tuning starts)."""
    out = tmp_path / "adapted"
    out.write_text("notes")
    clock = _Clock(1)
    with pytest.raises(NotADirectoryError, match=r"adapted' is a file, not a run directory"):
        adapt(TINY_RUN, session, out, QUICK, progress=False, clock=clock)
    assert clock.now == 0  # never read: no tuning began
    assert out.read_text() == "notes"
    with pytest.raises(NotADirectoryError, match=r"adapted' is a file, not a run directory"):
        adapt(TINY_RUN, session, out / "run", QUICK, progress=False, clock=clock)  # nor inside
    assert clock.now == 0


def test_a_model_that_predicts_nan_is_refused_and_nothing_is_written(session, tmp_path):
    """A checkpoint whose weights hold NaN predicts NaN on the held-out part from the first
    check: refused by name before tuning, and OUT is left without a run that would block a
    rerun or that ``corticast export`` could export."""
    state = load_checkpoint(TINY_RUN)
    name = next(iter(state["generator"]))
    state["generator"][name] = torch.full_like(state["generator"][name], float("nan"))
    broken = tmp_path / "broken"
    broken.mkdir()
    torch.save(state, broken / "checkpoint.pt")
    out = tmp_path / "adapted"
    with pytest.raises(ValueError, match=r"broken' predicts NaN/inf on the held-out part"):
        adapt(broken, session, out, QUICK, progress=False)
    assert not out.exists()


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ("garbage", "cannot be read as a checkpoint"),
        ("truncated", "cannot be read as a checkpoint"),
        ("foreign", "is not a corticast checkpoint: it lacks"),
        ("mismatched", "weights do not fit its model's configuration"),
    ],
)
def test_a_corrupt_checkpoint_is_refused_in_one_line_naming_it(tmp_path, content, said):
    source = tmp_path / "run"
    source.mkdir()
    path = source / "checkpoint.pt"
    whole = (TINY_RUN / "checkpoint.pt").read_bytes()
    if content == "garbage":
        path.write_bytes(b"not a checkpoint\n" * 8)
    elif content == "truncated":
        path.write_bytes(whole[: len(whole) // 2])
    elif content == "foreign":
        torch.save({"weights": torch.zeros(3)}, path)
    else:
        state = load_checkpoint(TINY_RUN)
        state["generator"].popitem()
        torch.save(state, path)
    out = tmp_path / "adapted"
    args = ["adapt", "synthetic:5@12", "--out", str(out), "--from", str(source)]
    result = CliRunner().invoke(app, [*args, "--max-steps", "2", "--no-step"])
    assert result.exit_code == 1 and not isinstance(result.exception, Exception), result.exception
    assert f"error: checkpoint {str(path)!r}" in result.stderr and said in result.stderr
    assert not out.exists()


@pytest.fixture(scope="module")
def adapted_cli_run(tmp_path_factory, export_memo):
    """``corticast adapt synthetic:5@12 FRAGMENT --no-step`` without ``--from``, the shipped
    run being ``source`` (beside the run directory): the tiny run recorded as trained on
    ``synthetic:7@12``. FRAGMENT (beside it too) is a recording of 0.5 s. Returns the run
    directory, what the command printed and what it said on stderr (shared, not changed). Its
    graph's trace is kept (``export_memo``) for the tests that export the same weights again;
    one run for all the tests that read it: each trace costs ~10 s."""
    root = tmp_path_factory.mktemp("adapted-cli")
    state = load_checkpoint(TINY_RUN)
    state["config"]["data"] = ["synthetic:7@12"]  # what the source was trained on
    source = root / "source"
    source.mkdir()
    torch.save(state, source / "checkpoint.pt")
    fragment = root / "fragment.nwb"
    write_nwb(fragment, generate_session(SynthConfig(duration_s=0.5, seed=4)))  # 139 frames
    out = root / "adapted"
    args = ["adapt", "synthetic:5@12", str(fragment), "--out", str(out)]
    with export_memo.active(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(models.cli, "SHIPPED_RUN", source)
        result = CliRunner().invoke(app, [*args, "--max-steps", "2", "--no-step"])
    assert result.exit_code == 0, result.output
    return out, result.stdout, result.stderr


def test_an_adapted_run_says_it_learnt_from_its_source_s_data_and_the_rig_s(adapted_cli_run):
    """What the generalisation bench refuses to hold out for a model (``trained_on``): an
    adapted run learnt from its source's data and from the sessions it was adapted on, in its
    run directory and in the graph adapt exported alike."""
    out, _, _ = adapted_cli_run
    learnt = trained_on(out)
    assert learnt[0] == "synthetic:7@12" and "synthetic:5@12" in learnt[1:]
    assert any(spec.endswith("fragment.nwb") for spec in learnt)
    assert trained_on(out / "adapted.onnx") == learnt
    assert load_predictor(out / "adapted.onnx").trained_on == learnt  # read with the model


def test_the_swap_it_prints_for_a_model_without_a_step_graph_says_what_the_daemon_needs(
    adapted_cli_run,
):
    """Without a step graph (``--no-step``, or a family that does not stream) the printed swap
    is refused by a daemon in stream mode, the default: the print says so and what serves it."""
    out, printed, _ = adapted_cli_run
    stream, window = ModelSettings(directory=out), ModelSettings(directory=out, mode="window")
    with pytest.raises(ModelFileError, match="stream mode runs the step graph"):
        ModelFiles.for_swap("adapted.onnx", None, stream)
    ModelFiles.for_swap("adapted.onnx", None, window)  # what the print must point to
    said = "adapted.onnx has no step graph (--step exports it): a daemon in stream mode (the "
    assert said + "default) refuses it" in printed
    assert '[model] mode = "window"' in printed


def test_an_adapted_run_exported_again_carries_the_check_on_its_adapted_tail(
    adapted_cli_run, tmp_path, memoized_export
):
    """`corticast export` of an adapted run (for int8 copies, say) records the check on the
    tail of the rig's sessions it was adapted on, as adapt's own export does, not on the
    validation split of the data the source was trained on, named as "its training data"."""
    out, _, _ = adapted_cli_run
    again = tmp_path / "again.onnx"
    result = CliRunner().invoke(app, ["export", str(out), str(again)])
    assert result.exit_code == 0, result.output

    checks = [
        read_model_metadata(p).provenance["held_out_check"] for p in (out / "adapted.onnx", again)
    ]
    assert (checks[1]["data"], checks[1]["split"]) == ("adapted-tail", "test")
    assert checks[1] == checks[0]  # the same weights, scored on the same windows
    assert "held-out check on the held-out tail of the sessions it was adapted on" in result.output


def test_a_recording_left_without_a_window_by_its_artefact_is_named(tmp_path):
    """A recording whose stimulation artefact blanks every frame (a marker's blank longer than
    it): among several sessions the refusal names that file, not an index into a list the user
    never wrote."""
    session = generate_session(SynthConfig(duration_s=4.0, seed=4))
    path = tmp_path / "stimulated.xdf"
    write_tool_recording(path, session, session.frames, [0])
    out = tmp_path / "adapted"
    spec = f"{path}::markers=pulser::blank_ms=10000"
    args = ["adapt", "synthetic:5@12", spec, "--out", str(out), "--from", str(TINY_RUN)]
    result = CliRunner().invoke(app, [*args, "--max-steps", "2", "--no-step"])
    assert result.exit_code == 1, result.output
    assert f"error: 'sessions[1]' ({path}) must hold at least one window" in result.stderr
    assert not out.exists()


def test_training_into_an_adapted_run_is_refused_and_leaves_it_as_it_was(quick_run, tmp_path):
    """An adapted run holds weights only (no optimiser state): ``corticast train --run`` on it
    is refused in one line, and writes no run.json into it that a later command would read."""
    out = tmp_path / "adapted"
    shutil.copytree(quick_run[1], out)  # as adapt left it
    before = sorted(p.name for p in out.iterdir())
    args = ["train", "mr_layer_lstm", "--data", "synthetic:5@12", "--run", str(out)]
    result = CliRunner().invoke(app, [*args, "--steps", "4", "--set", "hidden=[4,4]"])
    assert result.exit_code == 1 and not isinstance(result.exception, Exception), result.exception
    assert "holds weights only" in result.stderr and "train into a new directory" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == before


def test_a_robust_online_model_is_adapted_exported_and_its_check_left_out_saying_so(tmp_path):
    """A robust-online model's windows are scaled each by its own recent past, so its exported
    graph cannot be checked in a fixed normalisation here: the command says so and finishes,
    rather than failing after the run and its graph were written (a rerun refused, the graph
    left without a word on it). (``corticast export`` of the run skips it by the same rule,
    ``models.cli._check_skipped``; exporting it again here would cost another 12 s of the
    suite.)"""
    state = load_checkpoint(TINY_RUN)
    online = {"kind": "robust-online", "window_s": 2.0, "update_s": 0.5, "min_s": 0.5}
    state["normalisation"] = state["config"]["normalisation"] = online
    source = tmp_path / "online"
    source.mkdir()
    torch.save(state, source / "checkpoint.pt")
    out = tmp_path / "adapted"
    args = ["adapt", "synthetic:5@6", "--out", str(out), "--from", str(source)]
    result = CliRunner().invoke(app, [*args, "--max-steps", "2", "--no-step"])
    assert result.exit_code == 0, result.output
    assert "| frame | before | after | persistence | linear |" in result.stdout
    assert "held-out check skipped: a robust-online model" in result.stdout
    metadata = read_model_metadata(out / "adapted.onnx")
    assert metadata.normalisation == online and "held_out_check" not in metadata.provenance
    assert "PUT /control/model" in result.stdout


@pytest.mark.slow
def test_the_swap_it_prints_works_as_printed_against_a_running_daemon(adapted_cli_run, tmp_path):
    """The file adapt names, copied into a daemon's model directory, and the request it prints
    (path, header, body; the daemon's own address) swap the model in, in the daemon the print
    points to for a model without a step graph (window mode; a step graph's export takes a
    minute, and stream mode's refusal without one is the test above); its /status then names
    the adapted tail its check was scored on."""
    out, printed, _ = adapted_cli_run
    copied = re.search(r"copy (\S+) into the daemon's \[model\] directory", printed)
    curl = re.search(
        r"curl -X PUT -H \"(\S+): Bearer \$TOKEN\" -H \"Content-Type: application/json\" "
        r"-d '(\{[^']*\})' http://[^/\s]+(/\S+)",
        printed,
    )
    assert copied and curl and '[model] mode = "window"' in printed, printed
    header, body, path = curl.groups()

    models = tmp_path / "models"
    copy_tiny_model(models)
    shutil.copyfile(out / copied[1], models / copied[1])
    settings = loop_settings(
        tmp_path, models / "model.onnx", models / "model.step.onnx",
        f"corticast-test-{uuid.uuid4().hex[:12]}", bridge={"dry_run": True},
    )  # fmt: skip
    assert settings.model.mode == "window"
    with ServedDaemon(settings) as served:
        token = {header: AUTH["Authorization"]}
        with httpx.Client(base_url=served.url, headers=token, timeout=60) as http:
            answer = http.put(path, content=body, headers={"Content-Type": "application/json"})
            assert answer.status_code == 200, answer.text
            status = http.get("/status").json()["model"]
    assert status["files"]["path"] == str((models / "adapted.onnx").resolve())
    assert status["held_out_check_data"] == "the held-out tail of the sessions it was adapted on"


def test_a_recording_at_another_rate_is_refused_naming_the_file(tmp_path):
    """Among sessions a synthetic spec expands to, a recording at another rate than the
    model's is named by its file, not only by its place in the list."""
    path = tmp_path / "fast-rig.nwb"
    write_nwb(path, generate_session(SynthConfig(duration_s=2.0, seed=4, sample_rate_hz=500.0)))
    out = tmp_path / "adapted"
    args = ["adapt", "synthetic:5-6@12", str(path), "--out", str(out), "--from", str(TINY_RUN)]
    result = CliRunner().invoke(app, [*args, "--max-steps", "2", "--no-step"])
    assert result.exit_code == 1, result.output
    assert f"session 2 ({path}): rate 500 Hz != the model's 277.78 Hz" in result.stderr
    assert not out.exists()


def test_a_recording_named_twice_is_refused_as_a_seed_named_twice_is(tmp_path):
    """The same recording given twice (here by two spellings of its path) would count twice,
    in tuning, stopping and the table: refused naming it, as a generated spec that names a seed
    twice is."""
    path = tmp_path / "rig.nwb"
    write_nwb(path, generate_session(SynthConfig(duration_s=4.0, seed=4)))
    out = tmp_path / "adapted"
    twice = [str(path), str(tmp_path / "." / "rig.nwb")]
    args = ["adapt", *twice, "--out", str(out), "--from", str(TINY_RUN)]
    result = CliRunner().invoke(app, [*args, "--max-steps", "2", "--no-step"])
    assert result.exit_code == 1, result.output
    assert f"names the recording {str(path.resolve())!r} twice" in result.stderr
    assert not out.exists()


def test_a_recording_too_short_to_be_scored_is_said_to_be_left_out_of_the_table(
    adapted_cli_run,
):
    """Beside a long session, a recording whose last parts are shorter than a window is tuned
    on but neither stops the run nor is scored: the command names it and what it is left out
    of, so the table is not read as covering it."""
    out, _, said_on_stderr = adapted_cli_run
    path = out.parent / "fragment.nwb"
    said = (
        f"session 1 ({path}): no window of 32 gap-free frames in its val and test parts: "
        "left out of the early stopping and of the scored table and check"
    )
    assert said in said_on_stderr
    scored = json.loads((out / ADAPTED_FILE).read_text())["left_out"]
    assert scored == [said]
