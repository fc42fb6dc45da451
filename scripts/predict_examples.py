"""Example inputs for `predict`, as in docs/predict-export.md (docs/figures/predictions.png).

Writes into DIR: eight real Fashion-MNIST test images (PNG, one per class shown), and images that
look like a user's own: the test items negated (dark on light), enlarged, placed off-centre on a
light, uneven, noisy background and saved as JPEG; a small item in the corner of a large
picture; a coloured cutout with a transparent background (RGBA); and two garments drawn as
polygons, dark on white, as one might sketch them.

    python scripts/predict_examples.py examples/
    python -m lenet_fmnist predict checkpoint=outputs/runs/<run>/checkpoints/best.pt images=examples/
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from lenet_fmnist import data

REAL = (0, 1, 2, 3, 8, 9, 12, 17)  # test images 0-17: Ankle boot, Pullover, Trouser, ... (8 classes)


def _first(labels: np.ndarray, name: str, skip: int = 0) -> int:
    return int(np.flatnonzero(labels == data.CLASSES.index(name))[skip])


def _background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A light sheet lit from one side: a gradient from 245 to 205 plus pixel noise."""
    gradient = np.linspace(245, 205, width)[None, :].repeat(height, axis=0)
    return gradient + rng.normal(0, 4, size=(height, width))


def _photo(item: np.ndarray, size: tuple[int, int], scale: int, at: tuple[int, int], rng) -> Image.Image:
    """`item` (light on black, 28 x 28) negated, enlarged `scale` times, darkening the
    background at `at` (top, left)."""
    canvas = _background(*size, rng)
    big = np.asarray(Image.fromarray(item).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC), dtype=float)
    top, left = at
    window = canvas[top : top + 28 * scale, left : left + 28 * scale]
    window[:] = np.minimum(window, 255 - big)
    return Image.fromarray(canvas.clip(0, 255).astype(np.uint8))


def _cutout(item: np.ndarray, colour: tuple[int, int, int]) -> Image.Image:
    """A coloured item, darker where the data is brighter, on a transparent background (RGBA)."""
    big = np.asarray(Image.fromarray(item).resize((280, 280), Image.Resampling.BICUBIC), dtype=float) / 255
    rgba = np.zeros((280, 280, 4), dtype=np.uint8)
    rgba[..., :3] = (np.array(colour) * (1 - 0.6 * big[..., None])).astype(np.uint8)
    rgba[..., 3] = np.where(big > 0.05, 255, 0)
    return Image.fromarray(rgba)


def _drawing(polygon: list[tuple[int, int]]) -> Image.Image:
    picture = Image.new("L", (400, 400), 250)
    ImageDraw.Draw(picture).polygon(polygon, fill=60, outline=20, width=4)
    return picture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="directory to write the images into (created)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=False)
    test = data.load_test(None)
    images, labels = test.images.numpy(), test.labels.numpy()
    rng = np.random.default_rng(0)
    for index in REAL:
        name = data.CLASSES[labels[index]].split("/")[0].lower().replace(" ", "-")
        Image.fromarray(images[index]).save(args.out / f"test{index:02d}-{name}.png")
    sneaker, bag, dress = (_first(labels, name, 3) for name in ("Sneaker", "Bag", "Dress"))
    _photo(images[sneaker], (600, 800), 12, (150, 380), rng).save(args.out / "photo-sneaker.jpg", quality=85)
    _photo(images[bag], (480, 640), 3, (20, 30), rng).save(args.out / "small-bag-in-corner.jpg", quality=85)
    _cutout(images[dress], (30, 60, 140)).save(args.out / "cutout-dress.png")
    tshirt = [(110, 60), (160, 50), (200, 80), (240, 50), (290, 60), (370, 140), (320, 190), (290, 160),
              (290, 360), (110, 360), (110, 160), (80, 190), (30, 140)]  # fmt: skip
    trousers = [(130, 30), (270, 30), (300, 380), (230, 380), (200, 130), (170, 380), (100, 380)]
    _drawing(tshirt).save(args.out / "drawn-tshirt.png")
    _drawing(trousers).save(args.out / "drawn-trousers.png")
    print(f"Wrote {len(list(args.out.iterdir()))} images into {args.out}")


if __name__ == "__main__":
    main()
