"""The study's runs compute what they computed before: every variant of `experiment=study` trained
for 3 epochs on the synthetic `plain_data` set, against a record of what it gave.

- tests/data/study_reference.json: the default `shards=2` (lenet_fmnist.training.step), written at the
  commit that made a step's arithmetic independent of the thread count;
- tests/data/study_reference_one_shard.json: `shards=1`, written at 33b410a, before `shards`
  existed, by one-thread runs (and before label smoothing, the weight average, random erasing and
  `data.val_size=0` were added: their defaults must change nothing). One shard computes as a
  one-thread run of that code did, so the study runs of docs/results.md made with one thread each
  are reproduced by `shards=1 threads=1`.

Run this file as a script to write study_reference.json again, which is only right after a
deliberate change of what the study computes:

    python tests/test_study_reference.py

Bit for bit on any x86-64 CPU: the runs use the instruction sets every such CPU has (oneDNN's
SSE4.1 kernels, ATen's default kernels, MKL's compatible code path), so neither AVX-512 nor AVX2
changes the rounding.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REFERENCES = {  # shards -> what the study's runs computed
    2: Path(__file__).parent / "data" / "study_reference.json",
    1: Path(__file__).parent / "data" / "study_reference_one_shard.json",
}
SAME_ON_EVERY_CPU = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "COMPATIBLE"}
OVERRIDES = ("experiment=study", "seed=0", "epochs=3", "data.val_size=256", "threads=1", "device=cpu")
# What a run computed; the rest of metrics.json says how long it took or where it ran.
COMPUTED = ("status", "best_epoch", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")
COMPUTED_PER_EPOCH = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")


def study_results(data: Path, sweep_dir: Path, env: dict[str, str], shards: int) -> dict[str, Any]:
    """Train the study's variants briefly in one sweep; what each computed, by variant."""
    command = [sys.executable, "-m", "lenet_fmnist", "train", "-m", *OVERRIDES, f"shards={shards}",
               f"data.root={data}", f"hydra.sweep.dir={sweep_dir}"]  # fmt: skip
    done = subprocess.run(command, env={**env, **SAME_ON_EVERY_CPU}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    results = {}
    for metrics_file in sorted(sweep_dir.glob("*/metrics.json")):
        metrics = json.loads(metrics_file.read_text())
        variant = metrics_file.parent.name.split("+variant=", 1)[1].split(",", 1)[0]
        results[variant] = {
            **{key: metrics[key] for key in COMPUTED},
            "history": [{key: record[key] for key in COMPUTED_PER_EPOCH} for record in metrics["history"]],
        }
    return results


@pytest.mark.slow  # a sweep of 8 runs in a subprocess, ~16 s
@pytest.mark.parametrize("shards", sorted(REFERENCES))
def test_the_study_computes_what_it_did_before(
    plain_data: Path, cli_env: dict[str, str], tmp_path: Path, shards: int
) -> None:
    expected = json.loads(REFERENCES[shards].read_text())
    assert study_results(plain_data, tmp_path / "sweep", cli_env, shards) == expected


if __name__ == "__main__":
    import tempfile

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import write_dataset

    with tempfile.TemporaryDirectory() as tmp:
        data = write_dataset(Path(tmp) / "data", train=1792, test=256, gz=False, seed=7)  # conftest's plain_data
        env = {**os.environ, "OMP_NUM_THREADS": "1", "XDG_CACHE_HOME": str(Path(tmp) / "cache")}
        results = study_results(data, Path(tmp) / "sweep", env, shards=2)
    REFERENCES[2].write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {REFERENCES[2]}: {len(results)} variants")
