"""Batch augmentation on the device: per-image random flips and bounded shifts that keep every
image in its place in the batch (so its label still fits), random erasing drawn as torchvision's
RandomErasing draws it, and normalisation."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms import RandomErasing

from conftest import random_images, transform_of
from lenet_fmnist.config import TrainConfig, compose
from lenet_fmnist.data import MEAN, STD
from lenet_fmnist.training.augment import ERASE_RATIO, Augmenter, Erasing, augment, normalise


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


# ---- random erasing ------------------------------------------------------------------------

SIDE = 28
DRAWS = 4000  # images per statistical test: a 10-bin chi-square expects 400 per bin
P_FLOOR = 1e-3  # a right implementation fails a test at this p-value once in a thousand seeds


def chi_square_p(statistic: float, df: int) -> float:
    """P(chi-square with `df` degrees of freedom >= statistic): the regularised upper gamma."""
    return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64), torch.tensor(statistic / 2)))


def homogeneity_p(first: torch.Tensor, second: torch.Tensor) -> float:
    """Chi-square test that two samples of category numbers come from one distribution."""
    categories = int(max(first.max(), second.max())) + 1
    table = torch.stack([torch.bincount(sample, minlength=categories) for sample in (first, second)]).double()
    table = table[:, table.sum(0) > 0]
    expected = table.sum(1, keepdim=True) * table.sum(0, keepdim=True) / table.sum()
    return chi_square_p(float(((table - expected) ** 2 / expected).sum()), table.shape[1] - 1)


def measured_rectangles(out: torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Top, left, height and width of the rectangle erased in each of `out`, read off the images
    (`images` have no zero pixel); height 0 where none was. Asserts that each image's zero pixels
    form one full rectangle and that the rest of the image is untouched."""
    zeros = out == 0
    rows, columns = zeros.any(dim=2), zeros.any(dim=1)
    height, width = rows.sum(dim=1), columns.sum(dim=1)
    top, left = rows.int().argmax(dim=1), columns.int().argmax(dim=1)
    span = torch.arange(SIDE)
    assert torch.equal(rows, (span >= top[:, None]) & (span < (top + height)[:, None])), "rows not contiguous"
    assert torch.equal(columns, (span >= left[:, None]) & (span < (left + width)[:, None])), "columns not contiguous"
    assert torch.equal(zeros, rows[:, :, None] & columns[:, None, :]), "the erased pixels are not a rectangle"
    assert torch.equal(out[~zeros], images[~zeros]), "pixels outside the rectangle changed"
    return top, left, height, width


@pytest.fixture(scope="module")
def erased() -> tuple[torch.Tensor, ...]:
    """DRAWS images, each with one rectangle erased (p = 1, the default size range), measured."""
    images = random_images(DRAWS, seed=11)
    out = Erasing(1.0, 0.02, 0.25)(images, seeded(11))
    assert out.shape == images.shape and out.dtype == torch.uint8
    return measured_rectangles(out, images)


def test_every_rectangle_lies_inside_the_image_within_the_area_and_aspect_ranges(
    erased: tuple[torch.Tensor, ...],
) -> None:
    top, left, height, width = (value.double() for value in erased)
    assert (height >= 1).all() and (width >= 1).all(), "p = 1 erases every image"
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + height <= SIDE).all() and (left + width <= SIDE).all()
    # Sides are whole pixels rounded from a real rectangle whose area (a fraction of 784 pixels)
    # and aspect ratio lie in their ranges: the rounded sides are within half a pixel of it.
    pixels = SIDE * SIDE
    assert ((height - 0.5) * (width - 0.5) <= 0.25 * pixels).all()
    assert ((height + 0.5) * (width + 0.5) >= 0.02 * pixels).all()
    assert ((height - 0.5) / (width + 0.5) <= ERASE_RATIO[1]).all()
    assert ((height + 0.5) / (width - 0.5) >= ERASE_RATIO[0]).all()


def test_the_position_is_uniform_over_the_places_where_the_rectangle_fits(erased: tuple[torch.Tensor, ...]) -> None:
    """Top (and left) is uniform on 0 .. 28 - height: (top + u) / (29 - height), u uniform in
    [0, 1), is then exactly uniform in [0, 1), which a 10-bin chi-square tests."""
    top, left, height, width = erased
    jitter = torch.rand((2, DRAWS), generator=seeded(12), dtype=torch.float64)
    for corner, side, u in ((top, height, jitter[0]), (left, width, jitter[1])):
        spread = (corner + u) / (SIDE + 1 - side)
        counts = torch.bincount((spread * 10).long(), minlength=10).double()
        assert chi_square_p(float(((counts - DRAWS / 10) ** 2 / (DRAWS / 10)).sum()), 9) > P_FLOOR, counts.tolist()
    # And the extreme places do occur: the rectangle reaches every border.
    assert (top == 0).any() and (left == 0).any()
    assert (top + height == SIDE).any() and (left + width == SIDE).any()


def torchvision_sizes(count: int, min_area: float, max_area: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Heights and widths drawn by torchvision's RandomErasing.get_params (0 where none of its 10
    draws fits, when it answers with the whole image), from a private copy of the global RNG."""
    image = torch.zeros(1, SIDE, SIDE)
    with torch.random.fork_rng():
        torch.manual_seed(13)
        drawn = [RandomErasing.get_params(image, (min_area, max_area), ERASE_RATIO, [0])[2:4] for _ in range(count)]
    sides = torch.tensor(drawn)
    sides[sides[:, 0] == SIDE] = 0
    return sides[:, 0], sides[:, 1]


def size_categories(
    height: torch.Tensor, width: torch.Tensor, edges: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """0: nothing erased; else 1 + the cell of the rectangle's area and aspect ratio (bins by `edges`)."""
    area_bin = torch.bucketize(height * width, edges[0])
    ratio_bin = torch.bucketize(height / width.clamp(min=1), edges[1])
    return torch.where(height == 0, 0, 1 + area_bin * (len(edges[1]) + 1) + ratio_bin)


def pooled_edges(sides: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Bin edges of area (8 bins) and aspect ratio (4 bins) at the quantiles of both samples."""
    height, width = (torch.cat(side).double() for side in zip(*sides, strict=True))
    erased = height > 0
    areas, ratios = (height * width)[erased], (height / width)[erased]
    return torch.quantile(areas, torch.linspace(0, 1, 9, dtype=torch.float64)[1:-1]), torch.quantile(
        ratios, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)
    )


@pytest.mark.parametrize(("min_area", "max_area"), [(0.02, 0.25), (0.6, 0.95)])
def test_sizes_are_distributed_as_torchvisions_random_erasing(min_area: float, max_area: float) -> None:
    """Area and aspect ratio of the erased rectangles, and how often none fits (common in the
    second range, where torchvision gives up after 10 draws), against torchvision's own draws."""
    _, _, height, width = Erasing(1.0, min_area, max_area).rectangles(DRAWS, SIDE, SIDE, seeded(14))
    theirs = torchvision_sizes(DRAWS, min_area, max_area)
    edges = pooled_edges([(height, width), theirs])
    p = homogeneity_p(size_categories(height, width, edges), size_categories(*theirs, edges))
    assert p > P_FLOOR
    none = (height == 0).double().mean().item()
    assert none == 0.0 if max_area <= 0.25 else none > 0.02, "with areas up to 0.25 the first draw always fits"
    assert ((height == 0) == (width == 0)).all()


def test_the_erasing_probability(erased: tuple[torch.Tensor, ...]) -> None:
    p = 0.3
    images = random_images(DRAWS, seed=15)
    _, _, height, _ = measured_rectangles(Erasing(p, 0.02, 0.25)(images, seeded(15)), images)
    count = int((height > 0).sum())
    z = (count - DRAWS * p) / math.sqrt(DRAWS * p * (1 - p))
    assert abs(z) < 4, f"{count} of {DRAWS} erased at p = {p}"


def test_erasing_off_draws_nothing_and_changes_nothing() -> None:
    """erase_p = 0 (the default) builds no erasing; and erasing at p = 0 draws no number: the
    study's augmentation stays bit for bit what it was."""
    assert Erasing.configured(compose("train", "augmentation=standard", schema=TrainConfig).augmentation) is None
    images, generator = random_images(64, seed=16), seeded(16)
    before = generator.get_state()
    assert Erasing(0.0, 0.02, 0.25)(images, generator) is images
    assert torch.equal(generator.get_state(), before)
    erasing = ("augmentation.erase_p=0.5", "augmentation.erase_min_area=0.1", "augmentation.erase_max_area=0.2")
    on = Erasing.configured(compose("train", "augmentation=standard", *erasing, schema=TrainConfig).augmentation)
    assert on == Erasing(0.5, 0.1, 0.2)
    # With erasing off, an Augmenter draws exactly what it drew before erasing existed.
    index = torch.arange(64)
    plain, off = seeded(17), seeded(17)
    assert torch.equal(Augmenter(images, True, 2)(index, plain), Augmenter(images, True, 2, None)(index, off))
    assert torch.equal(plain.get_state(), off.get_state())


def test_erasing_comes_after_the_flip_and_shift_from_the_same_generator() -> None:
    """The Augmenter's output is its flipped and shifted windows, then the rectangles that the
    next draws of the same generator give, erased: one generator, a fixed order of draws."""
    images, index = random_images(200, seed=18), torch.randint(0, 200, (300,), generator=seeded(18))
    erasing = Erasing(0.7, 0.05, 0.3)
    expected_generator = seeded(19)
    windows = Augmenter(images, True, 2)(index, expected_generator)
    top, left, height, width = erasing.rectangles(len(index), SIDE, SIDE, expected_generator)
    span = torch.arange(SIDE)
    rows = (span >= top[:, None]) & (span < (top + height)[:, None])
    columns = (span >= left[:, None]) & (span < (left + width)[:, None])
    expected = windows.masked_fill(rows[:, :, None] & columns[:, None, :], 0)
    generator = seeded(19)
    out = Augmenter(images, True, 2, erasing)(index, generator)
    assert torch.equal(out, expected)
    assert torch.equal(generator.get_state(), expected_generator.get_state())
    assert 0 < int((height > 0).sum()) < len(index)
    # augment(), which draws the TensorBoard preview, erases the same way.
    batch = images[:64]
    assert torch.equal(
        augment(batch, True, 2, seeded(20), erasing), Augmenter(batch, True, 2, erasing)(torch.arange(64), seeded(20))
    )


def test_erasing_is_reproducible_from_its_generator_alone() -> None:
    images = random_images(64, seed=21)
    erasing = Erasing(0.5, 0.02, 0.25)
    global_state = torch.get_rng_state()
    first = erasing(images, seeded(22))
    assert torch.equal(torch.get_rng_state(), global_state), "erasing must not draw from the global RNG"
    assert torch.equal(erasing(images, seeded(22)), first)
    assert not torch.equal(erasing(images, seeded(23)), first)
    assert torch.equal(images, random_images(64, seed=21)), "erasing must not change its input"
