"""scripts/bench.py's own logic, on the CPU and the synthetic data: the variants it compares must
measure what they say (their speed is measured by hand, never asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import bench  # a script, not a package


def child(variant: str, data: Path, *extra: str) -> dict:
    """What `bench.py --child VARIANT` prints last, on `data` with 256 validation images, on the CPU."""
    command = [sys.executable, str(REPO / "scripts" / "bench.py"), "--child", variant, "--device", "cpu",
               "--data-root", str(data), "--val-size", "256", "--images", "128", *extra]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env=bench.user_env())
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.slow
def test_the_accuracy_check_trains_both_loops(plain_data: Path) -> None:
    """--accuracy-epochs: the conventional loop and the project's epoch function, one seed each."""
    result = child("accuracy", plain_data, "--accuracy-epochs", "1", "--accuracy-seeds", "1")
    assert result["epochs"] == 1
    for loop in ("conventional", "project"):
        (accuracy,) = result[loop]
        assert 0.0 <= accuracy <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["conventional-w0", "floor", "sharded-floor"])
def test_each_variant_measures_with_its_own_settings(plain_data: Path, variant: str) -> None:
    """The conventional loop keeps torch's defaults (cuDNN free to choose its algorithms on a GPU);
    the floors decide their threads as the command does."""
    result = child(variant, plain_data)
    assert result["seconds_per_image"] > 0
    assert (result["threads_reason"] == "torch's default") == variant.startswith("conventional")
    if variant.startswith("conventional"):
        assert result["cudnn_deterministic"] is False
        fresh = [sys.executable, "-c", "import torch; print(torch.get_num_threads())"]
        default = subprocess.run(fresh, env=bench.user_env(), capture_output=True, text=True, check=True)
        assert result["threads"] == int(default.stdout), "the conventional loop runs with torch's own threads"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: torch.cuda.is_available() is false")
def test_on_a_gpu_only_the_project_variants_restrict_cudnn(plain_data: Path) -> None:
    for variant, deterministic in (("conventional-w0", False), ("floor", True)):
        result = child(variant, plain_data, "--device", "cuda")
        assert result["cudnn_deterministic"] is deterministic, variant


def test_the_projects_first_epoch_is_left_out(tmp_path: Path) -> None:
    """Its first epoch pays the set-up (a GPU's first cuDNN and allocator calls) that the other
    variants' warm-up pays outside their timing."""
    history = [{"train_seconds": seconds, "train_images": 100} for seconds in (9.0, 1.0, 2.0)]
    (tmp_path / "metrics.json").write_text(json.dumps({"history": history, "threads": 2, "threads_reason": "r"}))
    assert bench.epoch_figures(tmp_path)["seconds"] == 1.5
    (tmp_path / "metrics.json").write_text(json.dumps({"history": history[:1], "threads": 2, "threads_reason": "r"}))
    assert bench.epoch_figures(tmp_path)["seconds"] == 9.0  # one epoch: all there is
