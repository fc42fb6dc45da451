"""Whole-batch augmentation and normalisation on the training device (no per-image Python loop)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lenet_fmnist.data import MEAN, STD


class Augmenter:
    """Draws randomly mirrored and shifted copies of a fixed set of images (uint8 N x H x W).

    Each image is mirrored with probability 0.5 (if `flip`) and shifted by up to `max_shift`
    pixels in x and y, the uncovered border being zero (background). The images are prepared once:
    a zero border of `max_shift` pixels, then (if `flip`) their mirror images after them. Every
    augmented image is then one H x W window of that tensor, starting at a random offset in the
    image or in its mirror image (the mirror of a window is a window of the mirror), so a call is
    a single `index_select` of whole windows: ~10x faster than a per-pixel gather on CPU.
    """

    def __init__(self, images: torch.Tensor, flip: bool, max_shift: int) -> None:
        self.count, height, width = images.shape
        self.flip, self.max_shift = flip, max_shift
        padded = F.pad(images, (max_shift,) * 4) if max_shift else images
        # 2x the padded images' memory with flips; the view below keeps it alive.
        source = (torch.cat([padded, padded.flip(-1)]) if flip else padded).contiguous()
        _, padded_height, padded_width = source.shape
        self.image_stride, self.row_stride = padded_height * padded_width, padded_width
        # Every H x W window of the source, one per starting element: a view, nothing is copied.
        starts = source.numel() - (height - 1) * padded_width - width + 1
        self.windows = source.as_strided((starts, height, width), (1, padded_width, 1))

    def __call__(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augmented copies of images `index` (int64 on the images' device), uint8 B x H x W,
        image i of the result made from image index[i]. Every random draw comes from `generator`,
        so a run is reproducible and resumable."""
        batch, device = len(index), index.device
        start = index * self.image_stride
        if self.flip:
            mirrored = torch.rand(batch, device=device, generator=generator) < 0.5
            start += mirrored * (self.count * self.image_stride)
        if self.max_shift:
            offsets = torch.randint(0, 2 * self.max_shift + 1, (2, batch), device=device, generator=generator)
            start += offsets[0] * self.row_stride + offsets[1]
        return self.windows.index_select(0, start)


def augment(images: torch.Tensor, flip: bool, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Augment a whole batch (uint8 B x H x W in and out) as `Augmenter` does."""
    index = torch.arange(len(images), device=images.device)
    return Augmenter(images, flip, max_shift)(index, generator)


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 B x H x W -> float32 B x 1 x H x W with the training set's mean 0 and std 1."""
    return images.unsqueeze(1).float().mul_(1 / (255 * STD)).sub_(MEAN / STD)
