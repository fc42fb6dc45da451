"""The training ingredients of stronger recipes end to end, through the command line: a run with
the weight average, label smoothing and random erasing, and a final fit without validation
(data.val_size=0) with the weight average, each stopped by SIGTERM in epoch 2 and resumed, end
bit-identical to the same run uninterrupted; the final fit trains on every training image, records
no validation anywhere and tests the last epoch's weights. What each ingredient computes is tested
in test_loss, test_averaging, test_augment and test_validation; their defaults changing nothing in
test_study_reference."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import (
    CLI,
    assert_ok,
    assert_same_run,
    assert_same_weights,
    output,
    plain_args,
    read_metrics,
    run_each,
    sigterm_in_epoch_2,
)
from lenet_fmnist import data
from lenet_fmnist.inference.evaluate import Classifier, Evaluation
from lenet_fmnist.run import validation
from lenet_fmnist.training import checkpoint

WITH_VALIDATION = "average, smoothing and erasing"
FINAL_FIT = "final fit with the average"
WIDE_SWA = "the wide model with the stochastic weight average"
SCENARIOS = {
    WITH_VALIDATION: ("ema.decay=0.9", "label_smoothing=0.1", "augmentation=standard", "augmentation.erase_p=0.5"),
    FINAL_FIT: ("data.val_size=0", "ema.decay=0.9"),  # the later data.val_size wins over plain_args'
    WIDE_SWA: ("model=lenet5_wide", "swa.epochs=2"),  # of 3 epochs: the resume comes before the average starts
}
TRAINING_IMAGES = 1792  # plain_data's training file


def scenario_args(data_root: Path, run_dir: Path, scenario: str) -> list[str]:
    return plain_args(data_root, run_dir, *SCENARIOS[scenario])


@pytest.fixture(scope="module")
def references(cli: CLI, plain_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each scenario's uninterrupted run, both trained in one process (run_each: one torch import)."""
    base = tmp_path_factory.mktemp("ingredients")
    run_dirs = {scenario: base / f"reference{number}" for number, scenario in enumerate(SCENARIOS)}
    commands = [scenario_args(plain_data, run_dir, scenario) for scenario, run_dir in run_dirs.items()]
    for code, text in run_each(cli, commands):
        assert code == 0 and "Traceback" not in text, text
    return run_dirs


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_a_run_with_the_ingredients_resumes_bit_for_bit(
    cli: CLI, plain_data: Path, references: dict[str, Path], tmp_path: Path, scenario: str
) -> None:
    run_dir = tmp_path / "run"
    hint = sigterm_in_epoch_2(cli, scenario_args(plain_data, run_dir, scenario), run_dir)
    resumed = cli.run_hint(hint)
    assert_ok(resumed)
    assert "Resuming" in output(resumed) and "after epoch 1" in output(resumed)
    for name in ("best.pt", "last.pt"):  # each keeps the average, which assert_same_run compares
        saved = torch.load(run_dir / "checkpoints" / name, weights_only=True)
        assert any(average in saved for average in checkpoint.AVERAGES), name
    assert_same_run(run_dir, references[scenario])


def test_the_best_epoch_is_chosen_by_the_average_s_validation(references: dict[str, Path], plain_data: Path) -> None:
    """With validation and the average: each epoch's val figures are the average's, best.pt holds
    the epoch of the highest validation accuracy, and its evaluated weights are the average."""
    run_dir = references[WITH_VALIDATION]
    metrics = read_metrics(run_dir)
    accuracies = [record["val_acc"] for record in metrics["history"]]
    assert metrics["best_epoch"] == 1 + accuracies.index(max(accuracies))
    best = checkpoint.load(run_dir / "checkpoints" / "best.pt")
    assert best["epoch"] == metrics["best_epoch"]
    assert checkpoint.evaluated_weights(best) is best[checkpoint.EMA]["model"]
    val = data.load(str(plain_data), 256, split_seed=0).val
    assert val is not None
    loss, accuracy, _ = Evaluation(1000)(
        Classifier(checkpoint.model_from(best, "best.pt"), False, uint8_input=True), val.images, val.labels
    )
    assert (metrics["val_loss"], metrics["val_acc"]) == pytest.approx((loss, accuracy), abs=1e-6)


def test_a_final_fit_trains_on_every_image_and_tests_the_last_epoch(
    cli: CLI, references: dict[str, Path], plain_data: Path, tmp_path: Path
) -> None:
    run_dir = references[FINAL_FIT]
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed"
    assert [record["train_images"] for record in metrics["history"]] == [TRAINING_IMAGES] * 3
    assert not [key for record in metrics["history"] for key in record if key.startswith("val_")]
    assert metrics["val_acc"] is None and metrics["val_loss"] is None
    assert metrics["validation"] == (
        "none (data.val_size=0): trained on all 1,792 training images; the last epoch's weights were tested"
    )
    assert metrics["best_epoch"] == metrics["epochs_completed"] == 3
    # Tested: the last epoch's evaluated weights (the average's), the same in best.pt and last.pt.
    best, last = (checkpoint.load(run_dir / "checkpoints" / name) for name in ("best.pt", "last.pt"))
    assert best["epoch"] == last["epoch"] == 3 and best["best_val_acc"] is None
    assert_same_weights(checkpoint.evaluated_weights(best), last[checkpoint.EMA]["model"], "best.pt vs last.pt")
    test = data.load_test(str(plain_data))
    loss, accuracy, _ = Evaluation(1000)(
        Classifier(checkpoint.model_from(last, "last.pt"), False, uint8_input=True), test.images, test.labels
    )
    assert (metrics["test_loss"], metrics["test_acc"]) == pytest.approx((loss, accuracy), abs=1e-6)

    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert not [tag for tag in events.Tags()["scalars"] if "/val" in tag]
    assert {"loss/train", "accuracy/train", "accuracy/test"} <= set(events.Tags()["scalars"])
    (text,) = events.Tensors("validation/text_summary")
    assert text.tensor_proto.string_val[0].decode() == validation.describe(0)

    # The report reads n/a for its validation figures, and says why.
    runs = tmp_path / "runs"
    shutil.copytree(run_dir, runs / "final_fit")
    reported = cli.run("report", str(runs))
    assert_ok(reported)
    assert "1 run(s) had no validation (data.val_size=0): their validation figures read n/a" in output(reported)
    report = (runs / "report.md").read_text()
    header, _, row = [line for line in report.split("## Configurations", 1)[1].splitlines() if line.startswith("|")][:3]
    cells = {name.strip(): cell.strip() for name, cell in zip(header.split("|"), row.split("|"), strict=True)}
    assert cells["val acc"] == "n/a" and cells["test acc"].startswith(f"{metrics['test_acc']:.4f}")
    assert "## Runs without validation" in report
