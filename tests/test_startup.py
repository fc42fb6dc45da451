"""Start-up: what a training run imports before its first step, the picture drawn here instead
of importing torchvision (whose import pulls in torch._dynamo: seconds of every run and sweep job),
and the TensorBoard event file, opened after the first epoch rather than before the first step."""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import REPO
from lenet_fmnist.config import TrainConfig, compose, to_plain
from lenet_fmnist.training.tensorboard_log import TensorBoardLog, image_grid

# What the training path imports (the command line imports the trainer once the config is valid).
TRAINING_PATH = "import lenet_fmnist.cli, lenet_fmnist.training.trainer"
# Not before the first step: torchvision never; TensorBoard's writer (and PIL, its PNGs) after the first
# epoch; matplotlib draws the test's confusion matrix, after training.
NOT_IMPORTED = ("torchvision", "tensorboard", "PIL", "matplotlib")


def test_the_training_path_imports_neither_torchvision_nor_tensorboard() -> None:
    code = f"{TRAINING_PATH}\nimport sys\nprint(sorted(m for m in sys.modules if m.split('.')[0] in {NOT_IMPORTED!r}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("count", "columns", "size"),
    [(64, 8, (28, 28)), (9, 8, (28, 28)), (3, 8, (28, 28)), (1, 8, (28, 28)), (10, 4, (5, 7))],
    ids=["full", "one-over", "one-row", "alone", "other-shape"],
)
def test_image_grid_is_torchvisions_make_grid(count: int, columns: int, size: tuple[int, int]) -> None:
    from torchvision.utils import make_grid

    images = torch.randint(0, 256, (count, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(count))
    theirs = make_grid(images[:, None], nrow=columns, pad_value=255)
    mine = image_grid(images, columns=columns)
    assert mine.dtype == theirs.dtype == torch.uint8
    assert mine.shape == theirs.shape and torch.equal(mine, theirs)


def _events(run_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    return events


def _new_board(run_dir: Path, images: torch.Tensor) -> TensorBoardLog:
    """A new run's log, as a run starts it: the config, then the samples, before the first step."""
    board = TensorBoardLog(run_dir, to_plain(compose("train", schema=TrainConfig)), start_epoch=1)
    board.samples(images)
    return board


def test_the_event_file_opens_after_the_first_epoch_with_all_that_came_before(tmp_path: Path) -> None:
    images = torch.randint(0, 256, (70, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    board = _new_board(tmp_path, images)
    assert not list(tmp_path.iterdir()), "nothing is written before the first step"
    board.epoch(1, {"train_loss": 1.0, "train_acc": 0.5, "images_per_second": 100.0}, lr=0.01)
    events = _events(tmp_path)  # flushed at the epoch's end, before close
    (logged,) = events.Images("inputs/augmented")
    picture = np.asarray(Image.open(io.BytesIO(logged.encoded_image_string)).convert("RGB"))
    assert np.array_equal(picture, image_grid(images[:64]).permute(1, 2, 0).numpy())  # the first 64, lossless PNG
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")
    assert [e.step for e in events.Scalars("loss/train")] == [1]
    board.close()


def test_a_run_stopped_in_its_first_epoch_still_leaves_its_event_file(tmp_path: Path) -> None:
    images = torch.zeros((3, 28, 28), dtype=torch.uint8)
    _new_board(tmp_path, images).close()
    events = _events(tmp_path)
    assert len(events.Images("inputs/augmented")) == 1
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")


@pytest.mark.slow
def test_bench_times_the_first_step_beside_a_bare_import_of_torch(plain_data: Path) -> None:
    """scripts/bench.py --startup on the synthetic data, one round: the ratio the start-up target is
    stated in, from a real run's "Training starts" line (timings themselves are never asserted)."""
    sys.path.insert(0, str(REPO / "scripts"))
    import bench  # a script, not a package

    args = argparse.Namespace(rounds=1, val_size=256, data_root=str(plain_data))
    result = bench.startup(args)
    assert set(result) == {
        "help_seconds", "import_torch_seconds", "import_torch_dynamo_seconds", "seconds_to_first_step",
        "peak_rss_mib", "first_step_vs_import_torch",
    }  # fmt: skip
    assert result["first_step_vs_import_torch"] == result["seconds_to_first_step"] / result["import_torch_seconds"]
    assert all(value > 0 for value in result.values())
