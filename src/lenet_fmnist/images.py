"""Users' images made to look like Fashion-MNIST's, for `predict` (and anyone with an exported model).

Fashion-MNIST's images were made from product photos on white backgrounds: trimmed to the item,
the longer side scaled to 28 pixels, centred on a 28 x 28 canvas, intensities negated, 8-bit grey
(Xiao et al., 2017, arXiv:1708.07747). `prepare` does the same to any image, so the model sees
what it was trained on:

1. grey in [0, 1], 16-bit grey keeping its precision; an image larger than 112 px (4 x 28) is
   first shrunk by area averaging to at most 112 px on a side, which also averages away pixel
   noise before the item is looked for;
2. polarity from the border (the outermost pixels): with invert=auto, a border lighter than
   mid-grey means a dark item on a light background, which is inverted;
3. the border's darkest tenth is the background level, subtracted and rescaled so the
   background is black as in the data (a level of 0, as in Fashion-MNIST, changes nothing);
4. the item is the bounding box of the pixels more than 5% above the background (the tolerance
   the dataset's authors trimmed with);
5. the box is scaled so its longer side is 28 px and centred on a black 28 x 28 canvas. A box
   whose longer side is already 26-28 px keeps its size (99.98% of Fashion-MNIST's items are
   that size), and a 28 x 28 image holding one is left as it is: the dataset's own images come
   back unchanged, so `predict` on them agrees with `eval`.

Transparent pixels are background: composited onto white, like the product photos (onto black
with invert=false, which says the images are light on dark already).

This module imports neither torch nor the model: a wrong path fails at once, and the preparation
can feed an exported model (onnxruntime) without torch installed.
"""

from __future__ import annotations

import glob
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lenet_fmnist.errors import UserError

SIZE = 28  # Fashion-MNIST's images are SIZE x SIZE
WORK_SIDE = 4 * SIZE  # longest side the item is looked for at: 4 px per output pixel
MIN_SIDE = 3  # a border to tell the background by, and something inside it
FOREGROUND = 0.05  # how far above the background a pixel must be to belong to the item
FRAMED = (26, 28)  # item sizes (longer side, px) of 99.98% of Fashion-MNIST's images: kept as they are
BACKGROUND_QUANTILE = 0.1  # the border's darkest tenth: background even where the item touches the border
# Pillow's names of the formats read (its JPEG reader also opens cameras' multi-picture JPEGs).
FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP")


class BadImage(Exception):
    """One input file cannot be used; the message says why (a folder's other files go on)."""


@dataclass(frozen=True)
class Prepared:
    pixels: np.ndarray  # uint8 SIZE x SIZE, light item on black, as the model was trained on
    inverted: bool


# ---------------------------------------------------------------------------------------------
# Finding the files


def _has_glob(pattern: str) -> bool:
    return any(char in pattern for char in "*?[")


def find_images(spec: str) -> list[Path]:
    """The files `images=` names: a file, a folder's files (not its sub-folders; hidden files
    skipped), or a glob's matching files (`**` reaches into sub-folders). Sorted by name."""
    path = Path(spec).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise UserError(
                f"images={spec!r} is an empty folder: it holds no files (sub-folders are not searched; "
                f"use a glob such as images='{spec.rstrip('/')}/**/*.png' for those)."
            )
        return files
    if _has_glob(spec):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not files:
            raise UserError(f"images={spec!r} matches no files. Check the pattern, e.g. images='photos/*.jpg'.")
        return files
    raise UserError(
        f"images={spec!r} does not exist. Give an image file, a folder of images or a quoted glob "
        "such as images='shop/*.jpg'."
    )


# ---------------------------------------------------------------------------------------------
# Reading and preparing one image


def _open(path: Path) -> Image.Image:
    """The image in `path`, decoded in full (a truncated file fails here, not later), upright as
    its EXIF orientation says, JPEGs decoded at the smallest scale still >= WORK_SIDE."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # big photos are fine: JPEGs decode small
            with Image.open(path, formats=FORMATS) as image:
                image.draft(None, (WORK_SIDE, WORK_SIDE))  # JPEG only; a no-op for the others
                image.load()
                ImageOps.exif_transpose(image, in_place=True)
                return image
    except UnidentifiedImageError:
        raise BadImage("not a PNG, JPEG, BMP, TIFF or WebP image") from None
    except Image.DecompressionBombError as error:
        raise BadImage(f"too large to decode safely ({error})") from None
    except Exception as error:  # a damaged file can make a decoder raise almost anything
        raise BadImage(f"damaged or truncated image data ({' '.join(str(error).split())})") from None


def _grey(image: Image.Image, background: float) -> np.ndarray:
    """float32 H x W in [0, 1]. 16-bit grey is scaled from 0-65535; transparent pixels are
    composited onto `background`."""
    if image.mode.startswith("I;16") or image.mode == "I":  # 16-bit grey (PNG, TIFF)
        return np.clip(np.asarray(image, dtype=np.float32) / 65535, 0, 1)
    if image.mode == "F":  # float TIFF: Pillow's convention is 0-255, as convert("F") gives
        return np.clip(np.asarray(image, dtype=np.float32) / 255, 0, 1)
    try:
        if image.has_transparency_data:  # RGBA, LA, or a palette with a transparent colour
            rgba = image.convert("RGBA")
            grey = np.asarray(rgba.convert("L"), dtype=np.float32) / 255
            alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255
            return grey * alpha + background * (1 - alpha)
        return np.asarray(image.convert("L"), dtype=np.float32) / 255
    except (ValueError, OSError) as error:  # e.g. LAB, which Pillow cannot turn grey by itself
        raise BadImage(f"its colour mode {image.mode} cannot be converted to grey ({error})") from None


def _resize(grey: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area averaging to shrink (no aliasing, exact for whole-number factors); Lanczos to enlarge."""
    shrink = width <= grey.shape[1] and height <= grey.shape[0]
    method = Image.Resampling.BOX if shrink else Image.Resampling.LANCZOS
    return np.asarray(Image.fromarray(np.ascontiguousarray(grey)).resize((width, height), method))


def _fit(height: int, width: int, longest: int) -> tuple[int, int]:
    """(height, width) scaled so the longer side is `longest`, each at least 1 px."""
    scale = longest / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _border(grey: np.ndarray) -> np.ndarray:
    """The outermost pixels, sorted (a sort of ~400 values costs less than numpy's quantile calls)."""
    return np.sort(np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]]))


def prepare(grey: np.ndarray, invert: str) -> Prepared:
    """A grey image (float32 H x W in [0, 1]) as a Fashion-MNIST one; see the module's docstring.
    Raises BadImage when it is too small or holds no item."""
    height, width = grey.shape
    if min(height, width) < MIN_SIDE:
        raise BadImage(
            f"{width} x {height} pixels is too small: an image needs at least {MIN_SIDE} x {MIN_SIDE} "
            "(a border to tell the background by, and an item inside it)"
        )
    if max(height, width) > WORK_SIDE:
        grey = _resize(grey, *reversed(_fit(height, width, WORK_SIDE)))
    border = _border(grey)
    inverted = invert == "true" or (invert == "auto" and float(border[len(border) // 2]) > 0.5)
    if inverted:
        grey, border = 1 - grey, 1 - border[::-1]
    level = float(border[int(BACKGROUND_QUANTILE * (len(border) - 1))])
    if level > 0:
        grey = np.clip((grey - level) / max(1 - level, 1e-6), 0, 1)
    rows, cols = np.nonzero(grey > FOREGROUND)
    if rows.size == 0:
        raise BadImage(
            f"no item found: no pixel is more than {FOREGROUND:.0%} brighter than the background"
            f"{' after inverting' if inverted else ''} (a blank image, or try invert={'false' if inverted else 'true'})"
        )
    item = grey[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    framed = FRAMED[0] <= max(item.shape) <= FRAMED[1]  # the size of the data's own items: not resized
    if framed and grey.shape == (SIZE, SIZE):
        return Prepared(_to_uint8(grey), inverted)  # already framed like the data: left as it is
    if not framed:
        item_height, item_width = _fit(*item.shape, SIZE)
        item = _resize(item, item_width, item_height)
    canvas = np.zeros((SIZE, SIZE), dtype=np.float32)
    top, left = (SIZE - item.shape[0]) // 2, (SIZE - item.shape[1]) // 2
    canvas[top : top + item.shape[0], left : left + item.shape[1]] = item
    return Prepared(_to_uint8(canvas), inverted)


def _to_uint8(grey: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(grey, 0, 1) * 255).astype(np.uint8)


def load_image(path: Path, invert: str) -> Prepared:
    """Read and prepare one file; BadImage says why it cannot be used."""
    image = _open(path)
    # Transparent areas become the background the polarity step then turns black.
    return prepare(_grey(image, background=0.0 if invert == "false" else 1.0), invert)
