"""Averages of the weights, kept beside the trained model: the exponential moving average (EMA,
`ema.decay`) or the stochastic weight average (SWA, `swa.epochs`), never both.

The EMA is updated after every optimizer step; SWA takes the weights at the end of each of the
run's last `swa.epochs` epochs and averages them equally (Izmailov et al. 2018, here on the tail
of the run's own schedule). Once an average holds any weights, validation, the choice of the best epoch, the test, `eval`,
`predict` and `export` then use the averaged weights (checkpoint.evaluated_weights), which sit in
a flatter part of the loss surface than the last step's and usually generalise better.

The decay warms up as TensorFlow's ExponentialMovingAverage(num_updates) does: update n (counting
from 0) uses min(decay, n / (n + 9)). The first update copies the weights (factor 0), and early on
the average spans about the last ninth of training so far instead of holding on to the first
steps: with a fixed 0.999 the weights after step 1 would still be 46% of the average after 784
steps (4 epochs at batch 256), which is when a search's pruner judges a trial.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import get_ema_multi_avg_fn, get_swa_multi_avg_fn

from lenet_fmnist.config import TrainConfig
from lenet_fmnist.training import checkpoint

WARMUP = 9  # update n uses min(decay, n / (n + WARMUP)): TensorFlow's num_updates rule


class WeightAverage:
    """An average of `model`'s parameters, as a copy of the model (`self.model`, on the same
    device, never trained) that evaluation runs once `updates` > 0. LeNet-5 has parameters only, no
    buffers. `key` names its entry in a checkpoint (training.checkpoint.AVERAGES)."""

    key = ""

    def __init__(self, model: nn.Module) -> None:
        self.model = copy.deepcopy(model).requires_grad_(False)  # draws no random numbers
        self.updates = 0

    def after_step(self, model: nn.Module) -> None:
        """Called after each optimizer step."""

    def after_epoch(self, model: nn.Module, epoch: int) -> None:
        """Called after each epoch's last step, before validation."""

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's entry: the averaged weights and the update count."""
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])


class MovingAverage(WeightAverage):
    """The exponential moving average: a step's weights count `1 - decay` in it."""

    key = checkpoint.EMA

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__(model)
        self.decay = decay

    def decay_at(self, update: int) -> float:
        """The factor of the average so far at update number `update` (from 0)."""
        return min(self.decay, update / (update + WARMUP))

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        """Fold `model`'s current weights in: average = f * average + (1 - f) * weights, f =
        decay_at(updates), as one fused lerp over all parameters (torch's EMA step)."""
        averaged, current = list(self.model.parameters()), [p.detach() for p in model.parameters()]
        get_ema_multi_avg_fn(self.decay_at(self.updates))(averaged, current, None)
        self.updates += 1


class EpochAverage(WeightAverage):
    """The stochastic weight average: the equal mean of the weights at the end of each epoch from
    `first_epoch` on (the n-th fold moves the average 1/n of the way to the weights: torch's SWA update)."""

    key = checkpoint.SWA

    def __init__(self, model: nn.Module, first_epoch: int) -> None:
        super().__init__(model)
        self.first_epoch = first_epoch

    @torch.no_grad()
    def after_epoch(self, model: nn.Module, epoch: int) -> None:
        if epoch < self.first_epoch:
            return
        averaged, current = list(self.model.parameters()), [p.detach() for p in model.parameters()]
        get_swa_multi_avg_fn()(averaged, current, self.updates)
        self.updates += 1


def build(model: nn.Module, cfg: TrainConfig) -> WeightAverage | None:
    """The run's average of `model` (call once the model is on its device), or None when neither
    ema.decay nor swa.epochs is set: then nothing is copied, computed or saved."""
    if cfg.ema.decay is not None:
        return MovingAverage(model, cfg.ema.decay)
    if cfg.swa.epochs is not None:
        return EpochAverage(model, first_epoch=cfg.epochs - cfg.swa.epochs + 1)
    return None
