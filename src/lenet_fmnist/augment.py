"""Whole-batch augmentation and normalisation on the training device (no per-image Python loop)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lenet_fmnist.data import MEAN, STD


def pad_images(images: torch.Tensor, pad: int) -> torch.Tensor:
    """A zero (background) border of `pad` pixels around every image: done once per run, so each
    batch is then a single gather (see `augmented_batch`)."""
    return F.pad(images, (pad,) * 4) if pad else images


def augmented_batch(
    padded: torch.Tensor, index: torch.Tensor, pad: int, flip: bool, max_shift: int, generator: torch.Generator
) -> torch.Tensor:
    """Images `index` of `padded` (uint8 N x H+2pad x W+2pad), each mirrored with probability 0.5
    (if `flip`) and shifted by up to `max_shift` <= `pad` pixels in x and y, the uncovered border
    being the zero padding. Returns uint8 B x H x W.

    Selecting, mirroring and shifting are one gather with per-image row and column indices: each
    image's crop window starts at a random offset, and reversing the window's column order mirrors
    it. Every random draw comes from `generator`, so a run is reproducible and resumable.
    """
    height, width = padded.shape[1] - 2 * pad, padded.shape[2] - 2 * pad
    if not flip and max_shift == 0:
        return padded[index, pad : pad + height, pad : pad + width]
    batch, device = len(index), padded.device
    offsets = pad + torch.randint(-max_shift, max_shift + 1, (2, batch), device=device, generator=generator)
    rows = offsets[0, :, None] + torch.arange(height, device=device)
    cols = offsets[1, :, None] + torch.arange(width, device=device)
    if flip:
        mirrored = torch.rand(batch, device=device, generator=generator) < 0.5
        cols = torch.where(mirrored[:, None], cols.flip(-1), cols)
    return padded[index[:, None, None], rows[:, :, None], cols[:, None, :]]


def augment(images: torch.Tensor, flip: bool, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Augment a whole batch (uint8 B x H x W in and out) as `augmented_batch` does."""
    index = torch.arange(len(images), device=images.device)
    return augmented_batch(pad_images(images, max_shift), index, max_shift, flip, max_shift, generator)


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 B x H x W -> float32 B x 1 x H x W with the training set's mean 0 and std 1."""
    return images.unsqueeze(1).float().mul_(1 / (255 * STD)).sub_(MEAN / STD)
