"""Start-up: what a training run imports before its first step, and the picture drawn here instead
of importing torchvision (whose import pulls in torch._dynamo: seconds of every run and sweep job)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lenet_fmnist.config import SGDConfig, TrainConfig, to_plain
from lenet_fmnist.training.tensorboard_log import TensorBoardLog, image_grid

# What the training path imports (the command line imports the trainer once the config is valid).
TRAINING_PATH = "import lenet_fmnist.cli, lenet_fmnist.training.trainer"
# Not before the first step: torchvision never; matplotlib draws the test's confusion matrix, after training.
NOT_IMPORTED = ("torchvision", "matplotlib")


def test_the_training_path_imports_neither_torchvision_nor_matplotlib() -> None:
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


def test_the_samples_reach_tensorboard_as_the_grid(tmp_path: Path) -> None:
    images = torch.randint(0, 256, (70, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    board = TensorBoardLog(tmp_path, to_plain(TrainConfig(optimizer=SGDConfig(lr=0.01))), start_epoch=1)
    board.samples(images)
    board.close()
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    events.Reload()
    (logged,) = events.Images("inputs/augmented")
    picture = np.asarray(Image.open(io.BytesIO(logged.encoded_image_string)).convert("RGB"))
    assert np.array_equal(picture, image_grid(images[:64]).permute(1, 2, 0).numpy())  # the first 64, lossless PNG
