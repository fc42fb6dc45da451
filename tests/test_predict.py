"""`predict` as a user runs it, and the image preparation behind it.

The test images are made here with Pillow from the synthetic data (conftest.synthetic_split),
framed as Fashion-MNIST's are (the item spans all 28 rows; the left and right columns are
background), so preparation must leave them unchanged. Each is saved as 8- and 16-bit PNG,
inverted (dark on light), as an RGBA and a palette cutout, enlarged 8x, off-centre on a larger
canvas, as JPEG and shrunk. Through the real CLI, `predict` on the lossless ones must compute
exactly what `eval` computes on the same images: the same classes, and with top_k=10 the same
test loss from the CSV's probabilities.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import CLI, assert_ok, output, synthetic_split, write_idx
from lenet_fmnist import data
from lenet_fmnist.config import compose
from lenet_fmnist.inference import predict as predict_module
from lenet_fmnist.inference.config import PredictConfig
from lenet_fmnist.inference.evaluate import Classifier, Evaluation, confusion_matrix
from lenet_fmnist.inference.images import SIZE, BadImage, load_image, prepare
from lenet_fmnist.model import CHANNELS_LAST, LeNet5
from lenet_fmnist.training import checkpoint
from lenet_fmnist.training.augment import normalise
from lenet_fmnist.workers import Workers
from test_bad_input import assert_clear_failure

COUNT = 64  # test images per variant


def in_data_framing(images: np.ndarray) -> np.ndarray:
    """Synthetic images framed like Fashion-MNIST's: the item (the noisy square) spans all 28
    rows and columns 1 to 26; columns 0 and 27 are background (0)."""
    framed = images.copy()
    framed[:, :, [0, -1]] = 0
    return framed


def _rgba_cutout(image: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A dark item (the negated image) on a transparent background hiding random colours."""
    rgba = np.empty((*image.shape, 4), dtype=np.uint8)
    rgba[..., :3] = (255 - image)[..., None]
    background = image == 0
    rgba[background, :3] = rng.integers(0, 256, size=(int(background.sum()), 3), dtype=np.uint8)
    rgba[..., 3] = np.where(background, 0, 255)
    return Image.fromarray(rgba)


def _palette_cutout(image: np.ndarray) -> Image.Image:
    """The negated image as palette indices on a grey ramp; the background is index 255, green
    and transparent."""
    indices = np.where(image == 0, 255, 255 - image).astype(np.uint8)
    picture = Image.frombytes("P", image.shape[::-1], indices.tobytes())
    picture.putpalette([value for grey in range(255) for value in (grey, grey, grey)] + [0, 200, 0])
    picture.info["transparency"] = 255
    return picture


def _off_centre(image: np.ndarray) -> Image.Image:
    canvas = np.zeros((60, 90), dtype=np.uint8)
    canvas[20:48, 50:78] = image
    return Image.fromarray(canvas)


# kind -> (file suffix, how to make it); the lossless ones must prepare back to the image itself.
LOSSLESS: dict[str, tuple[str, Callable[[np.ndarray, np.random.Generator], Image.Image]]] = {
    "png": (".png", lambda image, rng: Image.fromarray(image)),
    "png16": (".png", lambda image, rng: Image.fromarray(image.astype(np.uint16) * 257)),
    "inverted": (".png", lambda image, rng: Image.fromarray(255 - image)),
    "rgba": (".png", _rgba_cutout),
    "palette": (".png", lambda image, rng: _palette_cutout(image)),
    "large": (".png", lambda image, rng: Image.fromarray(np.kron(image, np.ones((8, 8), dtype=np.uint8)))),
    "offcentre": (".bmp", lambda image, rng: _off_centre(image)),
    "tiff": (".tiff", lambda image, rng: Image.fromarray(image)),
    "webp": (".webp", lambda image, rng: Image.fromarray(image)),  # saved losslessly below
}
LOSSY = {
    "jpeg": (".jpg", lambda image, rng: Image.fromarray(image)),
    "small": (".png", lambda image, rng: Image.fromarray(image).resize((14, 14), Image.Resampling.BOX)),
}
INVERTED = {"inverted", "rgba", "palette"}


@dataclass(frozen=True)
class FramedSet:
    images: np.ndarray  # uint8 COUNT x 28 x 28
    labels: np.ndarray
    root: Path  # a data.root for `eval` whose test set is `images`
    files: Path  # files/<kind>/<index><suffix>

    def file(self, kind: str, index: int) -> Path:
        suffix = {**LOSSLESS, **LOSSY}[kind][0]
        return self.files / kind / f"{index:02d}{suffix}"


@pytest.fixture(scope="module")
def framed(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> FramedSet:
    base = tmp_path_factory.mktemp("framed")
    images, labels = synthetic_split(COUNT, seed=1)
    images = in_data_framing(images)
    root = base / "data"
    root.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (root / name).symlink_to(tiny_data / name)  # eval reads only the test files, but wants all four
    write_idx(root / "t10k-images-idx3-ubyte.gz", images)
    write_idx(root / "t10k-labels-idx1-ubyte.gz", labels)
    result = FramedSet(images, labels, root, base / "files")
    rng = np.random.default_rng(0)
    for kind, (_, make) in {**LOSSLESS, **LOSSY}.items():
        (result.files / kind).mkdir(parents=True)
        for index, image in enumerate(images):
            options = {"lossless": True} if kind == "webp" else {"quality": 95} if kind == "jpeg" else {}
            make(image, rng).save(result.file(kind, index), **options)
    return result


# ---------------------------------------------------------------------------------------------
# Preparation, in-process


def test_an_image_in_the_datas_framing_is_left_unchanged(framed: FramedSet) -> None:
    for image in framed.images:
        prepared = prepare(image.astype(np.float32) / 255, "auto")
        assert np.array_equal(prepared.pixels, image) and not prepared.inverted


@pytest.mark.parametrize("kind", sorted(LOSSLESS))
def test_each_lossless_file_prepares_back_to_its_image(framed: FramedSet, kind: str) -> None:
    for index, image in enumerate(framed.images):
        prepared = load_image(framed.file(kind, index), "auto")
        assert np.array_equal(prepared.pixels, image), f"{kind} {index}"
        assert prepared.inverted == (kind in INVERTED)


def test_forcing_the_wrong_polarity_changes_the_image(framed: FramedSet) -> None:
    """Control for the test above: the inverted files really need inverting."""
    assert not np.array_equal(load_image(framed.file("inverted", 0), "false").pixels, framed.images[0])
    assert not np.array_equal(load_image(framed.file("png", 0), "true").pixels, framed.images[0])


def _box(pixels: np.ndarray, above: int = 12) -> tuple[int, int, int, int]:
    """top, left, height, width of the pixels brighter than `above`."""
    rows, cols = np.nonzero(pixels > above)
    return rows.min(), cols.min(), rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


def test_lossy_files_come_back_close(framed: FramedSet) -> None:
    for index, image in enumerate(framed.images):
        jpeg = load_image(framed.file("jpeg", index), "auto").pixels.astype(int)
        assert np.abs(jpeg - image).mean() < 3, index  # JPEG noise only: same framing, same polarity
        small = load_image(framed.file("small", index), "auto").pixels  # enlarged 2x: fitted and centred
        top, left, height, width = _box(small)
        assert (
            max(height, width) >= SIZE - 1 and abs(2 * top + height - SIZE) <= 2 and abs(2 * left + width - SIZE) <= 2
        )


def _photo(
    size: tuple[int, int], box: tuple[int, int, int, int], item: float, light: tuple[float, float]
) -> np.ndarray:
    """A grey photo: a uniform item (top, left, height, width) on a background lit unevenly (from
    light[0] at the left edge to light[1] at the right), with pixel noise."""
    height, width = size
    grey = np.linspace(*light, width, dtype=np.float32)[None, :].repeat(height, axis=0)
    grey += np.random.default_rng(3).normal(0, 0.03, size).astype(np.float32)
    top, left, item_height, item_width = box
    grey[top : top + item_height, left : left + item_width] = item
    return np.clip(grey, 0, 1)


def test_a_dark_item_on_an_unevenly_lit_noisy_photo_is_inverted_centred_and_fitted() -> None:
    grey = _photo((448, 896), (40, 560, 320, 160), item=0.2, light=(0.95, 0.75))  # 1/8 of it: 56 x 112
    prepared = prepare(grey, "auto")
    assert prepared.inverted
    top, left, height, width = _box(prepared.pixels)
    assert (height, width) == (28, 14) and (top, left) == (0, 7)
    outside = np.ones((SIZE, SIZE), dtype=bool)
    outside[top : top + height, left : left + width] = False
    assert prepared.pixels[outside].max() <= 12, "the background must come out black"
    assert prepared.pixels[~outside].mean() > 150, "the dark item must come out light"


def test_a_small_item_keeps_its_detail() -> None:
    """A 64 px item with 8 px stripes in a 1200 x 900 picture: found on the 112 px copy (where it
    is 6 px wide), but cut from the full-size image, so the stripes survive."""
    grey = np.zeros((900, 1200), dtype=np.float32)
    stripes = np.where((np.arange(64) // 8) % 2 == 0, 0.9, 0.3).astype(np.float32)
    grey[700:764, 100:164] = stripes[None, :]
    pixels = prepare(grey, "auto").pixels.astype(float)
    assert _box(pixels.astype(np.uint8)) == (0, 0, 28, 28)
    assert pixels.std() > 65, "the stripes were blurred away (cut from the 112 px copy: 54)"
    assert np.count_nonzero(np.diff(pixels[14] > 150)) == 7, "8 stripes make 7 edges (from the 112 px copy: 5)"


def test_wide_and_small_items_keep_their_aspect_ratio() -> None:
    wide = _photo((100, 400), (30, 50, 40, 300), item=0.9, light=(0.0, 0.0))
    assert _box(prepare(wide, "auto").pixels) == (12, 0, 4, 28)  # 40 x 300 -> 4 x 28, centred
    small = np.zeros((80, 80), dtype=np.float32)
    small[2:12, 70:76] = 0.8  # 10 x 6 in a corner -> 28 x 17, centred
    assert _box(prepare(small, "auto").pixels) == (0, 5, 28, 17)


def test_a_jpeg_is_turned_upright_by_its_exif_orientation(tmp_path: Path) -> None:
    tall = np.zeros((200, 100), dtype=np.uint8)
    tall[20:180, 30:70] = 220  # 160 x 40: a tall item
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": stored lying on its side
    Image.fromarray(np.rot90(tall)).save(tmp_path / "tall.jpg", exif=exif, quality=95)
    _, _, height, width = _box(load_image(tmp_path / "tall.jpg", "auto").pixels)
    assert height == SIZE and width <= 9, "lying on its side, it would be 28 wide"


@pytest.mark.parametrize(
    ("pixels", "pattern"),
    [
        (np.zeros((1, 1)), r"1 x 1 pixels is too small"),
        (np.zeros((2, 40)), r"40 x 2 pixels is too small"),
        (
            np.full((30, 30), 0.7),
            r"no item found: no pixel is more than 5% brighter than the background after inverting",
        ),
    ],
)
def test_images_that_hold_no_item(pixels: np.ndarray, pattern: str) -> None:
    with pytest.raises(BadImage, match=pattern):
        prepare(pixels.astype(np.float32), "auto")


# ---------------------------------------------------------------------------------------------
# The progress bar, in-process


class RecordingBar:
    """Stands in for tqdm: the options predict_files gives its bar, and each update with its thread."""

    def __init__(self, **options: object) -> None:
        self.options = options
        self.updates: list[tuple[int, int]] = []

    def __enter__(self) -> RecordingBar:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def update(self, files: int) -> None:
        self.updates.append((threading.get_ident(), files))


def _some_files(folder: Path, good: int) -> list[Path]:
    """`good` PNG files of framed synthetic images, and a text file named .png third."""
    folder.mkdir()
    paths = []
    for index, image in enumerate(in_data_framing(synthetic_split(good, seed=2)[0])):
        paths.append(folder / f"{index:02d}.png")
        Image.fromarray(image).save(paths[-1])
    paths.insert(2, folder / "notes.png")
    paths[2].write_text("a shopping list, not a picture\n")
    return paths


def _no_model(pixels: torch.Tensor) -> torch.Tensor:
    return torch.zeros(len(pixels), 10)


@pytest.mark.parametrize(("threads", "batch_size"), [(1, 5), (3, 1), (3, 2)])
def test_the_progress_bar_advances_by_whole_chunks_from_the_callers_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: int, batch_size: int
) -> None:
    bars: list[RecordingBar] = []

    def recording_bar(**options: object) -> RecordingBar:
        bars.append(RecordingBar(**options))
        return bars[-1]

    monkeypatch.setattr(predict_module, "tqdm", recording_bar)
    paths = _some_files(tmp_path / "files", good=11)
    cfg = compose("predict", "checkpoint=unused", "images=unused", f"batch_size={batch_size}", schema=PredictConfig)
    with Workers(threads) as workers:
        results, bad = predict_module.predict_files(_no_model, paths, cfg, torch.device("cpu"), workers)
    assert [r.path for r in results] == paths[:2] + paths[3:] and [path for path, _ in bad] == [paths[2]]
    (bar,) = bars
    assert bar.options["total"] == 12 and bar.options["disable"] is None  # no bar where not a terminal
    assert {thread for thread, _ in bar.updates} == {threading.get_ident()}
    shown = np.cumsum([files for _, files in bar.updates])
    assert shown[-1] == 12 and all(n % batch_size == 0 or n == 12 for n in shown)  # whole chunks
    # In each case the caller's thread computes two chunks or more: the bar moves before the end.
    assert np.count_nonzero([files for _, files in bar.updates]) >= 2


def test_the_progress_bar_shows_on_a_terminal_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    paths = _some_files(tmp_path / "files", good=4)
    cfg = compose("predict", "checkpoint=unused", "images=unused", "batch_size=2", schema=PredictConfig)
    for stream, shown in ((io.StringIO(), False), (Terminal(), True)):
        monkeypatch.setattr("sys.stderr", stream)
        with Workers(2) as workers:
            predict_module.predict_files(_no_model, paths, cfg, torch.device("cpu"), workers)
        # tqdm redraws at most every 0.1 s and clears the bar when done (leave=False): its first drawing remains.
        assert ("predict:" in stream.getvalue() and "/5 [" in stream.getvalue()) == shown, stream.getvalue()


# ---------------------------------------------------------------------------------------------
# The command line


def read_csv(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "predictions.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _checkpoint(run: Path) -> Path:
    return run / "checkpoints" / "best.pt"


def predict(cli: CLI, run: Path, images: str, run_dir: Path, *extra: str) -> str:
    result = cli.run(
        "predict", f"checkpoint={_checkpoint(run)}", f"images={images}", "device=cpu", "threads=1",
        f"hydra.run.dir={run_dir}", *extra,
    )  # fmt: skip
    assert_ok(result)
    return output(result)


@pytest.fixture(scope="module")
def predicted(cli: CLI, tiny_run: Path, framed: FramedSet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every file of every variant in one run, all ten classes per row."""
    run_dir = tmp_path_factory.mktemp("predicted") / "run"
    text = predict(cli, tiny_run, f"{framed.files}/**/*", run_dir, "top_k=10")
    assert f"(the model's inputs: 64 of {COUNT * (len(LOSSLESS) + len(LOSSY))} images)" in text
    assert re.search(r"file\s+top 1\s+top 2 .* top 10\n", text) and "more in predictions.csv" in text
    return run_dir


def test_predict_writes_one_row_per_file_with_its_classes(predicted: Path, framed: FramedSet) -> None:
    rows = read_csv(predicted)
    written = sorted(str(p) for p in framed.files.rglob("*") if p.is_file())
    assert sorted(row["file"] for row in rows) == written
    for row in rows:
        classes = [row[f"class_{rank}"] for rank in range(1, 11)]
        probabilities = [float(row[f"probability_{rank}"]) for rank in range(1, 11)]
        assert sorted(classes) == sorted(data.CLASSES)
        assert probabilities == sorted(probabilities, reverse=True) and math.isclose(
            sum(probabilities), 1, abs_tol=1e-5
        )
        kind = Path(row["file"]).parent.name
        assert row["inverted"] == str(kind in INVERTED).lower(), row
    figure = Image.open(predicted / "predictions.png")
    assert figure.format == "PNG" and figure.width > 500


def _by_kind(rows: list[dict[str, str]], kind: str) -> list[dict[str, str]]:
    return [row for row in rows if Path(row["file"]).parent.name == kind]


def _mean_loss(rows: list[dict[str, str]], labels: np.ndarray) -> float:
    """Mean cross-entropy from the CSV: -log of the probability it gives each image's label."""
    losses = []
    for row, label in zip(rows, labels, strict=True):
        given = {row[f"class_{rank}"]: float(row[f"probability_{rank}"]) for rank in range(1, 11)}
        losses.append(-math.log(given[data.CLASSES[label]]))
    return sum(losses) / len(losses)


def test_predict_agrees_with_eval_on_the_same_images(
    cli: CLI, predicted: Path, framed: FramedSet, tiny_run: Path, tmp_path: Path
) -> None:
    result = cli.run(
        "eval", f"checkpoint={_checkpoint(tiny_run)}", f"data.root={framed.root}", "device=cpu", "threads=1",
        f"hydra.run.dir={tmp_path / 'eval'}",
    )  # fmt: skip
    assert_ok(result)
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    rows = read_csv(predicted)
    labels = torch.from_numpy(framed.labels).long()
    for kind in LOSSLESS:
        mine = _by_kind(rows, kind)
        classes = torch.tensor([data.CLASSES.index(row["class_1"]) for row in mine])
        assert confusion_matrix(labels, classes).tolist() == report["confusion_matrix"], kind
        assert _mean_loss(mine, framed.labels) == pytest.approx(report["test_loss"], rel=1e-4), kind


def _probabilities(rows: list[dict[str, str]]) -> np.ndarray:
    """The CSV's probabilities (written with top_k=10) as N x 10, in class order."""
    table = np.zeros((len(rows), len(data.CLASSES)))
    for row, line in zip(rows, table, strict=True):
        for rank in range(1, 11):
            line[data.CLASSES.index(row[f"class_{rank}"])] = float(row[f"probability_{rank}"])
    return table


def test_predict_honours_test_time_flip(cli: CLI, flip_run: Path, framed: FramedSet, tmp_path: Path) -> None:
    text = predict(cli, flip_run, str(framed.files / "png"), tmp_path / "run", "top_k=10")
    assert "test-time flip on" in text
    rows = read_csv(tmp_path / "run")
    model = checkpoint.model_from(checkpoint.load(_checkpoint(flip_run)), "flip_run").to(memory_format=CHANNELS_LAST)
    images, labels = torch.from_numpy(framed.images), torch.from_numpy(framed.labels).long()
    _, _, classes = Evaluation(1000)(Classifier(model, True, uint8_input=True), images, labels)
    assert [row["class_1"] for row in rows] == [data.CLASSES[c] for c in classes]
    with torch.inference_mode():
        inputs = normalise(images)
        plain, mirrored = model(inputs), model(inputs.flip(-1))
    flipped = torch.softmax((plain + mirrored) / 2, dim=1).numpy()
    written = _probabilities(rows)
    assert np.abs(written - flipped).max() < 1e-6  # the CSV's 6 decimals
    # Control: without the flip the probabilities differ by far more than the CSV's rounding.
    assert np.abs(written - torch.softmax(plain, dim=1).numpy()).max() > 1e-4


def test_predict_uses_the_weight_average(cli: CLI, ema_run: Path, framed: FramedSet, tmp_path: Path) -> None:
    """A checkpoint with a moving average of its weights (ema.decay) predicts with the average."""
    text = predict(cli, ema_run, str(framed.files / "png"), tmp_path / "run", "top_k=10")
    assert "the exponential moving average of the weights (ema.decay=" in text
    state = checkpoint.load(_checkpoint(ema_run))
    averaged, trained = checkpoint.model_from(state, "ema_run"), LeNet5("tanh", "avg")
    trained.load_state_dict(state["model"])
    inputs = normalise(torch.from_numpy(framed.images))
    with torch.inference_mode():
        expected, control = (torch.softmax(model.eval()(inputs), dim=1).numpy() for model in (averaged, trained))
    written = _probabilities(read_csv(tmp_path / "run"))
    assert np.abs(written - expected).max() < 1e-6  # the CSV's 6 decimals
    assert np.abs(written - control).max() > 1e-3  # control: not the trained weights


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.fixture(scope="module")
def bad_files(framed: FramedSet, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("bad_files")
    files = {"text": base / "notes.png", "truncated": base / "cut.png", "tiny": base / "dot.png"}
    files["text"].write_text("a shopping list, not a picture\n")
    whole = framed.file("large", 0).read_bytes()
    files["truncated"].write_bytes(whole[: len(whole) // 2])
    Image.fromarray(np.full((1, 1), 200, dtype=np.uint8)).save(files["tiny"])
    return files


BAD_REASONS = {
    "text": r"notes.png: not a PNG, JPEG, BMP, TIFF or WebP image",
    "truncated": r"cut.png: damaged or truncated image data \(image file is truncated",
    "tiny": r"dot.png: 1 x 1 pixels is too small: an image needs at least 3 x 3",
}


def test_a_folder_of_bad_files_fails_naming_each(cli: CLI, tiny_run: Path, bad_files: dict[str, Path]) -> None:
    folder = bad_files["text"].parent
    run_dir = folder.parent / "all-bad-run"
    result = cli.run("predict", f"checkpoint={_checkpoint(tiny_run)}", f"images={folder}", f"hydra.run.dir={run_dir}")
    assert_clear_failure(result, r"None of the 3 file\(s\) of images='.*' could be used: ")
    for reason in BAD_REASONS.values():
        assert re.search(reason, output(result)), reason
    assert not (run_dir / "predictions.csv").exists()


def test_a_folder_with_some_bad_files_predicts_the_good_ones(
    cli: CLI, tiny_run: Path, framed: FramedSet, bad_files: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    for index, (name, path) in enumerate(bad_files.items()):
        (folder / path.name).write_bytes(path.read_bytes())
        (folder / f"good-{name}.png").write_bytes(framed.file("png", index).read_bytes())
    text = predict(cli, tiny_run, str(folder), tmp_path / "run")
    warning = [line for line in text.splitlines() if "][WARNING]" in line]
    assert len(warning) == 1 and "3 of 6 files were skipped" in warning[0], text
    for reason in BAD_REASONS.values():
        assert re.search(reason, warning[0]), reason
    rows = read_csv(tmp_path / "run")
    assert [Path(row["file"]).name for row in rows] == ["good-text.png", "good-tiny.png", "good-truncated.png"]
    with open(tmp_path / "run" / "skipped.csv", newline="") as handle:
        skipped = {Path(row["file"]).name: row["reason"] for row in csv.DictReader(handle)}
    assert sorted(skipped) == ["cut.png", "dot.png", "notes.png"]
    for reason in BAD_REASONS.values():
        name, why = reason.split(": ", 1)
        assert re.match(why, skipped[name]), (name, skipped[name])
    assert list(rows[0]) == ["file", "class_1", "probability_1", "class_2", "probability_2", "class_3", "probability_3", "inverted"]  # fmt: skip


@pytest.mark.parametrize(
    ("images", "pattern"),
    [
        ("empty", r"images='.*empty' is an empty folder: it holds no files"),
        ("nothing/*.jpg", r"images='.*nothing/\*.jpg' matches no files"),
        ("missing.png", r"images='.*missing.png' does not exist. Give an image file, a folder"),
        ("dot.png", r"None of the 1 file\(s\) .*/dot.png: 1 x 1 pixels is too small"),
    ],
)
def test_images_that_name_nothing_usable(
    cli: CLI, tiny_run: Path, bad_files: dict[str, Path], tmp_path: Path, images: str, pattern: str
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "nothing").mkdir()
    where = bad_files["tiny"].parent if images == "dot.png" else tmp_path
    result = cli.run(
        "predict",
        f"checkpoint={_checkpoint(tiny_run)}",
        f"images={where / images}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert_clear_failure(result, pattern)


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("top_k=0", r"top_k=0 is not allowed: top_k must be an integer from 1 to 10"),
        ("top_k=11", r"top_k=11 is not allowed"),
        ("invert=maybe", r"invert='maybe' is not allowed: invert must be auto, true or false"),
        ("batch_size=0", r"batch_size=0 is not allowed"),
    ],
)
def test_bad_predict_settings(
    cli: CLI, tiny_run: Path, framed: FramedSet, tmp_path: Path, override: str, pattern: str
) -> None:
    result = cli.run(
        "predict", f"checkpoint={_checkpoint(tiny_run)}", f"images={framed.files / 'png'}", override,
        f"hydra.run.dir={tmp_path / 'run'}",
    )  # fmt: skip
    assert_clear_failure(result, pattern)
    assert not (tmp_path / "run" / "predictions.csv").exists()


def test_a_checkpoint_that_is_not_ours(cli: CLI, framed: FramedSet, tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.pt"
    torch.save({"conv.weight": torch.zeros(3)}, foreign)  # a bare state dict, as other tools save them
    result = cli.run(
        "predict", f"checkpoint={foreign}", f"images={framed.files / 'png'}", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert_clear_failure(result, r"foreign.pt is a PyTorch file but not a lenet_fmnist checkpoint")


def test_outputs_are_never_overwritten_or_written_where_they_cannot_be(
    cli: CLI, tiny_run: Path, predicted: Path, framed: FramedSet, tmp_path: Path
) -> None:
    before = (predicted / "predictions.csv").read_bytes()
    result = cli.run(
        "predict", f"checkpoint={_checkpoint(tiny_run)}", f"images={framed.files / 'png'}", f"hydra.run.dir={predicted}"
    )
    assert_clear_failure(result, r"already holds a run; it is left untouched. Choose another directory")
    assert "resume=true" not in output(result)  # predict has nothing to resume
    assert (predicted / "predictions.csv").read_bytes() == before
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = cli.run(
        "predict",
        f"checkpoint={_checkpoint(tiny_run)}",
        f"images={framed.files / 'png'}",
        f"hydra.run.dir={blocker / 'run'}",
    )
    assert_clear_failure(result, r"The output directory .*a-file/run cannot be written")


# ---------------------------------------------------------------------------------------------
# The real data


def _skip_without_real_data() -> None:
    if not all((data.SYSTEM_DIR / f"{name}.gz").is_file() for pair in data.FILES.values() for name in pair):
        pytest.skip(
            f"the real Fashion-MNIST is not installed in {data.SYSTEM_DIR} (apt-get install dataset-fashion-mnist)"
        )


@pytest.mark.slow
def test_the_real_test_images_come_back_unchanged() -> None:
    """What images.py and README claim: preparation leaves Fashion-MNIST's own framing alone
    (measured: 9,997 of 10,000, none inverted)."""
    _skip_without_real_data()
    images = data.load_test(None).images.numpy()
    prepared = [prepare(image.astype(np.float32) / 255, "auto") for image in images]
    assert not any(p.inverted for p in prepared)
    assert sum(np.array_equal(p.pixels, image) for p, image in zip(prepared, images, strict=True)) >= 9990


def test_predict_on_real_test_images_matches_eval(cli: CLI, real_run: Path, tmp_path: Path) -> None:
    run = real_run
    test = data.load_test(None)
    images, labels = test.images[:100].numpy(), test.labels[:100].numpy()
    root, folder = tmp_path / "data", tmp_path / "png"
    root.mkdir()
    folder.mkdir()
    for name in data.FILES["train"]:
        (root / f"{name}.gz").symlink_to(data.SYSTEM_DIR / f"{name}.gz")
    write_idx(root / "t10k-images-idx3-ubyte.gz", images)
    write_idx(root / "t10k-labels-idx1-ubyte.gz", labels.astype(np.uint8))
    for index, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{index:03d}.png")
    predict(cli, run, str(folder), tmp_path / "predict")
    assert_ok(
        cli.run(
            "eval",
            f"checkpoint={_checkpoint(run)}",
            f"data.root={root}",
            "threads=1",
            f"hydra.run.dir={tmp_path / 'eval'}",
        )
    )
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    classes = [data.CLASSES.index(row["class_1"]) for row in read_csv(tmp_path / "predict")]
    accuracy = float(np.mean(np.array(classes) == labels))
    assert accuracy == report["test_acc"] and accuracy > 0.6, (accuracy, report["test_acc"])
    assert (
        confusion_matrix(torch.from_numpy(labels).long(), torch.tensor(classes)).tolist() == report["confusion_matrix"]
    )
