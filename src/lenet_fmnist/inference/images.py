"""Users' images made to look like Fashion-MNIST's, for `predict` (and anyone with an exported model).

Fashion-MNIST's images were made from product photos on white backgrounds: trimmed to the item,
the longer side scaled to 28 pixels, centred on a 28 x 28 canvas, intensities negated, 8-bit grey
(Xiao et al., 2017, arXiv:1708.07747). `prepare` does the same to any image, so the model sees
what it was trained on:

1. grey in [0, 1], 16-bit grey keeping its precision. The steps below look at a copy shrunk by
   area averaging to at most 112 px (4 x 28) a side, which also averages away pixel noise;
2. polarity from the border (the outermost pixels): with invert=auto, a border lighter than
   mid-grey means a dark item on a light background, which is inverted;
3. the background, a plane fitted to the border (uneven light across a photo), is made black:
   (x - background) / (1 - background). A background within 5% of black everywhere, as in
   Fashion-MNIST, is left as it is;
4. the item is the bounding box of the pixels more than 5% above the background (the tolerance
   the dataset's authors trimmed with), cut from the full-size image so a small item keeps its
   detail;
5. the box is scaled so its longer side is 28 px (area averaging to shrink, Lanczos to enlarge)
   and centred on a black 28 x 28 canvas. A box whose longer side is already 26-28 px keeps its
   size (99.98% of Fashion-MNIST's items are that size), and a 28 x 28 image holding one is left
   as it is: 9,997 of the 10,000 test images come back unchanged, so `predict` on the dataset's
   own images agrees with `eval`.

Transparent pixels are background: composited onto white, like the product photos (onto black
with invert=false, which says the images are light on dark already).

This module imports neither torch nor the model: a wrong path fails at once, and the preparation
can feed an exported model (onnxruntime) without torch installed.
"""

from __future__ import annotations

import functools
import glob
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lenet_fmnist.run.errors import UserError
from lenet_fmnist.run.paths import is_dir, is_file, user_path

SIZE = 28  # Fashion-MNIST's images are SIZE x SIZE
WORK_SIDE = 4 * SIZE  # longest side the item is looked for at: 4 px per output pixel
# JPEGs decode at the smallest of 1/1, 1/2, 1/4, 1/8 scale that keeps this many pixels a side: an
# item a quarter of the picture wide still has >= 4 px per output pixel (and decoding is up to 64x cheaper).
DECODE_SIDE = 4 * WORK_SIDE
MIN_SIDE = 3  # a border to tell the background by, and something inside it
# JPEG's own limit, far beyond any camera's: a header that claims a longer side is refused before
# decoding (Pillow's decompression-bomb limit counts pixels, and a canvas 16 million pixels wide and
# 2 high passes it, yet takes minutes to decode).
MAX_SIDE = 65_535
FOREGROUND = 0.05  # how far above the background a pixel must be to belong to the item
FRAMED = (26, 28)  # item sizes (longer side, px) of 99.98% of Fashion-MNIST's images: kept as they are
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
    path = user_path(spec, "images")
    if is_file(path):
        return [path]
    if is_dir(path):
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
    its EXIF orientation says; JPEGs decoded at the smallest scale still >= DECODE_SIDE."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # big photos are fine: JPEGs decode small
            with Image.open(path, formats=FORMATS) as image:
                if max(image.size) > MAX_SIDE:
                    raise BadImage(
                        f"{image.width} x {image.height} pixels: a side over {MAX_SIDE} is too large to decode"
                    )
                image.draft(None, (DECODE_SIDE, DECODE_SIDE))  # JPEG only; a no-op for the others
                image.load()
                if image.mode in ("P", "PA") and image.palette is None:
                    raise BadImage("a palette image whose file holds no palette")
                ImageOps.exif_transpose(image, in_place=True)
                return image
    except BadImage:
        raise
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


def _design(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Rows of [1, u, v] for pixel centres in coordinates 0-1 across the image: a plane fitted
    on a shrunk copy holds at full size too (area averaging keeps planes as they are)."""
    height, width = shape
    return np.stack([np.ones(rows.shape), (cols + 0.5) / width, (rows + 0.5) / height], axis=-1)


@functools.lru_cache(maxsize=64)
def _border(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Row and column indices of the outermost pixels, their [1, u, v] rows, and the corners'
    (the same for every image of a size: computed once)."""
    height, width = shape
    across, down = np.arange(width), np.arange(1, height - 1)
    rows = np.concatenate([np.zeros(width), np.full(width, height - 1), down, down]).astype(int)
    cols = np.concatenate([across, across, np.zeros(height - 2), np.full(height - 2, width - 1)]).astype(int)
    corners = _design(np.array([0, 0, height - 1, height - 1]), np.array([0, width - 1, 0, width - 1]), shape)
    return rows, cols, _design(rows, cols, shape), corners


def _median(values: np.ndarray) -> float:
    """The upper median (np.partition: a fraction of np.median's cost on a few hundred values)."""
    return float(np.partition(values, len(values) // 2)[len(values) // 2])


def _background(grey: np.ndarray) -> np.ndarray | None:
    """The background as a plane (coefficients of [1, u, v]) fitted to the border, which catches
    uneven light across a photo; None where it is within FOREGROUND of black everywhere (as in
    Fashion-MNIST, whose backgrounds are 0). The item, light after the polarity step, may touch
    the border: the fit starts from the border's darker half, then keeps the border pixels that
    are not brighter than the plane by more than FOREGROUND."""
    rows, cols, design, corners = _border(grey.shape)
    values = grey[rows, cols].astype(np.float64)
    if values.max() < FOREGROUND:
        return None
    inliers = values <= _median(values)
    for _ in range(3):
        chosen = design[inliers]
        # Normal equations with a negligible ridge: well posed even when the inliers lie on one line.
        plane = np.linalg.solve(chosen.T @ chosen + 1e-9 * np.eye(3), chosen.T @ values[inliers])
        kept = values - design @ plane < FOREGROUND
        if kept.sum() < 3 or np.array_equal(kept, inliers):  # nearly all item, or settled
            break
        inliers = kept
    return plane if (corners @ plane).max() >= FOREGROUND else None  # a plane peaks at a corner


def _level(grey: np.ndarray, plane: np.ndarray | None, top: int, left: int, shape: tuple[int, int]) -> np.ndarray:
    """`grey`, the part of an image of `shape` at (top, left), with the background made black:
    (x - background) / (1 - background), clipped to [0, 1]."""
    if plane is None:
        return grey
    v = (np.arange(top, top + grey.shape[0]) + 0.5) / shape[0]
    u = (np.arange(left, left + grey.shape[1]) + 0.5) / shape[1]
    background = plane[0] + plane[1] * u[None, :] + plane[2] * v[:, None]  # [1, u, v] @ plane, per pixel
    background = np.clip(background, 0, 1 - 1e-3).astype(np.float32)
    return np.clip((grey - background) / (1 - background), 0, 1)


def _item_box(grey: np.ndarray) -> tuple[slice, slice] | None:
    """The bounding box of the pixels brighter than FOREGROUND; None if there are none."""
    rows, cols = np.nonzero(grey > FOREGROUND)
    if rows.size == 0:
        return None
    return slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1)


def prepare(grey: np.ndarray, invert: str) -> Prepared:
    """A grey image (float32 H x W in [0, 1]) as a Fashion-MNIST one; see the module's docstring.
    Raises BadImage when it is too small or holds no item."""
    height, width = grey.shape
    if min(height, width) < MIN_SIDE:
        raise BadImage(
            f"{width} x {height} pixels is too small: an image needs at least {MIN_SIDE} x {MIN_SIDE} "
            "(a border to tell the background by, and an item inside it)"
        )
    # The shrunk copy keeps MIN_SIDE pixels a side, however long and thin the image.
    work = tuple(max(MIN_SIDE, side) for side in _fit(height, width, WORK_SIDE))
    small = _resize(grey, *reversed(work)) if max(height, width) > WORK_SIDE else grey
    rows, cols, _, _ = _border(small.shape)
    inverted = invert == "true" or (invert == "auto" and _median(small[rows, cols]) > 0.5)
    if inverted:
        grey, small = 1 - grey, 1 - small
    plane = _background(small)
    box = _item_box(_level(small, plane, 0, 0, small.shape))
    if box is None:
        raise BadImage(
            f"no item found: no pixel is more than {FOREGROUND:.0%} brighter than the background"
            f"{' after inverting' if inverted else ''} (a blank image, or try invert={'false' if inverted else 'true'})"
        )
    # The box, found on the shrunk copy, is cut from the full-size image: a small item keeps its detail.
    scale_y, scale_x = height / small.shape[0], width / small.shape[1]
    top, left = int(box[0].start * scale_y), int(box[1].start * scale_x)
    bottom, right = math.ceil(box[0].stop * scale_y), math.ceil(box[1].stop * scale_x)
    item = _level(grey[top:bottom, left:right], plane, top, left, grey.shape)
    if small is not grey:  # trim the margin that the shrunk copy's coarser pixels added
        item = item[_item_box(item) or (slice(None), slice(None))]
    framed = FRAMED[0] <= max(item.shape) <= FRAMED[1]  # the size of the data's own items: not resized
    if framed and grey.shape == (SIZE, SIZE):
        return Prepared(_to_uint8(_level(grey, plane, 0, 0, grey.shape)), inverted)  # framed like the data already
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
