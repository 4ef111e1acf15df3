"""What a runtime-only install (``make demo``: no torch) can do with the model commands: list
the families, and be told in one line how to get the rest."""

import subprocess
import sys

import pytest

from models.catalogue import CATALOGUE
from models.registry import REGISTRY

_WITHOUT_TORCH = (
    "import sys; sys.modules['torch'] = None  # import torch now raises ImportError\n"
    "from service.cli.app import app\n"
    "app(sys.argv[1:])\n"
)


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
