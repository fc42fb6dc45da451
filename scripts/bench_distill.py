"""What distillation costs per epoch: `python -m lenet_fmnist train` with 0, 1 and 5 teachers.

Each case is the command itself (relu, max pool, SGD, flip + shift, batch 64, 2 epochs by
default) in a process of its own, on the real data; the cases take turns for --rounds rounds, so a
slow spell on the machine falls on all of them alike, and each reports the median training
seconds per epoch from its metrics.json history (the teachers' labelling of the epoch's images
included), and its ratio to the run without teachers. The teachers are LeNet-5 checkpoints with
freshly initialised weights, written by this script: what a teacher costs does not depend on what
it learned. A benchmark, run by hand on a quiet machine; the tests assert no timings.

    python scripts/bench_distill.py                    # 0, 1 and 5 teachers, 3 rounds
    python scripts/bench_distill.py --teachers 0 1 3 5 --rounds 2 --epochs 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from lenet_fmnist.config import TrainConfig, compose, to_plain
from lenet_fmnist.host.cpu import this_cpu
from lenet_fmnist.model import LeNet5
from lenet_fmnist.training import checkpoint

TRAIN = ("activation=relu", "pool=max", "optimizer=sgd", "augmentation=standard", "threads=2")


def write_teachers(directory: Path, count: int) -> list[Path]:
    """`count` teacher checkpoints trained on the default split (so no run refuses them)."""
    paths = []
    for number in range(count):
        torch.manual_seed(number)
        model = LeNet5("relu", "max")
        config = to_plain(compose("train", *TRAIN, schema=TrainConfig))  # the student's split, so no run refuses it
        path = directory / f"teacher{number}.pt"
        checkpoint.save(path, {"model": model.state_dict(), "config": config})
        paths.append(path)
    return paths


def epoch_seconds(run_dir: Path, teachers: list[Path], epochs: int) -> float:
    """The median training seconds per epoch of one run with `teachers`."""
    overrides = [f"epochs={epochs}", f"hydra.run.dir={run_dir}"]
    if teachers:
        overrides.append(f"distill.teachers=[{','.join(str(t) for t in teachers)}]")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OMP_", "GOMP_"))}
    command = [sys.executable, "-m", "lenet_fmnist", "train", *TRAIN, *overrides]
    subprocess.run(command, env=env, check=True, capture_output=True)
    history = checkpoint.load(run_dir / "checkpoints" / "last.pt")["history"]
    return statistics.median(record["train_seconds"] for record in history)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teachers", type=int, nargs="+", default=[0, 1, 5], help="teacher counts to compare")
    parser.add_argument("--rounds", type=int, default=3, help="turns each case takes")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        pool = write_teachers(base, max(args.teachers))
        seconds: dict[int, list[float]] = {count: [] for count in args.teachers}
        for round_number in range(args.rounds):
            for count in args.teachers:
                run_dir = base / f"run-{count}-{round_number}"
                seconds[count].append(epoch_seconds(run_dir, pool[:count], args.epochs))
    print(f"CPU: {this_cpu()}; {args.rounds} rounds of {args.epochs} epochs; median training s/epoch (50,000 images)")
    base_time = statistics.median(seconds[min(args.teachers)])
    for count in args.teachers:
        median = statistics.median(seconds[count])
        print(f"  {count} teacher(s): {median:6.2f} s/epoch  {median / base_time:5.2f}x  (runs: {seconds[count]})")


if __name__ == "__main__":
    main()
