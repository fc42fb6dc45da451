"""The weight averages: the exponential moving average's formula, the stochastic weight average's
(the equal mean of the last epochs' weights), their checkpoint state, and the weights that eval,
predict and export take from a checkpoint that holds one."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import CLI, EMA_DECAY, assert_ok, output, read_metrics
from lenet_fmnist import data
from lenet_fmnist.config import TrainConfig, compose
from lenet_fmnist.inference.evaluate import Classifier, Evaluation, load_classifier
from lenet_fmnist.model import LeNet5
from lenet_fmnist.run.metrics_file import EpochRecord
from lenet_fmnist.training import averaging, checkpoint, trainer
from lenet_fmnist.training.averaging import EpochAverage, MovingAverage


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 1))


def set_weights(model: nn.Module, generator: torch.Generator) -> list[torch.Tensor]:
    """Give the model new random weights, as an optimizer step would; returns them in float64."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    return [parameter.detach().double().clone() for parameter in model.parameters()]


@pytest.mark.parametrize("decay", [0.5, 0.8, 0.999])
def test_the_average_follows_its_formula(decay: float) -> None:
    """Update k (from 0) folds the weights in with factor f_k = min(decay, k / (k + 9)):
    average = f_k * average + (1 - f_k) * weights, computed here in float64 after each update."""
    model, generator = tiny_model(), torch.Generator().manual_seed(1)
    average = MovingAverage(model, decay)
    expected: list[torch.Tensor] = []
    for update in range(40):
        weights = set_weights(model, generator)
        average.after_step(model)
        factor = min(decay, update / (update + 9))
        expected = (
            weights if update == 0 else [factor * a + (1 - factor) * w for a, w in zip(expected, weights, strict=True)]
        )
        if update == 0:  # the first update copies the weights exactly
            assert all(torch.equal(a, m) for a, m in zip(average.model.parameters(), model.parameters(), strict=True))
        for got, want in zip(average.model.parameters(), expected, strict=True):
            torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    assert average.updates == 40
    # After the warm-up (k / (k + 9) >= decay from k = 9 * decay / (1 - decay)) the factor is the decay.
    assert average.decay_at(100) == (decay if decay < 0.9 else 100 / 109)


def test_the_average_is_a_separate_copy_that_only_update_changes() -> None:
    model = tiny_model()
    average = MovingAverage(model, 0.9)
    assert all(not parameter.requires_grad for parameter in average.model.parameters())
    before = [parameter.clone() for parameter in average.model.parameters()]
    set_weights(model, torch.Generator().manual_seed(2))
    assert all(torch.equal(a, b) for a, b in zip(average.model.parameters(), before, strict=True))
    assert not any(torch.equal(a, m) for a, m in zip(average.model.parameters(), model.parameters(), strict=True))


@pytest.mark.parametrize(
    ("overrides", "kind"),
    [((), type(None)), (("ema.decay=0.99",), MovingAverage), (("epochs=8", "swa.epochs=3"), EpochAverage)],
)
def test_off_builds_nothing_and_on_draws_no_random_number(overrides: tuple[str, ...], kind: type) -> None:
    model = tiny_model()
    state = torch.get_rng_state()
    average = averaging.build(model, compose("train", *overrides, schema=TrainConfig))
    assert isinstance(average, kind)
    assert torch.equal(torch.get_rng_state(), state)
    if isinstance(average, EpochAverage):
        assert average.first_epoch == 6  # the last 3 of 8 epochs


def test_the_stochastic_average_is_the_equal_mean_of_its_epochs_weights() -> None:
    """Epochs before `first_epoch` and every step leave it alone; from there each epoch's end
    weights enter with equal weight (compared in float64 with their plain mean)."""
    model, generator = tiny_model(), torch.Generator().manual_seed(4)
    average = EpochAverage(model, first_epoch=3)
    initial = [parameter.clone() for parameter in average.model.parameters()]
    kept: list[list[torch.Tensor]] = []
    for epoch in range(1, 7):
        weights = set_weights(model, generator)
        average.after_step(model)  # a step: no effect
        average.after_epoch(model, epoch)
        if epoch < 3:
            assert average.updates == 0
            assert all(torch.equal(a, b) for a, b in zip(average.model.parameters(), initial, strict=True))
            continue
        kept.append(weights)
        assert average.updates == len(kept)
        for got, *seen in zip(average.model.parameters(), *kept, strict=True):
            torch.testing.assert_close(got.double(), torch.stack(seen).mean(dim=0), rtol=1e-6, atol=1e-6)


def test_the_state_round_trip_is_exact_and_loads_with_weights_only() -> None:
    """Saved after 7 updates and loaded into a fresh average, 5 more updates give bit for bit what
    12 uninterrupted updates give."""
    model, generator = tiny_model(), torch.Generator().manual_seed(3)
    average = MovingAverage(model, 0.95)
    for _ in range(7):
        set_weights(model, generator)
        average.after_step(model)
    buffer = io.BytesIO()
    torch.save({"ema": average.state_dict()}, buffer)
    buffer.seek(0)
    resumed = MovingAverage(tiny_model(seed=9), 0.95)
    resumed.load_state_dict(torch.load(buffer, weights_only=True)["ema"])
    assert resumed.updates == 7
    for _ in range(5):
        set_weights(model, generator)
        average.after_step(model)
        resumed.after_step(model)
    assert resumed.updates == average.updates == 12
    assert all(torch.equal(a, b) for a, b in zip(resumed.model.parameters(), average.model.parameters(), strict=True))


def lenet_state(with_average: bool) -> dict:
    """A checkpoint's content with a LeNet-5's trained weights and, optionally, another's as its average."""
    trained, averaged = LeNet5(), LeNet5()
    state = {"config": {"activation": {"name": "tanh"}, "pool": {"name": "avg"}, "dropout": {"p": 0.0},
                        "augmentation": {"test_flip": False},
                        "ema": {"decay": 0.999 if with_average else None}},
             "model": trained.state_dict()}  # fmt: skip
    if with_average:
        state[checkpoint.EMA] = {"model": averaged.state_dict(), "updates": 3}
    return state


@pytest.mark.parametrize("with_average", [True, False])
def test_a_checkpoint_gives_its_average_when_it_has_one(with_average: bool, tmp_path: Path) -> None:
    state = lenet_state(with_average)
    expected = state[checkpoint.EMA]["model"] if with_average else state["model"]
    assert checkpoint.evaluated_weights(state) is expected
    path = tmp_path / "best.pt"
    checkpoint.save(path, {**state, "epoch": 1})
    classifier, _ = load_classifier(path, uint8_input=True)  # what eval, predict and export load
    for key, value in classifier.model.state_dict().items():
        assert torch.equal(value, expected[key]), key
    words = checkpoint.weights_used(state)
    assert words == (
        "the exponential moving average of the weights (ema.decay=0.999)" if with_average else "the trained weights"
    )


def test_a_run_validates_tests_and_keeps_the_average_and_eval_tests_it(
    cli: CLI, ema_run: Path, tiny_data: Path, tmp_path: Path
) -> None:
    """A real run with ema.decay: best.pt holds the average, updated once per step, beside the
    trained weights; validation and the run's test used the average, and `eval` on best.pt gives
    the test figures metrics.json recorded."""
    best = ema_run / "checkpoints" / "best.pt"
    state, metrics = checkpoint.load(best), read_metrics(ema_run)
    assert state[checkpoint.EMA]["updates"] == (256 - 64) // 8  # tiny_data less validation, in batches of 8
    assert checkpoint.evaluated_weights(state) is state[checkpoint.EMA]["model"]
    averaged, trained = checkpoint.model_from(state, best), LeNet5("tanh", "avg")
    trained.load_state_dict(state["model"])
    val = data.load(str(tiny_data), 64, split_seed=0).val
    assert val is not None
    val_loss, val_acc, _ = Evaluation(1000)(Classifier(averaged, False, uint8_input=True), val.images, val.labels)
    assert (metrics["val_loss"], metrics["val_acc"]) == pytest.approx((val_loss, val_acc), abs=1e-6)

    result = cli.run("eval", f"checkpoint={best}", f"data.root={tiny_data}", "device=cpu", f"hydra.run.dir={tmp_path}")
    assert_ok(result)
    assert f"moving average of the weights (ema.decay={EMA_DECAY})" in output(result)
    written = json.loads((tmp_path / "eval.json").read_text())
    assert written["weights"] == f"the exponential moving average of the weights (ema.decay={EMA_DECAY})"
    assert written["test_acc"] == metrics["test_acc"]
    assert written["test_loss"] == pytest.approx(metrics["test_loss"], rel=1e-6)
    test = data.load_test(str(tiny_data))
    loss, accuracy, _ = Evaluation(1000)(Classifier(averaged, False, uint8_input=True), test.images, test.labels)
    assert (written["test_loss"], written["test_acc"]) == pytest.approx((loss, accuracy), abs=1e-6)
    # Control: the trained weights score otherwise, on validation and on the test.
    assert (
        abs(Evaluation(1000)(Classifier(trained, False, uint8_input=True), val.images, val.labels)[0] - val_loss) > 1e-4
    )
    assert (
        abs(Evaluation(1000)(Classifier(trained, False, uint8_input=True), test.images, test.labels)[0] - loss) > 1e-4
    )


def test_a_run_s_stochastic_average_is_the_mean_of_its_last_epochs_and_changes_no_step(
    tiny_data: Path, tmp_path: Path
) -> None:
    """swa.epochs=2 of 3, on the wide model, in-process: the trained weights are those of the same
    run without an average; epoch 1 validates the trained weights (the same figures as without),
    and at the end the average is the mean of epoch 2's and epoch 3's weights."""
    snapshots: list[dict[str, torch.Tensor]] = []

    def run(name: str, *overrides: str) -> dict:
        cfg = compose(
            "train", f"data.root={tiny_data}", "data.val_size=64", "threads=1", "device=cpu", "epochs=3",
            "batch_size=8", "model=lenet5_wide", *overrides, schema=TrainConfig,
        )  # fmt: skip

        def keep(record: EpochRecord) -> None:  # called once the epoch is saved
            snapshots.append(checkpoint.load(tmp_path / name / "checkpoints" / "last.pt")["model"])

        return trainer.train(cfg, tmp_path / name, on_epoch=keep if name == "swa" else None)

    averaged, plain = run("swa", "swa.epochs=2"), run("plain")
    last = checkpoint.load(tmp_path / "swa" / "checkpoints" / "last.pt")
    plain_last = checkpoint.load(tmp_path / "plain" / "checkpoints" / "last.pt")
    assert all(torch.equal(last["model"][key], plain_last["model"][key]) for key in plain_last["model"])
    assert last[checkpoint.SWA]["updates"] == 2 and checkpoint.EMA not in last
    for key, value in last[checkpoint.SWA]["model"].items():
        torch.testing.assert_close(value, (snapshots[1][key] + snapshots[2][key]) / 2)
    first, plain_first = averaged["history"][0], plain["history"][0]
    assert (first["val_loss"], first["val_acc"]) == (plain_first["val_loss"], plain_first["val_acc"])
    assert averaged["history"][2]["val_loss"] != plain["history"][2]["val_loss"]
    best = checkpoint.load(tmp_path / "swa" / "checkpoints" / "best.pt")
    with_average = best["epoch"] > 1
    expected = best[checkpoint.SWA]["model"] if with_average else best["model"]
    assert checkpoint.evaluated_weights(best) is expected
    assert ("(swa.epochs=2)" in checkpoint.weights_used(best)) == with_average
