"""LeNet-5 as in the study: two 5x5 convolutions with pooling, then three fully connected layers."""

from __future__ import annotations

import itertools

import torch
from torch import nn

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "elu": nn.ELU,  # alpha 1: x for x > 0, exp(x) - 1 below
    "gelu": nn.GELU,  # x * Phi(x), the exact erf form
    "silu": nn.SiLU,  # x * sigmoid(x), also called swish
}
# Increasing activations commute with max pooling: max(act(x)) = act(max(x)). GELU and SiLU dip
# below zero for negative inputs (minima near x = -0.75 and x = -1.28), so they do not.
MONOTONIC = {"relu", "tanh", "sigmoid", "elu"}
POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}
# Weights (and so activations) in NHWC order: oneDNN's convolutions and pooling run markedly
# faster in it on CPU (an A/B of the training step at batch 64 on 2 AVX2 cores, 2026-11-25:
# 10.0 s per epoch in NCHW, 7.9 s in NHWC). 1-channel inputs are valid NHWC as they are.
CHANNELS_LAST = torch.channels_last


class LeNet5(nn.Module):
    """conv 1->6 5x5 pad 2, act, pool 2 -> conv 6->16 5x5, act, pool 2 -> FC 400->120 -> 84 -> 10.

    61,706 parameters whatever the activation, pooling or dropout. `width` multiplies every hidden
    layer's channels and units (model=lenet5_wide: 4, 972,554 parameters, a teacher for
    distillation); the layout stays the study's. Dropout (when p > 0) sits before
    each fully connected layer. Inputs are normalised 1 x 28 x 28 images; outputs are logits.

    With max pooling an increasing activation (MONOTONIC) runs after the pooling: max(act(x)) =
    act(max(x)), so the outputs and gradients are the same, but the activation and its backward
    touch 4x fewer values (~5% of a training step with relu, ~9% with tanh). Average pooling, and
    the activations that are not increasing (gelu, silu), keep the textbook conv -> act -> pool.
    """

    def __init__(self, activation: str = "tanh", pool: str = "avg", dropout: float = 0.0, width: int = 1) -> None:
        super().__init__()
        act, pooling = ACTIVATIONS[activation], POOLS[pool]
        conv1, conv2, fc1, fc2 = 6 * width, 16 * width, 120 * width, 84 * width

        def drop() -> nn.Module:  # p=0 adds no layer, so "no dropout" costs nothing per step
            return nn.Dropout(dropout) if dropout > 0 else nn.Identity()

        def act_pool() -> list[nn.Module]:
            pool_first = pool == "max" and activation in MONOTONIC
            return [pooling(2), act()] if pool_first else [act(), pooling(2)]

        self.features = nn.Sequential(
            nn.Conv2d(1, conv1, kernel_size=5, padding=2), *act_pool(),
            nn.Conv2d(conv1, conv2, kernel_size=5), *act_pool(),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Flatten(),
            drop(), nn.Linear(conv2 * 5 * 5, fc1), act(),
            drop(), nn.Linear(fc1, fc2), act(),
            drop(), nn.Linear(fc2, 10),
        )  # fmt: skip

    def forward(self, x: torch.Tensor, dropout_masks: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Logits of `x`. `dropout_masks`, in training, are the dropout layers' scaled keep-masks
        for these images (`draw_dropout_masks`): drawn for a whole batch before it is split into
        shards, so that which image loses which units does not depend on the split. Without them
        the dropout layers draw their own."""
        features = self.features(x)
        if dropout_masks is None:
            return self.classifier(features)
        masks = iter(dropout_masks)
        for layer in self.classifier:
            features = features * next(masks) if isinstance(layer, nn.Dropout) else layer(features)
        return features

    def draw_dropout_masks(self, images: int, device: torch.device) -> list[torch.Tensor] | None:
        """One scaled keep-mask per dropout layer for a batch of `images`, from torch's global
        generator, as nn.Dropout draws them on the CPU (keep with probability 1 - p, kept units
        scaled by 1 / (1 - p)); None in eval mode or without dropout."""
        if not self.training:
            return None
        layers = list(self.classifier)  # each dropout layer is followed by the linear layer it feeds
        masks = [
            torch.empty(images, after.in_features, device=device).bernoulli_(1 - layer.p).div_(1 - layer.p)
            for layer, after in itertools.pairwise(layers)
            if isinstance(layer, nn.Dropout)
        ]
        return masks or None
