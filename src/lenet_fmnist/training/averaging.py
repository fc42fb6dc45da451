"""An exponential moving average (EMA) of the weights, kept beside the trained model.

Updated after every optimizer step; validation, the choice of the best epoch, the test, `eval`,
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
from torch.optim.swa_utils import get_ema_multi_avg_fn

WARMUP = 9  # update n uses min(decay, n / (n + WARMUP)): TensorFlow's num_updates rule


class WeightAverage:
    """The moving average of `model`'s parameters, as a copy of the model (`self.model`, on the
    same device, never trained) that evaluation runs. LeNet-5 has parameters only, no buffers."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).requires_grad_(False)  # draws no random numbers
        self.updates = 0

    def decay_at(self, update: int) -> float:
        """The factor of the average so far at update number `update` (from 0)."""
        return min(self.decay, update / (update + WARMUP))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold `model`'s current weights in: average = f * average + (1 - f) * weights, f =
        decay_at(updates), as one fused lerp over all parameters (torch's EMA step). Call it after
        each optimizer step."""
        averaged, current = list(self.model.parameters()), [p.detach() for p in model.parameters()]
        get_ema_multi_avg_fn(self.decay_at(self.updates))(averaged, current, None)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's "ema" entry: the averaged weights and the update count."""
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])


def build(model: nn.Module, decay: float | None) -> WeightAverage | None:
    """The run's average of `model` (call once the model is on its device), or None when
    ema.decay is null: then nothing is copied, computed or saved."""
    return None if decay is None else WeightAverage(model, decay)
