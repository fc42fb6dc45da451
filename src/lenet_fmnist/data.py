"""Fashion-MNIST: find the four official IDX files, read them, split off validation.

The result is three pairs of tensors (uint8 images N x 28 x 28, int64 labels N) that the trainer
moves to its device once; nothing here runs per sample. With data.val_size=0 there is no
validation split (`FashionMNISTData.val` is None) and every training image trains.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lenet_fmnist.run.errors import UserError
from lenet_fmnist.run.paths import is_dir, user_path

log = logging.getLogger(__name__)

# Debian's package `dataset-fashion-mnist` installs the official files here.
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# Label i is CLASSES[i] (the dataset's README; torchvision's FashionMNIST.classes, which a test compares).
CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
# Mean and std of the 60,000 training images' pixels scaled to [0, 1] (measured; the usual values).
MEAN, STD = 0.2860406, 0.3530242


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8, N x 28 x 28
    labels: torch.Tensor  # int64, N

    def to(self, device: torch.device) -> Split:
        return Split(self.images.to(device), self.labels.to(device))


@dataclass(frozen=True)
class FashionMNISTData:
    train: Split
    val: Split | None  # None: data.val_size=0, a final fit without validation (lenet_fmnist.run.validation)
    test: Split
    source: Path

    def to(self, device: torch.device) -> FashionMNISTData:
        """All the splits on `device` (40 MB as uint8): the trainer keeps them there."""
        val = None if self.val is None else self.val.to(device)
        return FashionMNISTData(self.train.to(device), val, self.test.to(device), self.source)


def cache_dir() -> Path:
    """Per-user cache, where the downloader puts the data (torchvision's FashionMNIST layout)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lenet_fmnist"


def _find_file(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _holds_dataset(directory: Path) -> bool:
    names = [name for pair in FILES.values() for name in pair]
    return all(_find_file(directory, name) for name in names)


def _how_to_provide() -> str:
    return (
        "Provide the data in one of three ways: (1) pass data.root=DIR, a directory holding "
        "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
        "t10k-labels-idx1-ubyte (each may be .gz); (2) install Debian's package as root: "
        "`apt-get install -y dataset-fashion-mnist` (files land in "
        f"{SYSTEM_DIR}); (3) run once with internet access so torchvision downloads them into "
        f"{cache_dir() / 'FashionMNIST' / 'raw'}."
    )


def locate(root: str | None) -> Path:
    """The directory holding the four files: data.root, Debian's, the user cache, or a download."""
    if root is not None:
        given = user_path(root, "data.root")
        if not is_dir(given):
            raise UserError(f"data.root={root!r} is not an existing directory. {_how_to_provide()}")
        for directory in (given, given / "FashionMNIST" / "raw"):
            if _holds_dataset(directory):
                return directory
        raise UserError(f"data.root={root!r} does not hold the four Fashion-MNIST files. {_how_to_provide()}")
    cached = cache_dir() / "FashionMNIST" / "raw"
    for directory in (SYSTEM_DIR, cached):
        if _holds_dataset(directory):
            return directory
    log.info("Fashion-MNIST not found locally; downloading it into %s", cache_dir())
    try:
        # Imported here only: torchvision costs seconds of start-up that reading the files does not need.
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(cache_dir()), train=True, download=True)
    except Exception as error:  # any network or disk failure means the same to the user
        raise UserError(f"Fashion-MNIST could not be found or downloaded ({error}). {_how_to_provide()}") from None
    return cached


# An IDX file: two zero bytes, a type code, the number of dimensions, each dimension's size as a
# big-endian uint32, then the values in C order. Fashion-MNIST's are unsigned bytes throughout.
IDX_UBYTE = 0x08


def parse_idx(raw: bytes, dimensions: int) -> np.ndarray:
    """The uint8 array of an IDX file's bytes `raw`, which must have `dimensions` dimensions;
    ValueError saying what is wrong otherwise (a short file, another type, bytes left over)."""
    header = 4 + 4 * dimensions
    if len(raw) < header:
        raise ValueError(f"{len(raw)} bytes, less than the {header}-byte header")
    zeros, code, ndim = struct.unpack_from(">HBB", raw)
    if (zeros, code, ndim) != (0, IDX_UBYTE, dimensions):
        raise ValueError(f"magic number {raw[:4].hex()}, not 0000{IDX_UBYTE:02x}{dimensions:02x}")
    shape = struct.unpack_from(f">{dimensions}I", raw, 4)
    if len(raw) != header + math.prod(shape):
        raise ValueError(f"{len(raw) - header} bytes of data where the header's sizes {shape} need {math.prod(shape)}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _read_idx(path: Path, labels: bool) -> torch.Tensor:
    """Read one IDX file (plain or gzip): N x H x W images or N labels. A bad file is a UserError."""
    kind = "label" if labels else "image"
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            array = parse_idx(handle.read(), dimensions=1 if labels else 3)
    # A damaged gzip stream raises BadGzipFile (an OSError), EOFError or zlib.error; parse_idx ValueError.
    except (OSError, EOFError, zlib.error, ValueError) as error:
        raise UserError(
            f"{path} is not a valid IDX {kind} file ({type(error).__name__}: {error}). "
            "It may be truncated or corrupt: replace it with the official Fashion-MNIST file."
        ) from None
    return torch.from_numpy(array.copy())  # a writable copy: the bytes read are immutable


def _read_split(directory: Path, split: str) -> Split:
    image_name, label_name = FILES[split]
    image_path, label_path = _find_file(directory, image_name), _find_file(directory, label_name)
    assert image_path is not None and label_path is not None  # locate() checked both
    images = _read_idx(image_path, labels=False)
    labels = _read_idx(label_path, labels=True)
    if not len(images):
        raise UserError(
            f"{image_path} holds no images: it is not the Fashion-MNIST file (which holds 10,000 or 60,000)."
        )
    if images.shape[1:] != (28, 28):
        raise UserError(f"{image_path} holds images of size {tuple(images.shape[1:])}; Fashion-MNIST's are 28 x 28.")
    if len(images) != len(labels):
        raise UserError(f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} labels.")
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < len(CLASSES):
        raise UserError(f"{label_path} holds labels outside 0..9.")
    return Split(images, labels.long())


def load_test(root: str | None) -> Split:
    """The 10,000 test images alone (what `eval` needs; the training file is not read)."""
    directory = locate(root)
    test = _read_split(directory, "test")
    log.info("Data from %s: %d test images", directory, len(test.labels))
    return test


def split_indices(count: int, val_size: int, split_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the training and the validation images among `count` official training images."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(split_seed))
    return order[val_size:], order[:val_size]


def load(root: str | None, val_size: int, split_seed: int) -> FashionMNISTData:
    """Train / validation / test splits. Validation is `val_size` training images chosen by
    `split_seed` alone, so every run of a study sees the same split whatever its own seed; with
    `val_size` 0 there is none (`val` is None) and all the training images train, in the order
    `split_seed` gives them."""
    directory = locate(root)
    train_full, test = _read_split(directory, "train"), _read_split(directory, "test")
    n = len(train_full.labels)
    if val_size >= n:
        raise UserError(
            f"data.val_size={val_size} leaves no training data: {directory} has {n} training "
            f"images, so data.val_size must be between 0 (no validation) and {n - 1}."
        )
    train_idx, val_idx = split_indices(n, val_size, split_seed)
    train = Split(train_full.images[train_idx], train_full.labels[train_idx])
    val = Split(train_full.images[val_idx], train_full.labels[val_idx]) if val_size else None
    held_out = f"{val_size} validation" if val_size else "no validation (data.val_size=0)"
    log.info("Data from %s: %d train, %s, %d test images", directory, n - val_size, held_out, len(test.labels))
    return FashionMNISTData(train, val, test, directory)
