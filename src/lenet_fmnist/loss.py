"""The training loss: cross-entropy, with label smoothing when `label_smoothing` > 0.

Only training uses it. Validation and test report plain cross-entropy (evaluate.evaluate), so
their losses compare across runs whatever each trained with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def training_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Mean cross-entropy of `logits` (N x classes) against targets smoothed by e =
    `label_smoothing`: 1 - e on the true class plus e / classes on every class, that is
    (1 - e) * CE + e * (mean over classes of -log p), as torch's cross_entropy defines it. At
    e = 0 it is plain cross-entropy, bit for bit."""
    return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
