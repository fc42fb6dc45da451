"""Reading Fashion-MNIST: the real IDX parsing path on files the tests write, and its errors."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import synthetic_split, write_dataset, write_idx
from lenet_fmnist import data
from lenet_fmnist.run.errors import UserError


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
def test_load_reads_what_was_written(tmp_path: Path, gz: bool) -> None:
    write_dataset(tmp_path, train=120, test=30, gz=gz, seed=3)
    train_images, train_labels = synthetic_split(120, 3)
    test_images, test_labels = synthetic_split(30, 4)

    fashion = data.load(str(tmp_path), val_size=20, split_seed=0)

    assert fashion.source == tmp_path
    assert fashion.test.images.dtype == torch.uint8 and fashion.test.labels.dtype == torch.int64
    assert fashion.test.images.shape == (30, 28, 28)
    assert torch.equal(fashion.test.images, torch.from_numpy(test_images))
    assert torch.equal(fashion.test.labels, torch.from_numpy(test_labels).long())
    # Train and validation together are exactly the training file, split 100 / 20.
    assert len(fashion.train.labels) == 100 and len(fashion.val.labels) == 20
    rejoined = torch.cat([fashion.train.images, fashion.val.images]).reshape(120, -1)
    original = torch.from_numpy(train_images).reshape(120, -1)
    assert sorted(map(tuple, rejoined.tolist())) == sorted(map(tuple, original.tolist()))
    # Each image keeps its own label through the split.
    by_image = {tuple(img.flatten().tolist()): int(lab) for img, lab in zip(train_images, train_labels, strict=True)}
    for split in (fashion.train, fashion.val):
        for image, label in zip(split.images, split.labels, strict=True):
            assert by_image[tuple(image.flatten().tolist())] == int(label)


def test_validation_split_depends_on_split_seed_only(tmp_path: Path) -> None:
    write_dataset(tmp_path, train=100, test=10, gz=True)
    first = data.load(str(tmp_path), val_size=25, split_seed=0)
    torch.manual_seed(123)  # the run's own seed must not move the split
    again = data.load(str(tmp_path), val_size=25, split_seed=0)
    other = data.load(str(tmp_path), val_size=25, split_seed=1)
    assert torch.equal(first.val.images, again.val.images)
    assert not torch.equal(first.val.images, other.val.images)


def test_no_validation_trains_on_every_training_image(tmp_path: Path) -> None:
    """data.val_size=0: no validation split (None), and the training split is the whole training
    file, in the order split_seed gives it (that of a split with validation, validation included)."""
    write_dataset(tmp_path, train=60, test=10, gz=False, seed=5)
    fashion = data.load(str(tmp_path), val_size=0, split_seed=0)
    assert fashion.val is None and fashion.to(torch.device("cpu")).val is None
    images, labels = (torch.from_numpy(array) for array in synthetic_split(60, 5))
    order = torch.randperm(60, generator=torch.Generator().manual_seed(0))
    assert torch.equal(fashion.train.images, images[order]) and torch.equal(fashion.train.labels, labels[order].long())
    held_out = data.load(str(tmp_path), val_size=15, split_seed=0)
    assert torch.equal(torch.cat([held_out.val.images, held_out.train.images]), fashion.train.images)


def test_torchvision_layout_under_root_is_found(tmp_path: Path) -> None:
    write_dataset(tmp_path / "FashionMNIST" / "raw", train=20, test=10, gz=False)
    assert data.locate(str(tmp_path)) == tmp_path / "FashionMNIST" / "raw"


def _corrupt(path: Path, payload: bytes) -> None:
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)


def _idx(path: Path) -> bytes:
    raw = path.read_bytes()
    return gzip.decompress(raw) if path.suffix == ".gz" else raw


CORRUPTIONS = {
    "truncated data": lambda raw: raw[: len(raw) // 2],
    "truncated header": lambda raw: raw[:10],
    "empty": lambda raw: b"",
    "wrong type code": lambda raw: raw[:2] + b"\x09" + raw[3:],
    "trailing bytes": lambda raw: raw + b"\x00" * 7,
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
@pytest.mark.parametrize(
    ("name", "gz"),
    [("train-images-idx3-ubyte", True), ("t10k-labels-idx1-ubyte", False)],
    ids=["images-gzip", "labels-plain"],
)
def test_corrupt_file_is_named(tmp_path: Path, kind: str, name: str, gz: bool) -> None:
    write_dataset(tmp_path, train=40, test=20, gz=gz)
    path = tmp_path / (f"{name}.gz" if gz else name)
    _corrupt(path, CORRUPTIONS[kind](_idx(path)))
    with pytest.raises(UserError, match=re.escape(str(path))):
        data.load(str(tmp_path), val_size=10, split_seed=0)


def test_truncated_gzip_stream_is_named(tmp_path: Path) -> None:
    write_dataset(tmp_path, train=40, test=20, gz=True)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])  # cut the stream: no end-of-stream marker
    with pytest.raises(UserError, match=rf"{re.escape(str(path))}.*truncated or corrupt"):
        data.load(str(tmp_path), val_size=10, split_seed=0)


def test_not_gzip_at_all_is_named(tmp_path: Path) -> None:
    write_dataset(tmp_path, train=40, test=20, gz=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(b"<html>not found</html>")
    with pytest.raises(UserError, match=re.escape(str(path))):
        data.load(str(tmp_path), val_size=10, split_seed=0)


def test_images_of_another_size_are_refused(tmp_path: Path) -> None:
    write_dataset(tmp_path, train=40, test=20, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    write_idx(path, np.zeros((40, 32, 32), dtype=np.uint8))
    with pytest.raises(UserError, match=rf"{re.escape(str(path))} holds images of size \(32, 32\)"):
        data.load(str(tmp_path), val_size=10, split_seed=0)


def test_image_and_label_counts_must_match(tmp_path: Path) -> None:
    write_dataset(tmp_path, train=40, test=20, gz=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(19, dtype=np.uint8))
    with pytest.raises(UserError, match=r"20 images but .* 19 labels"):
        data.load(str(tmp_path), val_size=10, split_seed=0)


def test_labels_outside_the_ten_classes_are_refused(tmp_path: Path) -> None:
    write_dataset(tmp_path, train=40, test=20, gz=False)
    labels = np.full(20, 10, dtype=np.uint8)
    path = write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels)
    with pytest.raises(UserError, match=rf"{re.escape(str(path))} holds labels outside 0..9"):
        data.load(str(tmp_path), val_size=10, split_seed=0)


def test_missing_root_names_the_three_ways(tmp_path: Path) -> None:
    with pytest.raises(UserError) as error:
        data.load(str(tmp_path / "nowhere"), val_size=10, split_seed=0)
    message = str(error.value)
    assert "is not an existing directory" in message
    assert "data.root=" in message and "apt-get install -y dataset-fashion-mnist" in message
    assert "download" in message


def test_root_without_the_files_is_refused(tmp_path: Path) -> None:
    write_dataset(tmp_path, train=40, test=20, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError, match="does not hold the four Fashion-MNIST files"):
        data.load(str(tmp_path), val_size=10, split_seed=0)


@pytest.mark.parametrize("val_size", [40, 41])
def test_validation_that_leaves_no_training_data(tmp_path: Path, val_size: int) -> None:
    write_dataset(tmp_path, train=40, test=20, gz=True)
    with pytest.raises(
        UserError, match=rf"data.val_size={val_size} leaves no training data.*between 0 \(no validation\) and 39"
    ):
        data.load(str(tmp_path), val_size=val_size, split_seed=0)


def test_no_data_anywhere_and_no_network_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "SYSTEM_DIR", tmp_path / "no-system-copy")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr("torchvision.datasets.FashionMNIST", offline)  # data imports it only to download
    with pytest.raises(UserError) as error:
        data.locate(None)
    message = str(error.value)
    assert "could not be found or downloaded" in message and "network is unreachable" in message
    assert "data.root=DIR" in message and "dataset-fashion-mnist" in message
    assert str(tmp_path / "cache") in message


def test_cache_is_used_when_no_root_is_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "SYSTEM_DIR", tmp_path / "no-system-copy")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cached = write_dataset(tmp_path / "cache" / "lenet_fmnist" / "FashionMNIST" / "raw", train=20, test=10, gz=True)
    assert data.locate(None) == cached


def test_test_split_alone_does_not_read_the_training_file(tmp_path: Path) -> None:
    write_dataset(tmp_path, train=40, test=20, gz=True, seed=5)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"corrupt, but eval never reads it")
    test = data.load_test(str(tmp_path))
    images, labels = synthetic_split(20, 6)
    assert torch.equal(test.images, torch.from_numpy(images)) and torch.equal(
        test.labels, torch.from_numpy(labels).long()
    )


# ---------------------------------------------------------------------------------------------
# Our IDX reader against torchvision's, which it replaces (torchvision is imported by tests only)


def test_classes_are_torchvisions() -> None:
    from torchvision.datasets import FashionMNIST

    assert tuple(FashionMNIST.classes) == data.CLASSES


@pytest.mark.parametrize("labels", [False, True], ids=["images", "labels"])
def test_idx_reader_reads_what_torchvisions_reads(tmp_path: Path, labels: bool) -> None:
    from torchvision.datasets.mnist import read_image_file, read_label_file

    images, classes = synthetic_split(50, 7)
    path = write_idx(tmp_path / "file-idx-ubyte", classes if labels else images)
    theirs = (read_label_file if labels else read_image_file)(str(path))
    mine = data._read_idx(path, labels=labels)
    assert mine.dtype == torch.uint8 and torch.equal(mine.to(theirs.dtype), theirs)  # their labels are int64
    assert mine.numpy().flags.writeable  # a tensor of its own, not a view of the immutable bytes read


@pytest.mark.parametrize(
    ("name", "labels"), [("t10k-images-idx3-ubyte", False), ("t10k-labels-idx1-ubyte", True)], ids=["images", "labels"]
)
def test_real_files_read_as_torchvision_reads_them(tmp_path: Path, name: str, labels: bool) -> None:
    from torchvision.datasets.mnist import read_image_file, read_label_file

    path = data._find_file(data.SYSTEM_DIR, name)
    if path is None:
        pytest.skip(f"no Fashion-MNIST in {data.SYSTEM_DIR}")
    plain = tmp_path / name  # torchvision's reader takes plain files only
    plain.write_bytes(_idx(path))
    theirs = (read_label_file if labels else read_image_file)(str(plain))
    assert torch.equal(data._read_idx(path, labels=labels).to(theirs.dtype), theirs)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"\x00\x00\x08", "less than the 16-byte header"),
        (b"\x00\x00\x08\x01" + b"\x00" * 12, r"magic number 00000801, not 00000803"),  # labels' dimensions
        (b"\x00\x00\x0d\x03" + b"\x00" * 12, r"magic number 00000d03"),  # floats, not bytes
        (b"\x01\x00\x08\x03" + b"\x00" * 12, r"magic number 01000803"),
        (b"\x00\x00\x08\x03" + b"\x00\x00\x00\x02" + b"\x00\x00\x00\x01" * 2 + b"\x00", r"1 bytes of data .* need 2"),
    ],
    ids=["short", "dimensions", "type", "magic", "count"],
)
def test_parse_idx_says_what_is_wrong(raw: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        data.parse_idx(raw, dimensions=3)


def test_damaged_gzip_stream_is_named(tmp_path: Path) -> None:
    """A changed byte inside the compressed data: zlib's own error or gzip's CRC check, never a crash."""
    write_dataset(tmp_path, train=40, test=20, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    damaged = bytearray(path.read_bytes())
    for position in range(60, len(damaged) - 8, 997):  # past the header and the file name, before the CRC
        damaged[position] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(UserError, match=rf"{re.escape(str(path))}.*truncated or corrupt"):
        data.load(str(tmp_path), val_size=10, split_seed=0)
