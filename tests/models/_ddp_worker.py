"""Run by ``torchrun`` in test_distributed.py: train a tiny model, save this rank's result."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from bench.data.synth import SynthConfig, generate_session
from models.data import SessionWindows
from models.training import RunConfig, train


def main(out: Path) -> None:
    torch.set_num_threads(1)
    windows = SessionWindows(generate_session(SynthConfig(duration_s=5.0, seed=3)), stride=8)
    config = RunConfig(
        family="mr_layer_lstm", model={"hidden": (3, 4), "kernel_size": 3}, steps=4, batch_size=2
    )
    result = train(config, windows, out / "run", progress=False)
    rank = dist.get_rank()
    torch.save(
        {
            "world_size": dist.get_world_size(),
            "generator": result.generator.state_dict(),
            "logs": result.last_logs,
        },
        out / f"rank{rank}.pt",
    )
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
