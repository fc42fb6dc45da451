"""Whole-batch augmentation and normalisation on the training device (no per-image Python loop)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lenet_fmnist.config import AugmentationConfig
from lenet_fmnist.data import MEAN, STD

# torchvision's RandomErasing: aspect ratios (height / width) from tall strips to wide ones, drawn
# log-uniformly so that h/w and w/h are equally likely; up to 10 sizes drawn per image.
ERASE_RATIO = (0.3, 3.3)
ERASE_ATTEMPTS = 10


@dataclass(frozen=True)
class Erasing:
    """Random erasing (cutout), as torchvision's RandomErasing draws it, on whole batches.

    With probability `p` an image gets one rectangle set to 0, Fashion-MNIST's black background.
    Its area is a fraction of the image's drawn uniformly from [min_area, max_area], its aspect
    ratio log-uniformly from ERASE_RATIO; its sides are rounded to whole pixels, and of up to
    ERASE_ATTEMPTS such sizes the first shorter and narrower than the image is used (none fitting:
    the image stays whole; with areas up to 0.25 the first always fits). It lies inside the image,
    its top-left corner drawn uniformly from the positions where it fits.
    """

    p: float
    min_area: float
    max_area: float

    @classmethod
    def configured(cls, cfg: AugmentationConfig) -> Erasing | None:
        """The run's erasing; None when augmentation.erase_p is 0, so nothing is drawn for it."""
        return cls(cfg.erase_p, cfg.erase_min_area, cfg.erase_max_area) if cfg.erase_p > 0 else None

    def rectangles(
        self, count: int, height: int, width: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Top, left, height and width (int64, `count` each, on the generator's device) of each
        image's rectangle; height and width 0 where an image is not erased."""
        device, tries = generator.device, (count, ERASE_ATTEMPTS)
        erased = torch.rand(count, device=device, generator=generator) < self.p
        area = torch.empty(tries, device=device).uniform_(self.min_area, self.max_area, generator=generator)
        log_ratio = torch.empty(tries, device=device).uniform_(*map(math.log, ERASE_RATIO), generator=generator)
        pixels, ratio = area * (height * width), log_ratio.exp()
        sides = torch.stack([(pixels * ratio).sqrt().round(), (pixels / ratio).sqrt().round()])
        fits = (sides[0] < height) & (sides[1] < width)
        first = fits.int().argmax(dim=1)  # the first attempt that fits (argmax returns the first maximum)
        sides = sides[:, torch.arange(count, device=device), first].long()
        sides *= (erased & fits.any(dim=1)).long()
        corner = torch.rand((2, count), device=device, generator=generator)
        top = (corner[0] * (height - sides[0] + 1)).long()
        left = (corner[1] * (width - sides[1] + 1)).long()
        return top, left, sides[0], sides[1]

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """`images` (uint8 B x H x W) with their rectangles erased; every draw from `generator`."""
        return images if self.p == 0 else self.apply(images, generator)[0]

    def apply(self, images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """`images` with their rectangles erased, and which of them got one (bool, B)."""
        count, height, width = images.shape
        top, left, rows, columns = self.rectangles(count, height, width, generator)
        y = torch.arange(height, device=images.device)
        x = torch.arange(width, device=images.device)
        in_rows = (y >= top[:, None]) & (y < (top + rows)[:, None])
        in_columns = (x >= left[:, None]) & (x < (left + columns)[:, None])
        return images.masked_fill(in_rows[:, :, None] & in_columns[:, None, :], 0), rows > 0


@dataclass(frozen=True)
class Draw:
    """Augmented copies of images (uint8 B x H x W) and what made each: its `variants` (which
    image, mirrored or not, shifted by how much: Augmenter.variant_images rebuilds the copy from
    it) and, when the run erases, which copies erasing changed (`erased`, bool B)."""

    images: torch.Tensor
    variants: torch.Tensor
    erased: torch.Tensor | None


class Augmenter:
    """Draws randomly mirrored, shifted and erased copies of a fixed set of images (uint8 N x H x W).

    Each image is mirrored with probability 0.5 (if `flip`) and shifted by up to `max_shift`
    pixels in x and y, the uncovered border being zero (background); then `erasing`, if any, may
    erase a rectangle of it. The images are prepared once: a zero border of `max_shift` pixels,
    then (if `flip`) their mirror images after them. Every augmented image is then one H x W
    window of that tensor, starting at a random offset in the image or in its mirror image (the
    mirror of a window is a window of the mirror), so a call is a single `index_select` of whole
    windows: ~10x faster than a per-pixel gather on CPU.

    Before erasing, an image has `variants_per_image` possible copies (2 mirrorings x (2 *
    max_shift + 1)^2 shifts); variant v of them all is image v // variants_per_image of the set,
    so a run can label each variant once (training.distill.SoftTargets).
    """

    def __init__(self, images: torch.Tensor, flip: bool, max_shift: int, erasing: Erasing | None = None) -> None:
        self.count, height, width = images.shape
        self.flip, self.max_shift, self.erasing = flip, max_shift, erasing
        self.shifts = 2 * max_shift + 1  # the offsets of a window in x, and in y
        self.variants_per_image = (2 if flip else 1) * self.shifts**2
        padded = F.pad(images, (max_shift,) * 4) if max_shift else images
        # 2x the padded images' memory with flips; the view below keeps it alive.
        source = (torch.cat([padded, padded.flip(-1)]) if flip else padded).contiguous()
        _, padded_height, padded_width = source.shape
        self.image_stride, self.row_stride = padded_height * padded_width, padded_width
        # Every H x W window of the source, one per starting element: a view, nothing is copied.
        starts = source.numel() - (height - 1) * padded_width - width + 1
        self.windows = source.as_strided((starts, height, width), (1, padded_width, 1))

    @property
    def variants(self) -> int:
        """How many distinct copies flips and shifts can make of the images."""
        return self.count * self.variants_per_image

    def __call__(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augmented copies of images `index`, as `draw` makes them."""
        return self.draw(index, generator).images

    def draw(self, index: torch.Tensor, generator: torch.Generator) -> Draw:
        """Augmented copies of images `index` (int64 on the images' device), image i of the result
        made from image index[i]. Every random draw comes from `generator`, so a run is
        reproducible and resumable."""
        batch, device = len(index), index.device
        source_image = index  # in the source: the mirror of image i is image count + i
        if self.flip:
            mirrored = torch.rand(batch, device=device, generator=generator) < 0.5
            source_image = index + mirrored * self.count
        variants = source_image * self.shifts**2
        if self.max_shift:
            offsets = torch.randint(0, self.shifts, (2, batch), device=device, generator=generator)
            variants += offsets[0] * self.shifts + offsets[1]
        images = self.variant_images(variants)
        if self.erasing is None or self.erasing.p == 0:
            return Draw(images, variants, None)
        erased_images, erased = self.erasing.apply(images, generator)
        return Draw(erased_images, variants, erased)

    def variant_images(self, variants: torch.Tensor) -> torch.Tensor:
        """The copies (uint8 B x H x W) that flips and shifts make for `variants` (int64, B)."""
        source_image, offset = variants.div(self.shifts**2, rounding_mode="floor"), variants % self.shifts**2
        rows, columns = offset.div(self.shifts, rounding_mode="floor"), offset % self.shifts
        start = source_image * self.image_stride + rows * self.row_stride + columns
        return self.windows.index_select(0, start)


def augment(
    images: torch.Tensor, flip: bool, max_shift: int, generator: torch.Generator, erasing: Erasing | None = None
) -> torch.Tensor:
    """Augment a whole batch (uint8 B x H x W in and out) as `Augmenter` does."""
    index = torch.arange(len(images), device=images.device)
    return Augmenter(images, flip, max_shift, erasing)(index, generator)


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 B x H x W -> float32 B x 1 x H x W with the training set's mean 0 and std 1."""
    return images.unsqueeze(1).float().mul_(1 / (255 * STD)).sub_(MEAN / STD)
