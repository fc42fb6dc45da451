"""Evaluation: loss, accuracy and confusion matrix of a model on a split, and the `eval` command."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lenet_fmnist import data
from lenet_fmnist.device import command_workers, select_device
from lenet_fmnist.inference.config import EvalConfig
from lenet_fmnist.model import CHANNELS_LAST
from lenet_fmnist.run.files import EVAL_FILE
from lenet_fmnist.run.storage import write_json
from lenet_fmnist.training import checkpoint
from lenet_fmnist.training.augment import normalise
from lenet_fmnist.workers import Workers

log = logging.getLogger(__name__)


class Classifier(nn.Module):
    """LeNet-5 with what `eval` does around it: normalisation (for uint8 input) and, when the
    checkpoint was trained with augmentation.test_flip, logits averaged over each image and its
    mirror image. `evaluate` (validation and `eval`) and `predict` run it and `export` writes it,
    so all of them compute the same.

    Input: uint8 N x 28 x 28 pixels when `uint8_input`, else float32 N x 1 x 28 x 28 normalised
    as in training ((pixel / 255 - MEAN) / STD). Output: logits N x 10.
    """

    def __init__(self, model: nn.Module, test_flip: bool, uint8_input: bool) -> None:
        super().__init__()
        self.model = model
        self.test_flip = test_flip
        self.uint8_input = uint8_input
        self.eval()  # dropout off: when evaluating, predicting and in every exported graph

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        inputs = normalise(images) if self.uint8_input else images
        logits = self.model(inputs)
        if self.test_flip:
            logits = (logits + self.model(inputs.flip(-1))) / 2
        return logits


def load_classifier(path: str | Path, uint8_input: bool) -> tuple[Classifier, dict[str, Any]]:
    """The checkpoint's model as a Classifier on the CPU, and the checkpoint itself (epoch, config).
    The model holds the checkpoint's evaluated weights: the moving average's when it has one."""
    state = checkpoint.load(path)
    checkpoint.require(state, path, checkpoint.CLASSIFIED)
    model = checkpoint.model_from(state, path)
    augmentation = state["config"].get("augmentation")
    test_flip = bool(augmentation.get("test_flip")) if isinstance(augmentation, dict) else False
    return Classifier(model, test_flip, uint8_input), state


@dataclass(frozen=True)
class Evaluation:
    """Evaluates classifiers in chunks of `batch_size` images, computed by `workers` (else by the
    calling thread). Each chunk is computed on one thread and the chunks' summed losses are added
    in their order, so the team's size changes no bit."""

    batch_size: int
    workers: Workers | None = None

    def __call__(
        self, classifier: Classifier, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[float, float, torch.Tensor]:
        """Mean cross-entropy, accuracy and predicted classes of `classifier` (with uint8 input)
        over `images` (uint8, on its device)."""

        @torch.inference_mode()
        def chunk(start: int) -> tuple[torch.Tensor, torch.Tensor]:
            logits = classifier(images[start : start + self.batch_size])
            targets = labels[start : start + self.batch_size]
            return F.cross_entropy(logits, targets, reduction="sum"), logits.argmax(dim=1)

        starts = range(0, len(labels), self.batch_size)
        results = self.workers.map(chunk, starts) if self.workers else [chunk(start) for start in starts]
        loss_sum = torch.zeros((), device=images.device)
        for chunk_loss, _ in results:
            loss_sum += chunk_loss
        predicted = torch.cat([chunk_predicted for _, chunk_predicted in results])
        accuracy = (predicted == labels).double().mean().item()
        return loss_sum.item() / len(labels), accuracy, predicted


def confusion_matrix(labels: torch.Tensor, predicted: torch.Tensor, classes: int = 10) -> torch.Tensor:
    """classes x classes counts on the CPU: row = true class, column = predicted class."""
    pairs = labels.cpu() * classes + predicted.cpu()
    return torch.bincount(pairs, minlength=classes * classes).reshape(classes, classes)


def per_class_accuracy(confusion: torch.Tensor) -> dict[str, float]:
    correct = confusion.diagonal().double()
    totals = confusion.sum(dim=1).clamp(min=1).double()
    return dict(zip(data.CLASSES, (correct / totals).tolist(), strict=True))


def format_confusion(confusion: torch.Tensor) -> str:
    short = [name.split("/")[0][:7] for name in data.CLASSES]
    lines = ["true \\ predicted".ljust(14) + " ".join(f"{name:>7}" for name in short)]
    for name, row in zip(data.CLASSES, confusion.tolist(), strict=True):
        lines.append(f"{name[:13]:<14}" + " ".join(f"{count:>7}" for count in row))
    return "\n".join(lines)


def evaluate_checkpoint(cfg: EvalConfig, run_dir: Path) -> dict[str, Any]:
    """The `eval` command: test accuracy, per-class accuracy and confusion matrix of a checkpoint,
    logged and written to eval.json in the run directory."""
    classifier, state = load_classifier(cfg.checkpoint, uint8_input=True)
    device = select_device(cfg.device)
    test = data.load_test(cfg.data.root)
    classifier.to(device, memory_format=CHANNELS_LAST)
    with command_workers(cfg.threads, device) as workers:
        evaluation = Evaluation(cfg.eval_batch_size, workers)
        loss, accuracy, predicted = evaluation(classifier, test.images.to(device), test.labels.to(device))
    confusion = confusion_matrix(test.labels, predicted)
    per_class = per_class_accuracy(confusion)
    result = {
        "checkpoint": str(Path(cfg.checkpoint).expanduser().resolve()),
        "epoch": state["epoch"],
        "weights": checkpoint.weights_used(state),
        "test_acc": accuracy,
        "test_loss": loss,
        "test_images": len(test.labels),
        "per_class_acc": per_class,
        "confusion_matrix": confusion.tolist(),
        "classes": list(data.CLASSES),
    }
    write_json(run_dir / EVAL_FILE, result)
    log.info(
        "Checkpoint %s (epoch %d, %s): test accuracy %.4f, test loss %.4f",
        cfg.checkpoint, state["epoch"], result["weights"], accuracy, loss,
    )  # fmt: skip
    log.info("Per-class accuracy:\n%s", "\n".join(f"  {name:<12} {acc:.4f}" for name, acc in per_class.items()))
    log.info("Confusion matrix (rows: true class):\n%s", format_confusion(confusion))
    log.info("Wrote %s", run_dir / EVAL_FILE)
    return result
