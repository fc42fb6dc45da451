"""Batch augmentation on the device: per-image random flips and bounded shifts that keep every
image in its place in the batch (so its label still fits), and normalisation."""

from __future__ import annotations

import pytest
import torch

from conftest import random_images, transform_of
from lenet_fmnist.augment import Augmenter, augment, normalise
from lenet_fmnist.data import MEAN, STD


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(("flip", "max_shift"), [(False, 0), (True, 0), (False, 2), (True, 2), (True, 4)])
def test_shape_dtype_and_input_preserved(flip: bool, max_shift: int) -> None:
    images = random_images(16)
    before = images.clone()
    out = augment(images, flip, max_shift, seeded(0))
    assert out.shape == images.shape and out.dtype == torch.uint8 and out.device == images.device
    assert torch.equal(images, before), "augment must not change its input in place"


def test_no_augmentation_is_the_identity() -> None:
    images = random_images(8)
    assert torch.equal(augment(images, False, 0, seeded(0)), images)


@pytest.mark.parametrize(("flip", "max_shift"), [(True, 0), (False, 2), (True, 2)])
def test_each_image_stays_in_its_place(flip: bool, max_shift: int) -> None:
    """Output i is a flip/shift of input i, never of another image: labels still match."""
    images = random_images(32, seed=1)
    out = augment(images, flip, max_shift, seeded(1))
    for index in range(len(images)):
        found = transform_of(out[index], images[index], max_shift)
        assert found is not None, f"image {index} is not a flip/shift of its input"
        mirrored, dy, dx = found
        assert flip or not mirrored
        assert max(abs(dy), abs(dx)) <= max_shift


def test_flip_really_mirrors_about_half_of_the_images() -> None:
    images = random_images(400, seed=2)
    out = augment(images, True, 0, seeded(2))
    mirrored = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, images, strict=True)])
    unchanged = torch.tensor([torch.equal(o, i) for o, i in zip(out, images, strict=True)])
    assert (mirrored ^ unchanged).all(), "every image is either itself or its mirror image"
    assert 0.4 < mirrored.double().mean().item() < 0.6
    # A mirrored image has its columns reversed, rows untouched.
    first = int(mirrored.nonzero()[0])
    assert torch.equal(out[first][:, 0], images[first][:, -1])
    assert torch.equal(out[first][0], images[first][0].flip(0))


def test_shifts_are_bounded_and_cover_the_range() -> None:
    images = random_images(300, seed=3)
    out = augment(images, False, 2, seeded(3))
    shifts = set()
    for o, i in zip(out, images, strict=True):
        found = transform_of(o, i, 2)
        assert found is not None and not found[0]
        shifts.add(found[1:])
    assert shifts <= {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}
    assert len(shifts) >= 20, f"only {sorted(shifts)} of the 25 shifts occurred"


def test_random_per_image_not_per_batch() -> None:
    same = random_images(1, seed=4).expand(64, 28, 28).contiguous()
    out = augment(same, True, 2, seeded(4))
    distinct = {tuple(o.flatten().tolist()) for o in out}
    assert len(distinct) > 20, "identical inputs in one batch must get their own random transforms"
    flips = augment(same, True, 0, seeded(4))
    assert any(torch.equal(o, same[0]) for o in flips) and any(torch.equal(o, same[0].flip(-1)) for o in flips)


def test_reproducible_from_the_generator_alone() -> None:
    images = random_images(64, seed=5)
    global_state = torch.get_rng_state()
    first = augment(images, True, 2, seeded(7))
    assert torch.equal(torch.get_rng_state(), global_state), "augmentation must not draw from the global RNG"
    torch.manual_seed(999)
    assert torch.equal(augment(images, True, 2, seeded(7)), first)
    assert not torch.equal(augment(images, True, 2, seeded(8)), first)


def test_generator_advances_between_batches() -> None:
    images = random_images(64, seed=6)
    generator = seeded(0)
    assert not torch.equal(augment(images, True, 2, generator), augment(images, True, 2, generator))


@pytest.mark.parametrize(("flip", "max_shift"), [(False, 0), (True, 0), (False, 2), (True, 2)])
def test_augmenter_draws_the_indexed_images(flip: bool, max_shift: int) -> None:
    """Output i comes from image index[i], for any order and repeats; the last image, whose
    mirrored and most shifted window ends at the last byte of the prepared tensor, included."""
    images = random_images(12, seed=9)
    index = torch.cat([torch.tensor([11] * 40), torch.randperm(12, generator=seeded(9)), torch.tensor([0, 0, 5])])
    out = Augmenter(images, flip, max_shift)(index, seeded(9))
    assert out.shape == (len(index), 28, 28) and out.dtype == torch.uint8
    transforms = set()
    for position, source in enumerate(index.tolist()):
        found = transform_of(out[position], images[source], max_shift)
        assert found is not None, f"output {position} is not a flip/shift of image {source}"
        assert (flip or not found[0]) and max(abs(found[1]), abs(found[2])) <= max_shift
        if source == 11:
            transforms.add(found)
    if flip and max_shift:  # 40 draws of the last image reach its extreme windows
        assert {(True, 2), (True, -2)} & {(m, dx) for m, _, dx in transforms}


def test_augmenter_leaves_the_images_alone() -> None:
    images = random_images(10, seed=10)
    before = images.clone()
    augmenter = Augmenter(images, True, 2)
    augmenter(torch.arange(10), seeded(0))
    assert torch.equal(images, before)


def test_normalise() -> None:
    images = random_images(4)
    out = normalise(images)
    assert out.shape == (4, 1, 28, 28) and out.dtype == torch.float32
    expected = (images.double() / 255 - MEAN) / STD
    torch.testing.assert_close(out[:, 0].double(), expected, rtol=0, atol=1e-5)
    assert torch.equal(images, random_images(4)), "normalise must not change its input"
