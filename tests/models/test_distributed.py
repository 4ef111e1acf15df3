"""Training under torchrun: two CPU processes (gloo) with DistributedDataParallel."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.registry import build_model

WORKER = Path(__file__).with_name("_ddp_worker.py")


@pytest.mark.slow
def test_two_processes_train_different_shards_and_stay_in_sync(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", str(WORKER), str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr

    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    # Each rank trained on its own shard: its losses are its own ...
    assert ranks[0]["logs"]["s0_pred"] != ranks[1]["logs"]["s0_pred"]
    # ... yet every weight is identical on both replicas, and training moved them.
    torch.manual_seed(0)  # the run's seed: the weights it started from
    initial = build_model("mr_layer_lstm", {"hidden": (3, 4), "kernel_size": 3}).state_dict()
    for name, weight in ranks[0]["generator"].items():
        torch.testing.assert_close(ranks[1]["generator"][name], weight, rtol=0, atol=0)
    moved = [n for n, w in ranks[0]["generator"].items() if not torch.equal(w, initial[n])]
    assert len(moved) > len(initial) // 2
    # Only rank 0 wrote the checkpoint, and it holds the synchronised weights.
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["generator"]
    for name, weight in ranks[0]["generator"].items():
        torch.testing.assert_close(saved[name], weight, rtol=0, atol=0)
