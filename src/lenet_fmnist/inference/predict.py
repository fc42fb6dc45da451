"""The `predict` command: classify your own images with a trained checkpoint.

Each file is read and prepared by `images` (grey, light item on black, centred and fitted into
28 x 28 as Fashion-MNIST's images were made), then classified in batches on the chosen device by
`evaluate.Classifier`: the checkpoint's LeNet-5 with what `eval` does around it, test-time flip
included.
The run directory gets predictions.csv (top-k classes per file) and predictions.png (the prepared
inputs, titled with their top class), so a user sees what the model saw.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from lenet_fmnist import data
from lenet_fmnist.device import command_workers, select_device
from lenet_fmnist.inference.config import PredictConfig
from lenet_fmnist.inference.evaluate import Classifier, load_classifier
from lenet_fmnist.inference.images import BadImage, Prepared, load_image
from lenet_fmnist.model import CHANNELS_LAST
from lenet_fmnist.run.errors import UserError
from lenet_fmnist.run.files import PREDICTIONS_FIGURE, PREDICTIONS_FILE, SKIPPED_FILE
from lenet_fmnist.run.storage import write_atomic
from lenet_fmnist.training import checkpoint
from lenet_fmnist.workers import Workers

log = logging.getLogger(__name__)

TABLE_ROWS = 50  # rows of the printed table; predictions.csv has them all


# ---------------------------------------------------------------------------------------------
# The model


@torch.inference_mode()
def probabilities(classifier: Classifier, pixels: torch.Tensor) -> torch.Tensor:
    """Class probabilities (N x 10, on the CPU) of uint8 N x 28 x 28 `pixels` already on the
    classifier's device."""
    return torch.softmax(classifier(pixels), dim=1).cpu()


# ---------------------------------------------------------------------------------------------
# The command


@dataclass
class Result:
    path: Path
    prepared: Prepared
    probabilities: torch.Tensor  # 10


class ChunkProgress:
    """A progress bar of the files done, advanced as the team's threads finish their chunks but
    drawn by the thread that created it alone: tqdm's counter and its terminal are not for several
    threads at once. Each thread reports its chunks; the caller's thread, between its own chunks
    and once the map is over (`show`), moves the bar to what all of them have done."""

    def __init__(self, bar: tqdm) -> None:
        self.bar, self._caller = bar, threading.get_ident()
        self._lock = threading.Lock()
        self._done = self._shown = 0

    def chunk_done(self, files: int) -> None:
        with self._lock:
            self._done += files
        if threading.get_ident() == self._caller:
            self.show()

    def show(self) -> None:
        """On the caller's thread: the bar up to the chunks done so far."""
        with self._lock:
            done = self._done
        self.bar.update(done - self._shown)
        self._shown = done


def _predict_chunk(
    classifier: Classifier, paths: list[Path], invert: str, device: torch.device
) -> tuple[list[Result], list[tuple[Path, str]]]:
    """Prepare and classify the files `paths`; the ones that cannot be used, with why."""
    prepared: list[tuple[Path, Prepared]] = []
    bad: list[tuple[Path, str]] = []
    for path in paths:
        try:
            prepared.append((path, load_image(path, invert)))
        except BadImage as error:
            bad.append((path, str(error)))
    if not prepared:
        return [], bad
    pixels = torch.from_numpy(np.stack([item.pixels for _, item in prepared])).to(device)
    probs = probabilities(classifier, pixels)
    return [Result(path, item, p) for (path, item), p in zip(prepared, probs, strict=True)], bad


def predict_files(
    classifier: Classifier, paths: list[Path], cfg: PredictConfig, device: torch.device, workers: Workers
) -> tuple[list[Result], list[tuple[Path, str]]]:
    """Prepare and classify `paths` in chunks of `cfg.batch_size`, computed by `workers` (a chunk
    on one thread: decoding and classifying it), with a progress bar on a terminal (disable=None,
    as train's); the files that cannot be used, with why."""
    with tqdm(total=len(paths), desc="predict", unit="file", leave=False, disable=None) as bar:
        progress = ChunkProgress(bar)

        def chunk(start: int) -> tuple[list[Result], list[tuple[Path, str]]]:
            files = paths[start : start + cfg.batch_size]
            outcome = _predict_chunk(classifier, files, cfg.invert, device)
            progress.chunk_done(len(files))
            return outcome

        chunks = workers.map(chunk, range(0, len(paths), cfg.batch_size))
        progress.show()
    return [r for results, _ in chunks for r in results], [b for _, bad in chunks for b in bad]


def _list_bad(bad: list[tuple[Path, str]], shown: int = 10) -> str:
    listed = "; ".join(f"{path}: {reason}" for path, reason in bad[:shown])
    return listed + (f"; and {len(bad) - shown} more (all in {SKIPPED_FILE})" if len(bad) > shown else "")


def write_skipped(path: Path, bad: list[tuple[Path, str]]) -> None:
    """The files that could not be used, with why: one row each."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows([("file", "reason"), *((str(file), reason) for file, reason in bad)])
    write_atomic(path, lambda handle: handle.write(buffer.getvalue().encode()))


def _top(result: Result, k: int) -> list[tuple[str, float]]:
    probs, classes = result.probabilities.topk(k)
    return [(data.CLASSES[c], float(p)) for p, c in zip(probs.tolist(), classes.tolist(), strict=True)]


def write_csv(path: Path, results: list[Result], top_k: int) -> None:
    """One row per image: file, the top_k classes with their probabilities, and whether it was inverted."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["file"]
    for rank in range(1, top_k + 1):
        header += [f"class_{rank}", f"probability_{rank}"]
    writer.writerow([*header, "inverted"])
    for result in results:
        row: list[object] = [str(result.path)]
        for name, prob in _top(result, top_k):
            row += [name, f"{prob:.6f}"]
        writer.writerow([*row, str(result.prepared.inverted).lower()])
    write_atomic(path, lambda handle: handle.write(buffer.getvalue().encode()))


def format_table(results: list[Result], top_k: int, rows: int = TABLE_ROWS) -> str:
    cells = [[str(r.path), *(f"{name} {prob:.3f}" for name, prob in _top(r, top_k))] for r in results[:rows]]
    header = ["file", *(f"top {rank}" for rank in range(1, top_k + 1))]
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in [header, *cells]]
    if len(results) > rows:
        lines.append(f"... {len(results) - rows} more in predictions.csv")
    return "\n".join(line.rstrip() for line in lines)


def write_figure(path: Path, results: list[Result]) -> None:
    """A grid of the prepared 28 x 28 inputs, each titled with its file, top class and probability."""
    import matplotlib

    matplotlib.use("Agg")  # before pyplot: figures are files, never windows
    import matplotlib.pyplot as plt

    columns = min(8, len(results))
    rows = math.ceil(len(results) / columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(1.2 * columns, 1.55 * rows), squeeze=False, layout="constrained"
    )
    for axis in axes.flat:
        axis.axis("off")
    for axis, result in zip(axes.flat, results, strict=False):
        name, prob = _top(result, 1)[0]
        axis.imshow(result.prepared.pixels, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        label = result.path.name if len(result.path.name) <= 16 else result.path.name[:15] + "…"
        axis.set_title(f"{label}\n{name} {prob:.2f}", fontsize=7)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    write_atomic(path, lambda handle: handle.write(buffer.getvalue()))


def predict_images(cfg: PredictConfig, run_dir: Path, paths: list[Path]) -> list[Result]:
    """The `predict` command on `paths` (`images.find_images(cfg.images)`): prepare and classify
    them, print a table, and write (if any file could not be used) skipped.csv, predictions.png and,
    last, predictions.csv into the run directory: the result file that makes the directory hold a
    run comes only when the rest is written, so a run stopped before (a full disk) can run again there."""
    classifier, state = load_classifier(cfg.checkpoint, uint8_input=True)
    device = select_device(cfg.device)
    classifier.to(device, memory_format=CHANNELS_LAST)
    with command_workers(cfg.threads, device) as workers:
        results, bad = predict_files(classifier, paths, cfg, device, workers)
    if bad:
        write_skipped(run_dir / SKIPPED_FILE, bad)
    if not results:
        raise UserError(
            f"None of the {len(paths)} file(s) of images={cfg.images!r} could be used: {_list_bad(bad)}. "
            "Give PNG, JPEG, BMP, TIFF or WebP images of at least 3 x 3 pixels."
        )
    if bad:
        log.warning("%d of %d files were skipped: %s.", len(bad), len(paths), _list_bad(bad))
    log.info(
        "Checkpoint %s (epoch %d, %s, test-time flip %s): %d image(s) on %s",
        cfg.checkpoint, state["epoch"], checkpoint.weights_used(state), "on" if classifier.test_flip else "off",
        len(results), device,
    )  # fmt: skip
    log.info("Predictions:\n%s", format_table(results, cfg.top_k))
    if cfg.figure_images:
        shown = results[: cfg.figure_images]
        write_figure(run_dir / PREDICTIONS_FIGURE, shown)
        log.info(
            "Wrote %s (the model's inputs: %d of %d images)", run_dir / PREDICTIONS_FIGURE, len(shown), len(results)
        )
    write_csv(run_dir / PREDICTIONS_FILE, results, cfg.top_k)
    log.info("Wrote %s", run_dir / PREDICTIONS_FILE)
    return results
