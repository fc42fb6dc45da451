"""The training run in-process on tiny synthetic data: determinism, the run directory's rules,
divergence, and interruptions that land outside the training loop."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from conftest import comparable, write_idx
from lenet_fmnist import config, data
from lenet_fmnist.cli import config_dir
from lenet_fmnist.config import TrainConfig, validate
from lenet_fmnist.run import validation
from lenet_fmnist.run.errors import Diverged, Interrupted, UserError
from lenet_fmnist.run.metrics_file import EpochRecord
from lenet_fmnist.training import checkpoint
from lenet_fmnist.training import trainer as train

MakeConfig = Callable[..., TrainConfig]


@pytest.fixture(scope="module")
def make_config(tiny_data: Path) -> Iterator[MakeConfig]:
    config.register()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):

        def make(*overrides: str) -> TrainConfig:
            base = [f"data.root={tiny_data}", "data.val_size=64", "threads=1", "device=cpu", "epochs=2"]
            return validate(compose("train", overrides=[*base, *overrides]), TrainConfig)

        yield make


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def assert_same_weights(first: Path, second: Path) -> None:
    a, b = weights(first), weights(second)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_results_other_seed_other_results(make_config: MakeConfig, tmp_path: Path) -> None:
    cfg = make_config("seed=3", "augmentation=standard", "dropout=standard")
    first = train.train(cfg, tmp_path / "a")
    torch.manual_seed(12345)  # whatever ran before must not matter
    second = train.train(cfg, tmp_path / "b")
    other = train.train(make_config("seed=4", "augmentation=standard", "dropout=standard"), tmp_path / "c")

    assert first["status"] == second["status"] == other["status"] == "completed"
    assert comparable(first) == comparable(second)
    for name in ("best.pt", "last.pt"):
        assert_same_weights(tmp_path / "a" / "checkpoints" / name, tmp_path / "b" / "checkpoints" / name)
    assert first["history"][0]["train_loss"] != other["history"][0]["train_loss"]
    a, c = weights(tmp_path / "a" / "checkpoints" / "last.pt"), weights(tmp_path / "c" / "checkpoints" / "last.pt")
    assert not torch.equal(a["features.0.weight"], c["features.0.weight"])


def test_a_run_directory_is_never_overwritten(make_config: MakeConfig, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train.train(make_config("epochs=1"), run_dir)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    with pytest.raises(UserError, match="already holds a run; it is left untouched"):
        train.train(make_config("epochs=1"), run_dir)
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_resume_with_nothing_to_resume(make_config: MakeConfig, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="nothing to resume"):
        train.train(make_config("resume=true"), tmp_path / "empty")


def test_resume_of_a_completed_run_changes_nothing(make_config: MakeConfig, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train.train(make_config("epochs=1"), run_dir)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert train.train(make_config("epochs=1", "resume=true"), run_dir)["status"] == "completed"
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_resume_with_another_config_is_refused(make_config: MakeConfig, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train.train(make_config("epochs=1"), run_dir)
    with pytest.raises(UserError, match=r"differs from the saved run's: .*optimizer.lr: 0.01 -> 0.02"):
        train.train(make_config("epochs=1", "resume=true", "optimizer.lr=0.02"), run_dir)


@pytest.fixture(scope="module")
def plain_training(make_config: MakeConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two epochs with every ingredient off, as the other runs of the test below but for one key."""
    run_dir = tmp_path_factory.mktemp("plain") / "run"
    train.train(make_config("augmentation=standard"), run_dir)
    return run_dir


@pytest.mark.parametrize("ingredient", ["label_smoothing=0.2", "augmentation.erase_p=1.0", "ema.decay=0.9"])
def test_each_ingredient_changes_what_it_should_and_nothing_else(
    make_config: MakeConfig, plain_training: Path, tmp_path: Path, ingredient: str
) -> None:
    """Label smoothing and erasing change the training; the weight average leaves the training as
    it was, bit for bit (it draws nothing, and the weights it takes in are the same), and changes
    only what is validated and tested."""
    plain = json.loads((plain_training / "metrics.json").read_text())["history"]
    changed = train.train(make_config("augmentation=standard", ingredient), tmp_path / "run")["history"]
    trained = [(record["train_loss"], record["train_acc"]) for record in changed]
    validated = [(record["val_loss"], record["val_acc"]) for record in changed]
    averaged = ingredient.startswith("ema")
    assert (trained == [(record["train_loss"], record["train_acc"]) for record in plain]) == averaged
    assert validated != [(record["val_loss"], record["val_acc"]) for record in plain]
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    assert (checkpoint.EMA in checkpoint.load(last)) == averaged
    if averaged:  # the same training: the same trained weights, and the average beside them
        assert_same_weights(last, plain_training / "checkpoints" / "last.pt")


def test_a_sweep_job_never_started_starts_on_resume(make_config: MakeConfig, tmp_path: Path) -> None:
    metrics = train.train(make_config("resume=true"), tmp_path / "job", start_if_unsaved=True)
    assert metrics["status"] == "completed" and metrics["epochs_completed"] == 2


def test_a_run_stopped_before_its_first_checkpoint_restarts(make_config: MakeConfig, tmp_path: Path) -> None:
    """Interrupted in epoch 1, a run leaves metrics.json (status interrupted) but no last.pt;
    resume=true then starts it again and ends exactly where an uninterrupted run does."""
    reference = train.train(make_config(), tmp_path / "reference")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text(json.dumps({"status": "interrupted", "epochs_completed": 0, "history": []}))
    resumed = train.train(make_config("resume=true"), run_dir)
    assert comparable(resumed) == comparable(reference)


def test_divergence_stops_the_run_with_status_diverged(make_config: MakeConfig, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with pytest.raises(Diverged, match=r"diverged in epoch 1: the training loss became (nan|inf).*Lower optimizer.lr"):
        train.train(make_config("activation=relu", "optimizer.lr=1e10", "epochs=3"), run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and metrics["test_acc"] is None
    assert len(metrics["history"]) == 1


def test_a_divergence_seen_only_in_validation_names_the_validation_loss(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    """One step per epoch (a batch holds every training image): its loss is measured before the
    huge step, so the training loss stays finite, and the weights after it give validation a NaN
    or infinite loss. The message names the loss that was not finite, and its value."""
    run_dir = tmp_path / "run"
    with pytest.raises(Diverged) as raised:
        train.train(make_config("activation=relu", "optimizer.lr=1e30", "batch_size=4096"), run_dir)
    record = json.loads((run_dir / "metrics.json").read_text())["history"][0]
    assert np.isfinite(record["train_loss"]) and not np.isfinite(record["val_loss"])
    assert f"diverged in epoch 1: the validation loss became {record['val_loss']} (NaN or infinite)" in str(
        raised.value
    )


def test_interrupt_while_testing_is_a_resumable_interruption(
    make_config: MakeConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C (or SIGTERM, which the command line maps to it) after the last epoch: status
    "interrupted", every epoch kept, and resuming only runs the test."""

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(train, "confusion_matrix", interrupted)
        with pytest.raises(Interrupted, match="while testing"):
            train.train(make_config(), run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["epochs_completed"] == 2
    assert checkpoint.load(run_dir / "checkpoints" / "last.pt")["epoch"] == 2
    resumed = train.train(make_config("resume=true"), run_dir)
    assert resumed["status"] == "completed" and resumed["test_acc"] is not None
    assert len(resumed["history"]) == 2


def record(epoch: int, train_acc: float, val_acc: float | None = None) -> EpochRecord:
    """An epoch's record with the figures not_learning reads (the rest: any plausible values)."""
    loss = None if val_acc is None else 2.0
    return EpochRecord(epoch, 2.0, train_acc, loss, val_acc, seconds=1.0, train_seconds=1.0, train_images=64, lr=0.1)


@pytest.mark.parametrize(
    ("accuracies", "warned"),
    [((0.10, 0.11), True), ((0.085, 0.119), True), ((0.10, 0.13), False), ((0.5, 0.1), False), ((0.1,), False)],
)
def test_not_learning_means_two_epochs_at_chance(
    make_config: MakeConfig, accuracies: tuple[float, ...], warned: bool
) -> None:
    history = [record(epoch, train_acc=0.5, val_acc=acc) for epoch, acc in enumerate(accuracies, 1)]
    warning = validation.not_learning(history, make_config("activation=sigmoid"), len(data.CLASSES))
    assert (warning is not None) == warned
    assert warning is None or ("sigmoid" in warning and "raise optimizer.lr" in warning)
    assert warning is None or warning.startswith("Not learning: validation accuracy is")


def test_without_validation_not_learning_judges_the_training_accuracy(make_config: MakeConfig) -> None:
    history = [record(epoch, train_acc=0.1) for epoch in (1, 2)]
    warning = validation.not_learning(history, make_config("data.val_size=0"), len(data.CLASSES))
    assert warning is not None and warning.startswith(
        "Not learning: training accuracy (no validation: data.val_size=0) is 0.1000 and 0.1000 after epochs 1 and 2"
    )
    learning = [replace(epoch, train_acc=0.3) for epoch in history]
    assert validation.not_learning(learning, make_config(), len(data.CLASSES)) is None


@pytest.fixture(scope="module")
def noise_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Images of pure noise whose validation labels are exactly balanced (a tenth of each class):
    nothing can be learnt, and a network that predicts one class scores exactly chance, 0.1."""
    root = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(0)
    train_idx, val_idx = data.split_indices(300, 100, split_seed=0)
    labels = np.zeros(300, dtype=np.uint8)
    labels[val_idx.numpy()] = np.arange(100) % 10
    labels[train_idx.numpy()] = np.arange(200) % 10
    for prefix, images, marks in (("train", 300, labels), ("t10k", 20, np.arange(20, dtype=np.uint8) % 10)):
        write_idx(root / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (images, 28, 28), dtype=np.uint8))
        write_idx(root / f"{prefix}-labels-idx1-ubyte", marks)
    return root


def test_a_run_that_does_not_learn_is_warned_and_still_completes(
    make_config: MakeConfig, noise_data: Path, tmp_path: Path
) -> None:
    cfg = make_config("activation=sigmoid", "optimizer.lr=1e-6", "data.val_size=100")
    cfg.data.root = str(noise_data)
    metrics = train.train(cfg, tmp_path / "run")
    assert [record["val_acc"] for record in metrics["history"]] == [0.1, 0.1]
    assert metrics["status"] == "completed"
    assert len(metrics["warnings"]) == 1 and metrics["warnings"][0].startswith("Not learning")
    assert checkpoint.load(tmp_path / "run" / "checkpoints" / "last.pt")["warnings"] == metrics["warnings"]
