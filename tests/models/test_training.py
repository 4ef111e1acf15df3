import json
import logging
import os
import shutil
from dataclasses import asdict

import pytest
import torch

from bench.data.synth import Background, PlaneWave, SynthConfig, generate_session
from models.convlstm.training import ConvLSTMTraining
from models.data import SessionWindows
from models.training import (
    CHECKPOINT,
    LOG_FILE,
    RUN_FILE,
    RunConfig,
    load_checkpoint,
    train,
    write_checkpoint,
)

TINY = {"hidden": (4, 4), "kernel_size": 3}


def _weights(run_dir) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir)["generator"]


@pytest.fixture(scope="module")
def plane_wave_set():
    """A learnable signal: one plane wave over a faint background."""
    session = generate_session(
        SynthConfig(
            duration_s=6.0,
            seed=2,
            background=Background(rms_uv=5.0),
            episodes=(
                PlaneWave(
                    start_s=0.0,
                    duration_s=6.0,
                    amplitude_uv=100.0,
                    frequency_hz=8.0,
                    speed_mps=0.3,
                    direction_deg=30.0,
                ),
            ),
        )
    )
    return SessionWindows(session, "train", stride=16)


@pytest.mark.parametrize(
    ("family", "steps"), [("convlstm", 40), ("mr_lstm", 20), ("mr_layer_lstm", 40)]
)
def test_prediction_loss_falls_over_a_few_dozen_steps(tmp_path, plane_wave_set, family, steps):
    """MR-LSTM's loss falls to 0.59 of its start in 20 steps (and no further by 40); the
    others' fall to 0.87-0.88 takes 40."""
    config = RunConfig(family=family, model=TINY, steps=steps, batch_size=4, log_every=1)
    train(config, plane_wave_set, tmp_path, progress=False)
    logs = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    first = sum(entry["s0_pred"] for entry in logs[:5]) / 5
    last = sum(entry["s0_pred"] for entry in logs[-5:]) / 5
    assert last < 0.9 * first, f"prediction loss {first:.4f} -> {last:.4f}"
    assert any(key.startswith("d0_") for key in logs[0])  # the discriminator trained too


def test_a_crashed_and_resumed_run_equals_an_uninterrupted_one(
    tmp_path, train_set, monkeypatch, caplog
):
    """Weights and log: the run stopped after logging steps 4 and 5 past its checkpoint at 3
    logs them again when resumed, and its log held them twice (the first copy from a state
    that was lost); they are set aside, not dropped."""
    config = RunConfig(
        family="convlstm", model=TINY, steps=6, batch_size=4, checkpoint_every=3, log_every=1
    )
    train(config, train_set, tmp_path / "whole", progress=False)

    real_step = ConvLSTMTraining.step

    def crash_at_5(self, batch, iteration):
        if iteration == 5:
            raise KeyboardInterrupt("power cut")
        return real_step(self, batch, iteration)

    monkeypatch.setattr(ConvLSTMTraining, "step", crash_at_5)
    with pytest.raises(KeyboardInterrupt):
        train(config, train_set, tmp_path / "resumed", progress=False)
    assert load_checkpoint(tmp_path / "resumed")["steps_done"] == 3
    monkeypatch.setattr(ConvLSTMTraining, "step", real_step)
    with caplog.at_level(logging.WARNING, "corticast"):
        train(config, train_set, tmp_path / "resumed", progress=False)

    whole, resumed = _weights(tmp_path / "whole"), _weights(tmp_path / "resumed")
    assert load_checkpoint(tmp_path / "resumed")["steps_done"] == 6
    for name, tensor in whole.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=0)
    whole_log = (tmp_path / "whole" / LOG_FILE).read_text().splitlines(keepends=True)
    resumed_log = (tmp_path / "resumed" / LOG_FILE).read_text()
    assert [json.loads(line)["step"] for line in resumed_log.splitlines()] == [1, 2, 3, 4, 5, 6]
    assert resumed_log == "".join(whole_log)  # resuming is deterministic: the same records
    side = tmp_path / "resumed" / (LOG_FILE + ".superseded")
    assert side.read_text() == "".join(whole_log[3:5])
    said = "2 records (steps 4-5) past step 3, the checkpoint this run resumes from"
    assert said in caplog.text and str(side) in caplog.text


def test_a_resumed_run_draws_the_random_numbers_an_uninterrupted_one_would(
    tmp_path, train_set, monkeypatch
):
    """Training draws from torch's global generator (s_hr_vqvae's dead-word restarts); the
    loader drew from it too each time it started an epoch, and a resumed run starts one
    mid-epoch: every draw after the checkpoint came one place late."""
    config = RunConfig(family="convlstm", model=TINY, steps=4, batch_size=4, checkpoint_every=2)
    real_step = ConvLSTMTraining.step
    draws: dict[int, float] = {}
    crash = []

    def drawing(self, batch, iteration):
        if iteration == 3 and crash:
            raise KeyboardInterrupt("power cut")
        draws[iteration] = torch.rand(()).item()
        return real_step(self, batch, iteration)

    monkeypatch.setattr(ConvLSTMTraining, "step", drawing)
    train(config, train_set, tmp_path / "whole", progress=False)
    whole = {step: drawn for step, drawn in draws.items() if step >= 2}
    crash.append(True)
    with pytest.raises(KeyboardInterrupt):
        train(config, train_set, tmp_path / "resumed", progress=False)
    crash.clear()
    draws.clear()
    train(config, train_set, tmp_path / "resumed", progress=False)
    assert draws == whole


def test_a_run_rerun_after_a_crash_mid_log_line_keeps_every_record_readable(
    tmp_path, train_set, caplog
):
    """A run killed while writing a log line, before its first checkpoint, is rerun into its
    directory: its first record was appended to the torn line, one line no reader can parse.
    The rerun starts again from step 0, so the lost run's whole record is set aside too."""
    (tmp_path / LOG_FILE).write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "lo')
    config = RunConfig(family="convlstm", model=TINY, steps=2, batch_size=4, log_every=1)
    with caplog.at_level(logging.WARNING, "corticast"):
        train(config, train_set, tmp_path, progress=False)
    logs = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    assert [entry["step"] for entry in logs] == [1, 2]
    assert logs[0]["loss"] != 0.5  # this run's step 1, not the lost run's
    assert (tmp_path / (LOG_FILE + ".torn")).read_text() == '{"step": 2, "lo\n'
    superseded = (tmp_path / (LOG_FILE + ".superseded")).read_text()
    assert superseded == '{"step": 1, "loss": 0.5}\n'
    assert f"{tmp_path / LOG_FILE} ended with a torn last line" in caplog.text
    assert "1 record (step 1) and no checkpoint: this run starts again" in caplog.text


def test_a_run_whose_loss_turns_nan_stops_and_keeps_its_last_finite_checkpoint(tmp_path, train_set):
    """A learning rate far too large: the loss is NaN from step 2, and the run trained on to
    its end, overwriting the checkpoint of step 1 with NaN weights at every step."""
    config = RunConfig(
        family="convlstm", model=TINY, steps=4, batch_size=4, checkpoint_every=1, learning_rate=1e30
    )
    kept = r"diverged at step 2 \(its loss is nan\): stopped, and the checkpoint of step 1 is kept"
    with pytest.raises(ValueError, match=kept):
        train(config, train_set, tmp_path, progress=False)
    state = load_checkpoint(tmp_path)
    assert state["steps_done"] == 1
    assert all(weight.isfinite().all() for weight in state["generator"].values())


@pytest.fixture(scope="module")
def two_step_run(tmp_path_factory, train_set):
    """A finished 2-step convlstm run on ``train_set`` (shared, not changed: copy it to write
    into it)."""
    run = tmp_path_factory.mktemp("two-step") / "run"
    train(
        RunConfig(family="convlstm", model=TINY, steps=2, batch_size=4),
        train_set,
        run,
        progress=False,
    )
    return run


def test_a_run_directory_refuses_a_different_configuration(tmp_path, train_set, two_step_run):
    shutil.copytree(two_step_run, tmp_path, dirs_exist_ok=True)  # as train left it
    other = RunConfig(family="convlstm", model=TINY, steps=2, batch_size=2)
    with pytest.raises(ValueError, match=r"different configuration \(\['batch_size'\]\)"):
        train(other, train_set, tmp_path, progress=False)


def test_a_checkpoint_without_its_run_file_refuses_a_different_configuration(
    tmp_path, train_set, two_step_run
):
    """A checkpoint copied into a new folder (or one whose run.json was deleted) resumed under
    any configuration: its optimiser and schedule states, then another run's steps and batch."""
    shutil.copy(two_step_run / CHECKPOINT, tmp_path)
    other = RunConfig(family="convlstm", model=TINY, steps=2, batch_size=2)
    with pytest.raises(ValueError, match=r"different configuration \(\['batch_size'\]\)"):
        train(other, train_set, tmp_path, progress=False)
    assert not (tmp_path / RUN_FILE).exists()
    own = RunConfig(family="convlstm", model=TINY, steps=2, batch_size=4)
    assert train(own, train_set, tmp_path, progress=False).steps_done == 2  # resumes, done
    assert json.loads((tmp_path / RUN_FILE).read_text()) == json.loads(json.dumps(asdict(own)))


def test_a_run_stopped_while_writing_its_configuration_is_named_when_rerun(tmp_path, train_set):
    """A run stopped while it wrote run.json (in place) left half of it, and the rerun into
    that directory failed with the JSON parser's message alone, naming no file."""
    config = RunConfig(family="convlstm", model=TINY, steps=2, batch_size=4)
    (tmp_path / RUN_FILE).write_text(json.dumps(asdict(config))[:40])  # cut short
    with pytest.raises(ValueError, match=r"run\.json' is not a run's configuration .*cut short"):
        train(config, train_set, tmp_path, progress=False)


def test_checkpoint_carries_normalisation_and_provenance(train_set, two_step_run):
    state = load_checkpoint(two_step_run)
    assert state["normalisation"] == train_set.normalisation.to_dict()
    assert state["provenance"]["split"] == "train"
    assert (two_step_run / CHECKPOINT).is_file()
    assert not (two_step_run / (CHECKPOINT + ".partial")).exists()


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        load_checkpoint(tmp_path)


def test_a_checkpoint_write_that_fails_leaves_the_last_checkpoint_and_no_scratch_file(
    tmp_path, monkeypatch
):
    """A disk that fills up (or a Ctrl-C) while the checkpoint is written: the last one stays
    whole, nothing half-written beside it, and what is kept was made durable (fsync'd)."""
    write_checkpoint(tmp_path, {"steps_done": 3})
    real_save = torch.save

    def disk_full(state, path):
        real_save(state, path)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_checkpoint(tmp_path, {"steps_done": 6})
    assert torch.load(tmp_path / CHECKPOINT)["steps_done"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT]

    monkeypatch.setattr(torch, "save", real_save)
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_checkpoint(tmp_path, {"steps_done": 6})
    assert torch.load(tmp_path / CHECKPOINT)["steps_done"] == 6
    data, directory = synced  # the data, written beside the checkpoint; then the rename
    assert os.path.dirname(data) == str(tmp_path) and directory == str(tmp_path)
