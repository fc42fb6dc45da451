"""Runs without validation (data.val_size=0): what they record and what TensorBoard shows, and
the refusal of a search that would have nothing to choose by."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from lenet_fmnist import data
from lenet_fmnist.config import TrainConfig, compose, to_plain
from lenet_fmnist.run import validation
from lenet_fmnist.run.errors import UserError
from lenet_fmnist.training.tensorboard_log import TensorBoardLog


def test_which_runs_validate() -> None:
    assert not validation.validates({"data": {"val_size": 0}})
    assert validation.validates({"data": {"val_size": 10_000}})
    assert validation.validates(None) and validation.validates({"seed": 0}), "unknown: as every run before"


def test_what_metrics_json_says_about_validation() -> None:
    assert validation.describe(0, 60_000) == (
        "none (data.val_size=0): trained on all 60,000 training images; the last epoch's weights were tested"
    )
    assert (
        validation.describe(0)
        == "none (data.val_size=0): trained on every training image; the last epoch's weights were tested"
    )
    assert validation.describe(10_000, 50_000).startswith("10,000 training images held out (data.val_size")


def test_a_search_needs_validation() -> None:
    validation.refuse_search_without_validation([10_000, 64])
    with pytest.raises(UserError, match=r"data.val_size=0 holds out no validation images, but a hyperparameter search"):
        validation.refuse_search_without_validation([10_000, 0])


def write_board(run_dir: Path, val_size: int) -> EventAccumulator:
    """Two epochs and a test logged as train.py logs them, for a run with or without validation."""
    config = to_plain(compose("train", f"data.val_size={val_size}", schema=TrainConfig))
    board = TensorBoardLog(run_dir, config, start_epoch=1)
    for epoch in (1, 2):
        record = {"epoch": epoch, "train_loss": 1.0 / epoch, "train_acc": 0.5, "images_per_second": 100.0}
        if val_size:
            record |= {"val_loss": 1.1 / epoch, "val_acc": 0.45}
        board.epoch(epoch, record, lr=0.01)
    board.test(2, 0.8, 0.5, torch.eye(10, dtype=torch.long), data.CLASSES)
    board.close()
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return events


def hparam_metrics(events: EventAccumulator) -> set[str]:
    content = events.PluginTagToContent("hparams")["_hparams_/experiment"]
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content).experiment
    return {info.name.tag for info in experiment.metric_infos}


def test_tensorboard_shows_no_validation_and_says_so(tmp_path: Path) -> None:
    events = write_board(tmp_path / "final_fit", val_size=0)
    scalars = set(events.Tags()["scalars"])
    assert scalars == {
        "loss/train",
        "accuracy/train",
        "learning_rate",
        "speed/images_per_second",
        "accuracy/test",
        "loss/test",
    }
    assert hparam_metrics(events) == {"accuracy/test", "loss/test"}
    (text,) = events.Tensors("validation/text_summary")
    assert text.tensor_proto.string_val[0].decode() == validation.describe(0)
    # Control: a run with validation has its curves and HParams metrics, and no such text.
    validated = write_board(tmp_path / "validated", val_size=64)
    assert {"loss/val", "accuracy/val"} <= set(validated.Tags()["scalars"])
    assert [value.value for value in validated.Scalars("accuracy/val")] == pytest.approx([0.45, 0.45])
    assert hparam_metrics(validated) == {"accuracy/val", "loss/val", "accuracy/test", "loss/test"}
    assert "validation/text_summary" not in validated.Tags()["tensors"]
