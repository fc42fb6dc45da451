"""The optimizer and the learning-rate schedule of a training run, built from its config."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from lenet_fmnist.config import AdamConfig, OptimizerConfig, RMSpropConfig, Schedule, SGDConfig


def steps_per_epoch(images: int, batch_size: int) -> int:
    """Optimizer steps in an epoch over `images` training images: the last batch may be short."""
    return math.ceil(images / batch_size)


def build_optimizer(cfg: OptimizerConfig, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The configured optimizer in its fastest exact form: fused kernels where torch has them
    (SGD, Adam; one kernel for all parameters instead of several per tensor), else foreach."""
    if isinstance(cfg, SGDConfig):
        return torch.optim.SGD(
            parameters,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
            fused=True,
        )
    if isinstance(cfg, AdamConfig):
        return torch.optim.Adam(
            parameters, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=cfg.weight_decay, fused=True
        )
    if isinstance(cfg, RMSpropConfig):
        return torch.optim.RMSprop(
            parameters,
            lr=cfg.lr,
            alpha=cfg.alpha,
            momentum=cfg.momentum,
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            foreach=True,
        )
    raise TypeError(f"no optimizer for {type(cfg).__name__}")


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimizerConfig, *, steps_per_epoch: int, epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step learning-rate factor: linear warm-up from 1/10 over `warmup_epochs`, then constant
    or a cosine decay to 0 at the last step."""
    warmup = cfg.warmup_epochs * steps_per_epoch
    total = epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warmup:
            return 0.1 + 0.9 * step / warmup
        if cfg.schedule is Schedule.cosine:
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
