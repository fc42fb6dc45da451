"""Whole-batch augmentation and normalisation on the training device (no per-image Python loop)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lenet_fmnist.data import MEAN, STD


def augment(images: torch.Tensor, flip: bool, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Per image: a horizontal flip with probability 0.5 and a shift of up to `max_shift` pixels
    in x and y, the uncovered border filled with 0 (the background). uint8 B x H x W in and out.

    Every random draw comes from `generator`, so a run is reproducible and resumable.
    """
    batch, height, width = images.shape
    device = images.device
    if flip:
        mirrored = torch.rand(batch, device=device, generator=generator) < 0.5
        images = torch.where(mirrored[:, None, None], images.flip(-1), images)
    if max_shift > 0:
        # Crop a H x W window at a random offset out of the zero-padded image: a gather with
        # per-image row and column indices does the whole batch in one operation.
        padded = F.pad(images, (max_shift,) * 4)
        offsets = torch.randint(0, 2 * max_shift + 1, (2, batch), device=device, generator=generator)
        rows = offsets[0, :, None] + torch.arange(height, device=device)
        cols = offsets[1, :, None] + torch.arange(width, device=device)
        batch_index = torch.arange(batch, device=device)[:, None, None]
        images = padded[batch_index, rows[:, :, None], cols[:, None, :]]
    return images


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 B x H x W -> float32 B x 1 x H x W with the training set's mean 0 and std 1."""
    return ((images.float() / 255.0 - MEAN) / STD).unsqueeze(1)
