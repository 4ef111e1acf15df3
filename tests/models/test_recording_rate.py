"""A recording whose timestamps keep another rate than it declares is refused by every command
that reads one, as ``replay`` refuses it: ``train``, ``evaluate``, ``adapt`` and ``rig
--source`` learnt from, scored on or played an amplifier at 250 Hz in a stream declaring
277.78 Hz (steps of 1.11 periods, no gaps), every speed 10 % off."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bench.data.session import Session
from bench.data.session_io import write_xdf
from bench.data.synth import SynthConfig, generate_session
from service.cli.app import app

RATE = 277.78
KEPT = 250.0
TINY_RUN = Path(__file__).parents[1] / "data" / "tiny_model" / "run"


@pytest.fixture(scope="module")
def amplifier_at_250(tmp_path_factory) -> Path:
    """A 5-s recording declaring 277.78 Hz, stamped at 250 Hz."""
    frames = generate_session(SynthConfig(duration_s=5.0, seed=3)).frames
    stamps = 100.0 + np.arange(len(frames)) / KEPT
    path = tmp_path_factory.mktemp("rate") / "amplifier-at-250.xdf"
    write_xdf(path, Session(frames=frames, timestamps=stamps, sample_rate_hz=RATE))
    return path


def _assert_refused(result, path: Path) -> None:
    assert result.exit_code == 1, result.output
    assert re.search(
        rf"{re.escape(str(path))}: stream rate 250\.00 Hz measured from its timestamps over "
        r"0\.5 s, 0\.5 s into the recording; its nominal rate is 277\.78 Hz",
        result.output,
    ), result.output


def test_train_refuses_a_recording_stamped_at_another_rate(amplifier_at_250, tmp_path):
    args = ["train", "mr_layer_lstm", "--data", f"{amplifier_at_250}::stream=corticast-rig"]
    args += ["--run", str(tmp_path / "run"), "--steps", "2", "--hidden", "3,4"]
    args += ["--batch-size", "2", "--window-stride", "16", "--no-adversarial"]
    _assert_refused(CliRunner().invoke(app, args), amplifier_at_250)
    assert not (tmp_path / "run").exists()


def test_evaluate_refuses_a_recording_stamped_at_another_rate(amplifier_at_250, tmp_path):
    args = ["evaluate", str(TINY_RUN), "--data", str(amplifier_at_250)]
    args += ["--out", str(tmp_path / "e"), "--ar-lags", "0"]
    _assert_refused(CliRunner().invoke(app, args), amplifier_at_250)
    assert not (tmp_path / "e").exists()


def test_adapt_refuses_a_recording_stamped_at_another_rate(amplifier_at_250, tmp_path):
    args = ["adapt", str(amplifier_at_250), "--from", str(TINY_RUN), "--out", str(tmp_path / "a")]
    args += ["--max-steps", "2", "--no-step"]
    _assert_refused(CliRunner().invoke(app, args), amplifier_at_250)
    assert not (tmp_path / "a").exists()


def test_rig_refuses_to_play_a_recording_stamped_at_another_rate(amplifier_at_250):
    args = ["rig", "--source", f"{amplifier_at_250}::type=ECoG", "--seconds", "0.2"]
    _assert_refused(CliRunner().invoke(app, args), amplifier_at_250)
