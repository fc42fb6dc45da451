"""Surface 2: the data files of `data.root`.

An input is one byte that chooses which of the four files it replaces and whether it lies there
gzip-compressed (its name ends in .gz; the bytes are the compressed stream), then the file's
bytes. The case copies the world's tiny data set, puts the file in place and reads the set as a
training run does (lenet_fmnist.data.load); data it accepts must then train: `train` runs on it
through the command line (in-process), and must complete or refuse in one paragraph.

A choice from 8 on replaces a split's images and gives it labels that match their count, so that
a set with zero (or one) images can be whole. Hypothesis writes files with the right structure and
wrong contents: a wrong magic number, type or number of dimensions, sizes that disagree with the
data, labels outside 0-9, image and label counts that disagree, zero images, truncated or corrupt
gzip, and files that are not IDX at all.
"""

from __future__ import annotations

import gzip
import shutil
import struct
import zlib
from pathlib import Path

from hypothesis import strategies as st

from fuzz.harness import Failure, NotACase, Outcome, call, judge_cli, unchanged
from fuzz.world import World
from lenet_fmnist import data

NAMES = (*data.FILES["train"], *data.FILES["test"])  # images, labels, images, labels
VAL_SIZE = 16


def _put(root: Path, name: str, gz: bool, content: bytes) -> Path:
    for old in (root / name, root / f"{name}.gz"):
        old.unlink(missing_ok=True)
    path = root / (f"{name}.gz" if gz else name)
    path.write_bytes(content)
    return path


def _claimed_count(content: bytes, gz: bool) -> int:
    """The image count an images file's header claims (0 when it cannot be read), at most 10,000."""
    try:
        head = gzip.decompress(content)[:8] if gz else content[:8]
    except (OSError, EOFError, zlib.error):
        return 0
    return min(struct.unpack(">I", head[4:8])[0], 10_000) if len(head) == 8 else 0


def _place(world: World, scratch: Path, choice: int, content: bytes) -> tuple[Path, Path]:
    """The world's data set in `scratch` with file `choice` % 4 replaced (gzip-compressed when
    choice % 8 >= 4); from choice 8 on, the images of a split, with labels that match their count:
    (the directory, the file)."""
    root = Path(shutil.copytree(world.data, scratch / "data"))
    gz = choice // 4 % 2 == 1
    if choice < 8:
        return root, _put(root, NAMES[choice % 4], gz, content)
    images, labels = NAMES[2 * (choice % 2)], NAMES[2 * (choice % 2) + 1]
    _put(root, labels, False, idx_file(_claimed_count(content, gz), labels=True))
    return root, _put(root, images, gz, content)


def run(world: World, raw: bytes) -> Outcome:
    if not raw:
        raise NotACase("no choice byte")
    with world.scratch() as scratch:
        root, path = _place(world, scratch, raw[0], raw[1:])
        names = [str(path), str(root), "data.val_size"]
        with unchanged(root, world.data):
            outcome = call(lambda: data.load(str(root), VAL_SIZE, 0), names)
            if not outcome.accepted:
                return outcome
            args = world.train_args(scratch / "run", f"data.root={root}", f"data.val_size={VAL_SIZE}")
            trained, text = judge_cli(args, names)
        if trained.accepted and not (scratch / "run" / "checkpoints" / "best.pt").is_file():
            raise Failure(f"data accepted, training exited 0, but wrote no checkpoint:\n{text[-2000:]}")
    return trained


# ---- structured inputs ----------------------------------------------------------------------


def idx_file(count: int, labels: bool, fault: str = "none", seed: int = 0) -> bytes:
    """An IDX file of `count` images (28 x 28) or labels, right but for its `fault`: a wrong magic
    number, type code or number of dimensions, an image size, fewer or more bytes than its sizes
    say, labels outside 0-9, or a count no file could hold."""
    ndim = {"ndim": 2 if labels else 1}.get(fault, 1 if labels else 3)
    code = 0x0D if fault == "type" else 0x08
    sizes = ([2**32 - 1] if fault == "count" else [count]) + [27 if fault == "size" else 28] * (ndim - 1)
    header = struct.pack(">HBB", 0x0100 if fault == "magic" else 0, code, ndim) + struct.pack(f">{ndim}I", *sizes)
    length = count * (1 if labels else 28 * 28) if fault not in ("size", "ndim") else count * 27 * 28
    length += {"short": -1, "long": 3}.get(fault, 0)
    values = [(seed + i) % (11 if fault == "labels" and labels else 10 if labels else 256) for i in range(length)]
    if fault == "labels" and labels and length:
        values[-1] = 10
    return header + bytes(values)


FAULTS = ("none", "none", "none", "magic", "type", "ndim", "size", "short", "long", "labels", "count")


@st.composite
def _file(draw: st.DrawFn) -> bytes:
    """One file, or a split's two (choice >= 8: the labels' file made to match the images')."""
    choice = draw(st.integers(0, 15))
    count = draw(st.sampled_from((0, 0, 1, 2, 17, 64, 100, 256)))
    labels = choice % 2 == 1 and choice < 8
    if draw(st.integers(0, 5)) == 0:
        content = draw(st.one_of(
            st.binary(max_size=64),
            st.sampled_from((b"", b"\x1f\x8b", b"not an IDX file\n", b"\x89PNG\r\n\x1a\n", b"\x00\x00\x08")),
        ))  # fmt: skip
    else:
        content = idx_file(count, labels, draw(st.sampled_from(FAULTS)), draw(st.integers(0, 9)))
    if choice // 4 % 2:  # a .gz name: compressed, then perhaps cut short or damaged
        content = gzip.compress(content, mtime=0)
        damage = draw(st.sampled_from(("none", "none", "none", "cut", "flip")))
        if damage == "cut" and len(content) > 2:
            content = content[: draw(st.integers(1, len(content) - 1))]
        elif damage == "flip":
            at = draw(st.integers(0, len(content) - 1))
            content = content[:at] + bytes([content[at] ^ 0xFF]) + content[at + 1 :]
    return bytes([choice]) + content


def strategy(world: World) -> st.SearchStrategy[bytes]:
    return _file()


def seeds(world: World) -> list[bytes]:
    """Each of the world's four files, plain and compressed."""
    found = []
    for choice, name in enumerate(NAMES):
        compressed = (world.data / f"{name}.gz").read_bytes()
        found += [bytes([choice]) + gzip.decompress(compressed), bytes([choice + 4]) + compressed]
    if not all(found):
        raise Failure("the world's data set is missing")
    return found
