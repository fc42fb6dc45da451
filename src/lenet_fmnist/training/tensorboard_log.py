"""TensorBoard logging of one run, into the run's own directory.

The hyperparameters go in as ONE HParams session in the run's own event file (`add_hparams`
would open a sub-run per call), so `tensorboard --logdir outputs` lines up every run of a sweep
in the HParams table. Events are flushed every epoch: a killed run keeps its curves. A run
without validation (data.val_size=0) has no validation curves or HParams metrics, and a text
entry, `validation`, that says so.

The event file opens at the end of the first epoch (or at `close`, for a run stopped sooner), not
before the first step: tensorboard's import and the PNG of the sample grid (PIL) cost start-up
time that training need not wait for. What comes before (the hyperparameters, the samples) waits.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lenet_fmnist.run import validation

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

# The metrics the HParams table shows for each run; each is also written as a scalar.
HPARAM_METRICS = ("accuracy/val", "accuracy/test", "loss/val", "loss/test")
# An epoch record's losses and accuracies and their tags; the validation ones only when it has them.
EPOCH_SCALARS = (
    ("train_loss", "loss/train"),
    ("val_loss", "loss/val"),
    ("train_acc", "accuracy/train"),
    ("val_acc", "accuracy/val"),
)


def hparam_metrics(config: dict[str, Any]) -> tuple[str, ...]:
    """The HParams metrics of a run of `config`: the test ones alone when it has no validation."""
    return HPARAM_METRICS if validation.validates(config) else tuple(m for m in HPARAM_METRICS if "/val" not in m)


def hyperparameters(config: dict[str, Any]) -> dict[str, Any]:
    """The values that tell runs apart, flattened to TensorBoard's scalar types."""
    return {
        "activation": config["activation"]["name"],
        "pool": config["pool"]["name"],
        "optimizer": config["optimizer"]["name"],
        "lr": config["optimizer"]["lr"],
        "schedule": config["optimizer"]["schedule"],
        "dropout": config["dropout"]["p"],
        "flip": config["augmentation"]["flip"],
        "max_shift": config["augmentation"]["max_shift"],
        "test_flip": config["augmentation"]["test_flip"],
        "erase_p": config["augmentation"]["erase_p"],
        "label_smoothing": config["label_smoothing"],
        # 0 when off: an average with decay 0 is the weights themselves. One type for the column.
        "ema_decay": config["ema"]["decay"] or 0.0,
        "val_size": config["data"]["val_size"],
        "epochs": config["epochs"],
        "batch_size": config["batch_size"],
        "seed": config["seed"],
    }


class TensorBoardLog:
    def __init__(self, run_dir: Path, config: dict[str, Any], start_epoch: int) -> None:
        self.run_dir, self.config, self.start_epoch = run_dir, config, start_epoch
        self._writer: SummaryWriter | None = None
        self._samples: torch.Tensor | None = None  # until the event file opens

    @property
    def writer(self) -> SummaryWriter:
        """The run's event file, opened at its first use with what came before it."""
        if self._writer is None:
            self._writer = self._open()
        return self._writer

    def _open(self) -> SummaryWriter:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        # purge_step drops events a resumed run wrote after its last checkpoint, so the curves
        # continue without duplicate steps.
        resumed = self.start_epoch > 1
        writer = SummaryWriter(str(self.run_dir), purge_step=self.start_epoch if resumed else None)
        if not resumed:
            for summary in hparams(hyperparameters(self.config), dict.fromkeys(hparam_metrics(self.config), 0.0)):
                writer.file_writer.add_summary(summary)
            if not validation.validates(self.config):
                writer.add_text("validation", validation.describe(0))
        if self._samples is not None:
            writer.add_image("inputs/augmented", image_grid(self._samples))
        writer.flush()
        return writer

    def epoch(self, epoch: int, record: dict[str, float], lr: float) -> None:
        """An epoch's curves; a record without validation (data.val_size=0) has no val_* keys."""
        for key, tag in EPOCH_SCALARS:
            if key in record:
                self.writer.add_scalar(tag, record[key], epoch)
        self.writer.add_scalar("learning_rate", lr, epoch)
        self.writer.add_scalar("speed/images_per_second", record["images_per_second"], epoch)
        self.writer.flush()

    def samples(self, images: torch.Tensor) -> None:
        """A grid of augmented training inputs (uint8 B x H x W), to see what the model sees;
        drawn when the event file opens (a new run calls this before its first step)."""
        if self._writer is None:
            self._samples = images[:64].cpu().clone()  # as they are now: the images may be a view
        else:
            self._writer.add_image("inputs/augmented", image_grid(images[:64].cpu()))
            self._writer.flush()

    def test(self, step: int, accuracy: float, loss: float, confusion: torch.Tensor, classes: tuple[str, ...]) -> None:
        self.writer.add_scalar("accuracy/test", accuracy, step)
        self.writer.add_scalar("loss/test", loss, step)
        self.writer.add_figure("confusion_matrix/test", confusion_figure(confusion, classes), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def image_grid(images: torch.Tensor, columns: int = 8, padding: int = 2, fill: int = 255) -> torch.Tensor:
    """uint8 B x H x W images side by side, `columns` to a row, `padding` pixels of `fill` around
    each, as 3 x H' x W' RGB: the picture torchvision's make_grid(images[:, None], nrow=columns,
    padding=padding, pad_value=fill) gives, drawn here because importing torchvision costs seconds."""
    count, height, width = images.shape
    if count == 1:  # make_grid gives a lone image as it is, without padding
        return images.expand(3, height, width).clone()
    across = min(columns, count)
    down = math.ceil(count / across)
    grid = images.new_full((down * (height + padding) + padding, across * (width + padding) + padding), fill)
    for index, image in enumerate(images):
        row, column = divmod(index, across)
        top, left = padding + row * (height + padding), padding + column * (width + padding)
        grid[top : top + height, left : left + width] = image
    return grid.expand(3, *grid.shape).clone()


def confusion_figure(confusion: torch.Tensor, classes: tuple[str, ...]) -> Any:
    """A labelled heat map of a confusion matrix (rows: true class, columns: predicted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = confusion.double() / confusion.sum(dim=1, keepdim=True).clamp(min=1)
    figure, axes = plt.subplots(figsize=(7, 6))
    axes.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for row in range(len(classes)):
        for col in range(len(classes)):
            colour = "white" if rates[row, col] > 0.5 else "black"
            axes.text(col, row, str(int(confusion[row, col])), ha="center", va="center", fontsize=7, color=colour)
    figure.tight_layout()
    return figure
