"""Whether a run validates, said once. `data.val_size=0` is a final fit: every training image
trains, none is held out, so there is no validation accuracy or loss (metrics.json writes null,
never a stand-in number), the best epoch is the last one, and its weights are tested.

Training (metrics.json, TensorBoard), the report and the search read it here. This module must
not import torch: the report imports it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lenet_fmnist.errors import UserError

# metrics.json's keys and the history's per-epoch keys that only a run with validation has.
VALIDATION_KEYS = ("val_acc", "val_loss")


def validates(config: Mapping[str, Any] | None) -> bool:
    """Whether a run of `config` (plain values, as saved) holds out validation images. An unknown
    config, or one saved before data.val_size=0 was allowed, did."""
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
