"""Whether a run validates, said once. `data.val_size=0` is a final fit: every training image
trains, none is held out, so there is no validation accuracy or loss (metrics.json writes null,
never a stand-in number), the best epoch is the last one, and its weights are tested. And what
validation tells of a run: whether it is learning at all (`not_learning`).

Training (metrics.json, TensorBoard), the report and the search read it here. This module must
not import torch (the report imports it) nor Hydra.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lenet_fmnist.run.errors import UserError

if TYPE_CHECKING:  # the types only: lenet_fmnist.config imports Hydra
    from lenet_fmnist.config import TrainConfig
    from lenet_fmnist.run.metrics_file import EpochRecord


def validates(config: Mapping[str, Any] | None) -> bool:
    """Whether a run of `config` (plain values, as saved) holds out validation images; a run
    whose config is unknown is taken to have, as every default run does."""
    data = (config or {}).get("data") or {}
    return data.get("val_size") != 0


def describe(val_size: int, train_images: int | None = None) -> str:
    """What a run validated on, for metrics.json's `validation` and TensorBoard: `train_images`,
    when given, is how many images trained."""
    if val_size:
        return (
            f"{val_size:,} training images held out (data.val_size, chosen by data.split_seed); the weights of the "
            "epoch with the best validation accuracy were tested"
        )
    trained = "every training image" if train_images is None else f"all {train_images:,} training images"
    return f"none (data.val_size=0): trained on {trained}; the last epoch's weights were tested"


def refuse_search_without_validation(val_sizes: Iterable[int]) -> None:
    """Raise UserError when a hyperparameter search (hydra/sweeper=optuna) would train a trial with
    data.val_size=0: its objective and its pruner read validation accuracy. `val_sizes`: every
    value of data.val_size its trials can take (from the config, the command line and the space),
    or a trial's own."""
    if 0 in set(val_sizes):
        raise UserError(
            "data.val_size=0 holds out no validation images, but a hyperparameter search (hydra/sweeper=optuna) "
            "chooses and prunes its trials by validation accuracy. Search with data.val_size >= 1 (the default "
            "holds out 10,000 images), then train the chosen recipe on all training images as a plain run with "
            "data.val_size=0."
        )


CHANCE_MARGIN = 0.02  # accuracy this close to chance (1 / classes) means nothing was learnt


def not_learning(history: Sequence[EpochRecord], cfg: TrainConfig, classes: int) -> str | None:
    """The warning for a run of `cfg` whose validation accuracy is still at chance after two
    epochs of its `history`. A run without validation is judged by its training accuracy, and the
    warning says so."""
    if len(history) < 2:
        return None
    key = "val_acc" if history[0].val_acc is not None else "train_acc"
    first = [getattr(record, key) for record in history[:2]]
    chance = 1 / classes
    if any(abs(acc - chance) > CHANCE_MARGIN for acc in first):
        return None
    measured = "validation accuracy" if key == "val_acc" else "training accuracy (no validation: data.val_size=0)"
    return (
        f"Not learning: {measured} is {first[0]:.4f} and {first[1]:.4f} after epochs 1 and 2, at chance "
        f"({chance:.2f}). A {cfg.activation.name.value} network at {cfg.optimizer.name} lr {cfg.optimizer.lr:g} may "
        "sit there for many epochs (sigmoid and tanh pass back small gradients at a low SGD rate): raise "
        "optimizer.lr (conf/variant/sigmoid.yaml trains sigmoid at 0.1). The run goes on."
    )
