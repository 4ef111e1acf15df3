"""What a runtime-only install (``make demo``: no torch) can do with the model commands: list
the families, score an exported model, and be told in one line how to get the rest."""

import subprocess
import sys

import numpy as np
import pytest
from torch.utils.data import DataLoader

from models.catalogue import CATALOGUE
from models.data import SessionWindows
from models.evaluation import EvaluationReport, evaluate, fit_autoregressive
from models.loading import load_predictor
from models.registry import REGISTRY
from models.sources import load_sessions
from tests.data.tiny_model import DIRECTORY, RUN, WINDOW

# As where torch is not installed: importing it raises ModuleNotFoundError and leaves no entry
# in sys.modules (libraries such as scipy look there for torch's array type).
_WITHOUT_TORCH = """\
import importlib.abc
import sys


class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "torch":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


sys.meta_path.insert(0, NoTorch())
from service.cli.app import app

app(sys.argv[1:])
"""
DATA = "synthetic:3@8"
"""A small generated session: 39 test windows at the default stride."""


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT_TORCH, *args], capture_output=True, text=True, timeout=120
    )


def test_models_lists_every_family_without_torch():
    done = _run("models")
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert list(lines) == sorted(CATALOGUE)
    assert "paper 003" in lines["trajgru"] and "irregular" in lines["trajgru"]
    assert "paper 000" in lines["mr_layer_lstm"] and "regular window" in lines["mr_layer_lstm"]


@pytest.mark.parametrize(
    "args",
    [
        ["train", "mr_layer_lstm", "--data", "synthetic:1@10", "--run", "r"],
        ["export", "run", "out.onnx"],
        ["adapt", "synthetic:1@10", "--out", "a"],
        ["evaluate", str(DIRECTORY / RUN), "--data", "synthetic:1@10", "--out", "e"],
    ],
)
def test_a_torch_command_without_torch_says_how_to_install_it(args):
    done = _run(*args)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: this command needs PyTorch, which comes with the train extra: pip install "
        "'corticast[train]' (`make test` installs it; `make demo` does not)"
    ]


def test_the_catalogue_and_the_registry_agree():
    assert set(CATALOGUE) == set(REGISTRY)
    for name, entry in CATALOGUE.items():
        assert (REGISTRY[name].paper, REGISTRY[name].irregular) == (entry.paper, entry.irregular)


def test_evaluate_scores_an_onnx_model_without_torch_as_the_torch_path_does(tmp_path):
    done = _run(
        "evaluate",
        str(DIRECTORY / WINDOW),
        "--data",
        DATA,
        "--out",
        str(tmp_path),
        "--names",
        "tiny",
    )
    assert done.returncode == 0, done.stderr
    assert "| frame | tiny | persistence | linear | ar |" in done.stdout
    assert (tmp_path / "psnr.png").is_file()
    onnx = EvaluationReport.read_json(tmp_path / "evaluation.json")
    # The torch path: the same model's training run (PyTorch), torch windows and DataLoader.
    run = load_predictor(DIRECTORY / RUN)
    sessions = load_sessions([DATA])
    windows = SessionWindows(sessions, "test", run.normalisation, stride=4)
    ar = fit_autoregressive(sessions, run.normalisation)
    batches = [  # each with its windows' live channels, as the command's own batches carry
        (past, future, np.stack([windows.live(first + i) for i in range(len(past))]))
        for first, (past, future) in zip(
            range(0, len(windows), 32), DataLoader(windows, batch_size=32), strict=True
        )
    ]
    torch_path = evaluate({"tiny": run.predict}, batches, ar=ar)
    assert onnx.to_dict().keys() == torch_path.to_dict().keys()
    assert (onnx.n_windows, onnx.predictors) == (torch_path.n_windows, torch_path.predictors)
    for name in torch_path.baselines:  # the same windows, in numpy: the same numbers
        np.testing.assert_allclose(onnx.mse[name], torch_path.mse[name], rtol=1e-12)
        np.testing.assert_allclose(onnx.ssim[name], torch_path.ssim[name], rtol=1e-12)
    # ONNX Runtime and PyTorch round float32 differently: about 1e-7 apart here.
    np.testing.assert_allclose(onnx.mse["tiny"], torch_path.mse["tiny"], rtol=1e-5)
    np.testing.assert_allclose(onnx.ssim["tiny"], torch_path.ssim["tiny"], rtol=1e-5)
