"""Surface 3: the images `predict` reads.

Target `image`: an input is a file's bytes, named as a PNG whatever it holds (a file that only
claims a format). It is read and prepared as predict does (inference.images.load_image, with
invert=auto, true or false by the file's length, so that the input is the file's bytes alone); a
file that cannot be used must say why in one paragraph (predict names the file beside it), and a
file accepted must come out 28 x 28 and get a prediction from the world's model: ten finite
probabilities that add up to one.

Hypothesis makes images in every mode Pillow writes (1-bit, grey, 16-bit, 32-bit and float grey,
palette with and without transparency, RGB, RGBA, LA, CMYK, YCbCr, LAB, HSV) and every format it
opens or only pretends to (PNG, JPEG, BMP, TIFF, WebP, and GIF, ICO, PPM, which predict refuses),
0 to 1,000 pixels a side, animated ones, EXIF orientations (valid and not), then truncates or
damages some; and PNG headers claiming 0-pixel, 1-pixel and huge sizes (decompression bombs).

Target `image_folder`: a JSON document describing a folder (good files, damaged ones, unreadable
ones, a FIFO, a sub-folder, a symlink loop, hidden files, up to thousands of files) that `predict`
runs on through the command line: it predicts every good file, lists every other one in
skipped.csv, or, with none good, refuses in one paragraph.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from hypothesis import strategies as st
from PIL import Image

from fuzz.harness import Failure, NotACase, Outcome, call, judge_cli, unchanged
from fuzz.world import World
from lenet_fmnist.inference.images import SIZE, load_image

INVERT = ("auto", "true", "false")
MODES = ("1", "L", "P", "PA", "RGB", "RGBA", "LA", "I;16", "I;16B", "I", "F", "CMYK", "YCbCr", "LAB", "HSV")
FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP", "GIF", "ICO", "PPM")


@functools.cache
def _classifier(checkpoint: Path) -> torch.nn.Module:
    from lenet_fmnist.inference.evaluate import load_classifier

    return load_classifier(checkpoint, uint8_input=True)[0]


def predicted(world: World, pixels: np.ndarray) -> torch.Tensor:
    """The world's model's probabilities for one prepared image; Failure unless they are ten
    finite numbers that add up to one."""
    if pixels.shape != (SIZE, SIZE) or pixels.dtype != np.uint8:
        raise Failure(f"an accepted image prepared as {pixels.shape} {pixels.dtype}, not {SIZE} x {SIZE} uint8")
    with torch.inference_mode():
        probabilities = torch.softmax(_classifier(world.checkpoint)(torch.from_numpy(pixels)[None]), dim=1)[0]
    if (
        probabilities.shape != (10,)
        or not torch.isfinite(probabilities).all()
        or abs(float(probabilities.sum()) - 1) > 1e-4
    ):
        raise Failure(f"an accepted image got no prediction: {probabilities}")
    return probabilities


def run(world: World, raw: bytes) -> Outcome:
    with world.scratch() as scratch:
        path = scratch / "input.png"
        path.write_bytes(raw)
        invert = INVERT[len(raw) % 3]
        with unchanged(scratch):
            outcome = call(lambda: load_image(path, invert), ())
        if outcome.accepted:
            predicted(world, load_image(path, invert).pixels)
    return outcome


# ---- structured inputs ----------------------------------------------------------------------


def _pixels(draw: st.DrawFn, width: int, height: int) -> np.ndarray:
    kind = draw(st.sampled_from(("item", "item", "noise", "blank", "white", "gradient")))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if kind == "noise":
        return rng.integers(0, 256, (height, width), dtype=np.uint8)
    if kind in ("blank", "white"):
        return np.full((height, width), 0 if kind == "blank" else 255, dtype=np.uint8)
    if kind == "gradient":
        return np.tile(np.linspace(0, 255, width, dtype=np.uint8), (height, 1))
    grey = np.full((height, width), 230, dtype=np.uint8)  # a dark item on a light background
    grey[height // 4 : max(height // 4 + 1, 3 * height // 4), width // 3 : max(width // 3 + 1, 2 * width // 3)] = 40
    return grey


def _image(draw: st.DrawFn) -> Image.Image:
    width, height = (draw(st.sampled_from((1, 2, 3, 4, 28, 29, 64, 300, 1000))) for _ in range(2))
    grey = Image.fromarray(_pixels(draw, width, height))
    mode = draw(st.sampled_from(MODES))
    if mode in ("I;16", "I;16B", "I", "F"):
        return Image.fromarray((np.asarray(grey, dtype=np.uint16) * 257).astype(np.uint16)).convert(mode)
    if mode in ("P", "PA"):
        image = grey.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE)
        if draw(st.booleans()):
            image.info["transparency"] = draw(st.integers(0, 255))
        return image.convert("PA") if mode == "PA" else image
    image = grey.convert(mode)
    if mode in ("RGBA", "LA") and draw(st.booleans()):
        image.putalpha(Image.fromarray(_pixels(draw, width, height)))
    return image


def _encoded(draw: st.DrawFn, image: Image.Image) -> bytes:
    """`image` in a format, with an EXIF orientation and more frames now and then; saved as RGB
    or grey where the format refuses its mode."""
    fmt = draw(st.sampled_from(FORMATS))
    options: dict[str, object] = {}
    if fmt in ("JPEG", "PNG", "TIFF", "WEBP") and draw(st.booleans()):
        exif = Image.Exif()
        exif[0x0112] = draw(st.sampled_from((1, 2, 3, 4, 5, 6, 7, 8, 0, 9, 65535)))
        options["exif"] = exif.tobytes()
    if fmt in ("PNG", "WEBP", "TIFF", "GIF") and draw(st.integers(0, 4)) == 0:
        options.update(save_all=True, append_images=[image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
    for mode in (image.mode, "RGB", "L"):
        buffer = io.BytesIO()
        try:
            (image if mode == image.mode else image.convert(mode)).save(buffer, format=fmt, **options)
            return buffer.getvalue()
        except (OSError, ValueError, KeyError, TypeError):  # a mode the format cannot hold, or Pillow cannot make
            continue
    return b""


def _png_header(draw: st.DrawFn) -> bytes:
    """A PNG whose header claims any size (0, 1 pixel, or a decompression bomb) over little data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    width, height = (draw(st.sampled_from((0, 1, 2, 3, 28, 10_000, 100_000, 2**31 - 1))) for _ in range(2))
    depth, colour = draw(st.sampled_from(((8, 0), (16, 0), (1, 0), (8, 2), (8, 6), (8, 3), (16, 4), (3, 7))))
    rows = min(height, 64) * (min(width, 64) + 1)
    body = zlib.compress(bytes(rows * draw(st.sampled_from((1, 2, 4)))))
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


@st.composite
def _file(draw: st.DrawFn) -> bytes:
    content = _png_header(draw) if draw(st.integers(0, 5)) == 0 else _encoded(draw, _image(draw))
    damage = draw(st.sampled_from(("none", "none", "none", "cut", "flip", "garbage")))
    # Where to damage, drawn apart from the content's length: some of Pillow's encoders do not
    # give the same length twice for the same image, and Hypothesis replays its draws exactly.
    place = draw(st.integers(0, 2**32 - 1))
    if damage == "cut" and len(content) > 1:
        return content[: place % len(content)]
    if damage == "flip" and content:
        at = place % len(content)
        return content[:at] + bytes([content[at] ^ draw(st.integers(1, 255))]) + content[at + 1 :]
    return content + (b"\x00garbage" * 4 if damage == "garbage" else b"")


def strategy(world: World) -> st.SearchStrategy[bytes]:
    return _file()


def seeds(world: World) -> list[bytes]:
    return [path.read_bytes() for path in sorted(world.images.iterdir())]


# ---- a folder for predict ---------------------------------------------------------------------

KINDS = ("good", "good", "text", "empty", "truncated", "unreadable", "fifo", "folder", "loop", "hidden", "link")


@st.composite
def _folder(draw: st.DrawFn) -> bytes:
    files = draw(st.lists(st.sampled_from(KINDS), min_size=0, max_size=8))
    copies = draw(st.sampled_from((0, 0, 0, 10, 2000)))
    spec = draw(st.sampled_from(("folder", "folder", "glob", "recursive")))
    return json.dumps({"files": files, "copies": copies, "images": spec}).encode()


def folder_strategy(world: World) -> st.SearchStrategy[bytes]:
    return _folder()


def _one(path: Path, kind: str, good: Path) -> str:
    """Make `path` a file (or not) of `kind`; whether predict must find it good, bad or not at all."""
    if kind in ("good", "text", "empty", "truncated", "unreadable"):
        content = {"text": b"hello\n", "empty": b"", "truncated": good.read_bytes()[:50]}.get(kind)
        path.write_bytes(good.read_bytes() if content is None else content)
        if kind == "unreadable":
            path.chmod(0)
            return "good" if os.access(path, os.R_OK) else "bad"  # root reads it all the same
        return "good" if kind == "good" else "bad"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "loop":
        path.symlink_to(path)
    elif kind == "hidden":
        path.with_name(f".{path.name}").write_bytes(b"not an image")
    elif kind == "link":
        path.symlink_to(good)
        return "good"
    return "none"


def _make(world: World, folder: Path, kinds: list[str], copies: int) -> tuple[int, int]:
    """The folder's files; how many are good images and how many predict must skip."""
    folder.mkdir()
    good = sorted(world.images.iterdir())
    counts = {"good": 0, "bad": 0, "none": 0}
    for index, kind in enumerate(kinds):
        counts[_one(folder / f"{index:04d}-{kind}.png", kind, good[index % len(good)])] += 1
    for index in range(copies):
        shutil.copy(good[index % len(good)], folder / f"copy-{index:05d}.png")
    return counts["good"] + copies, counts["bad"]


def _rows(path: Path) -> int:
    return sum(1 for _ in csv.reader(path.open())) - 1 if path.is_file() else 0


def run_folder(world: World, raw: bytes) -> Outcome:
    try:
        case = json.loads(raw)
        kinds, copies, spec = [str(k) for k in case["files"]], int(case["copies"]), str(case["images"])
    except (ValueError, KeyError, TypeError) as error:
        raise NotACase(f"not a folder case: {error}") from None
    with world.scratch() as scratch:
        folder = scratch / "images"
        good, bad = _make(world, folder, kinds, min(copies, 5000))
        images = {"folder": str(folder), "glob": f"{folder}/*.png", "recursive": f"{folder}/**/*.png"}.get(spec, spec)
        args = ["predict", f"checkpoint={world.checkpoint}", f"images={images}", "device=cpu", "threads=1",
                "figure_images=4", f"hydra.run.dir={scratch / 'out'}"]  # fmt: skip
        with unchanged(folder):
            outcome, text = judge_cli(args, [f"images={images!r}", images])
        predictions, skipped = _rows(scratch / "out" / "predictions.csv"), _rows(scratch / "out" / "skipped.csv")
    if outcome.accepted and (predictions, skipped) != (good, bad):
        raise Failure(
            f"{good} good and {bad} bad files, but {predictions} predictions and {skipped} skipped:\n{text[-2000:]}"
        )
    if not outcome.accepted and good:
        raise Failure(f"{good} good files, yet predict refused:\n{outcome.message}")
    return outcome
