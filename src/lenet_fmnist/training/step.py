"""One optimizer step whose arithmetic is fixed by the config, never by the machine's load.

A batch is split into `shards` parts (the config's `shards`). Each part's forward and backward run
on one thread of the run's team (lenet_fmnist.workers), with one intra-op thread, and give the
gradient of that part's share of the batch's mean loss; the parts' gradients are then added in
their order and the optimizer steps once. How many parts run at once (the team's size, which may
follow the load) changes the speed, never a bit. On a GPU the whole batch is one part: CPU
threads do not touch a GPU's arithmetic.

The batch's dropout masks are drawn before it is split (model.LeNet5.draw_dropout_masks), from
torch's global generator in the caller's thread, so shards draw nothing in parallel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lenet_fmnist.model import LeNet5
from lenet_fmnist.training import distill
from lenet_fmnist.training.augment import normalise
from lenet_fmnist.training.averaging import WeightAverage
from lenet_fmnist.workers import Workers


@dataclass(frozen=True)
class Shard:
    """One part of a batch: its uint8 images and labels, the teachers' logits for them (when the
    run distils) and its rows of the batch's dropout masks (when the model drops out)."""

    images: torch.Tensor
    targets: torch.Tensor
    soft_targets: torch.Tensor | None
    dropout_masks: list[torch.Tensor] | None


@dataclass(frozen=True)
class ShardResult:
    gradients: tuple[torch.Tensor, ...]  # of the shard's share of the batch's mean loss
    loss_sum: torch.Tensor  # the shard's summed training loss (for the epoch's mean)
    correct: torch.Tensor  # how many of its images the model classified right


def split(batch: Shard, shards: int) -> list[Shard]:
    """`batch` in at most `shards` consecutive parts of (nearly) equal size, none empty."""
    count = min(shards, len(batch.targets))

    def parts(tensor: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        return (None,) * count if tensor is None else tensor.tensor_split(count)

    images, targets, soft_targets = parts(batch.images), parts(batch.targets), parts(batch.soft_targets)
    masks = [parts(mask) for mask in batch.dropout_masks or []]
    return [
        Shard(images[index], targets[index], soft_targets[index], [mask[index] for mask in masks] or None)
        for index in range(count)
    ]


@dataclass(frozen=True)
class Objective:
    """What a step minimises: the mean cross-entropy of the logits against targets smoothed by e =
    `label_smoothing` (1 - e on the true class plus e / classes on every class, that is (1 - e) * CE
    + e * the mean over classes of -log p, as torch's cross_entropy defines it; plain
    cross-entropy at e = 0), mixed with the teachers' soft targets when the run distils
    (`distillation`). Validation and test report plain cross-entropy, so their losses compare
    across runs whatever each trained with."""

    label_smoothing: float
    distillation: distill.Distillation | None

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor, soft_targets: torch.Tensor | None) -> torch.Tensor:
        loss = F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
        if self.distillation is None:
            return loss
        return self.distillation.loss(loss, logits, soft_targets)


@dataclass(frozen=True)
class Updates:
    """How a step's gradients change the weights: the `optimizer`, its per-step `scheduler`, and
    the weight `average` told of every step (None: none kept)."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    average: WeightAverage | None = None

    def apply(self, model: LeNet5) -> None:
        self.optimizer.step()
        self.scheduler.step()
        if self.average is not None:
            self.average.after_step(model)


class ShardedStep:
    """The training step of a run: `model`'s parameters changed by `updates` from the gradient of
    `objective` over a batch's shards, computed by `workers`. On the CPU a batch is cut into
    `shards` parts; on a GPU it is one."""

    def __init__(self, model: LeNet5, updates: Updates, objective: Objective, *, workers: Workers, shards: int) -> None:
        self.model, self.updates, self.objective, self.workers = model, updates, objective, workers
        self.parameters = list(model.parameters())
        self.shards = shards if self.parameters[0].device.type == "cpu" else 1

    def __call__(
        self, images: torch.Tensor, targets: torch.Tensor, soft_targets: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step on a batch of uint8 `images` with their `targets` (and the teachers' logits);
        the batch's summed loss and correct count (on the device: no host sync)."""
        masks = self.model.draw_dropout_masks(len(targets), targets.device)
        parts = split(Shard(images, targets, soft_targets, masks), self.shards)
        results = self.workers.map(lambda shard: self._shard(shard, len(targets)), parts)
        gradients = list(results[0].gradients)
        for result in results[1:]:  # in the shards' order: the sum's rounding is fixed
            for total, gradient in zip(gradients, result.gradients, strict=True):
                total.add_(gradient)
        for parameter, gradient in zip(self.parameters, gradients, strict=True):
            parameter.grad = gradient
        self.updates.apply(self.model)
        loss_sum, correct = results[0].loss_sum, results[0].correct
        for result in results[1:]:
            loss_sum, correct = loss_sum + result.loss_sum, correct + result.correct
        return loss_sum, correct

    def _shard(self, shard: Shard, batch_size: int) -> ShardResult:
        """Forward and backward of one shard, on this thread: the gradient of its share of the
        batch's mean loss (its own mean, weighted by its share of the images)."""
        logits = self.model(normalise(shard.images), shard.dropout_masks)
        loss = self.objective(logits, shard.targets, shard.soft_targets)
        images = len(shard.targets)
        gradients = torch.autograd.grad(loss * (images / batch_size), self.parameters)
        correct = (logits.detach().argmax(dim=1) == shard.targets).sum()
        return ShardResult(gradients, loss.detach() * images, correct)
