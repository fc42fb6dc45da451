"""The training objective: label smoothing as defined, and plain cross-entropy when it is off."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lenet_fmnist.training.step import Objective


def batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return 3 * torch.randn(32, 10, generator=generator), torch.randint(0, 10, (32,), generator=generator)


def training_loss(logits: torch.Tensor, targets: torch.Tensor, smoothing: float) -> torch.Tensor:
    return Objective(smoothing, None)(logits, targets, None)


@pytest.mark.parametrize("smoothing", [0.05, 0.1, 0.5, 0.9])
def test_label_smoothing_is_the_mix_of_cross_entropy_and_the_mean_over_classes(smoothing: float) -> None:
    logits, targets = batch(0)
    wide = logits.double()
    log_p = wide - wide.exp().sum(dim=1, keepdim=True).log()  # log-softmax, by hand
    cross_entropy = -log_p[torch.arange(32), targets]
    uniform = -log_p.mean(dim=1)  # the mean over the 10 classes of -log p
    expected = ((1 - smoothing) * cross_entropy + smoothing * uniform).mean()
    got = training_loss(logits, targets, smoothing)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=0)
    assert abs(got.item() - cross_entropy.mean().item()) > 1e-3, "control: smoothing changes the loss"


def test_no_smoothing_is_plain_cross_entropy_bit_for_bit() -> None:
    logits, targets = batch(1)
    ours, plain = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    loss = training_loss(ours, targets, 0.0)
    reference = F.cross_entropy(plain, targets)
    assert torch.equal(loss, reference)
    loss.backward()
    reference.backward()
    assert torch.equal(ours.grad, plain.grad)
