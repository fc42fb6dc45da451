"""Knowledge distillation: the student also learns the averaged predictions of trained teachers.

With `distill.teachers` set (checkpoints this toolkit wrote), the training loss becomes

    (1 - alpha) * hard loss + alpha * T^2 * KL(softmax(teachers / T) || softmax(student / T))

with alpha = `distill.alpha`, T = `distill.temperature` and `teachers` the mean of the teachers'
logits (Hinton et al. 2015; the T^2 keeps the soft term's gradients on the hard term's scale).
The teachers see exactly the student's augmented images (SoftTargets), labelled in large
inference batches, which costs far less than a forward pass per training step. Teachers are in
eval mode (no dropout) and draw no random numbers, so a run resumes bit for bit; the checkpoint
records each teacher's SHA-256, and a resume whose teachers changed on disk is refused.

A teacher must never have seen what the student is judged on: when the student validates, each
teacher must have been trained on the same 50,000 images (the same data.val_size and
data.split_seed); a final fit (data.val_size=0) is judged on the test set alone, which no
training run ever sees.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lenet_fmnist.config import DistillConfig
from lenet_fmnist.model import CHANNELS_LAST
from lenet_fmnist.run.errors import UserError
from lenet_fmnist.run.paths import user_path
from lenet_fmnist.training import checkpoint
from lenet_fmnist.training.augment import Augmenter, Draw, normalise
from lenet_fmnist.workers import Workers

log = logging.getLogger(__name__)

# Labelling images in blocks of this many bounds the memory of labelling every variant once (40 MB of uint8).
VARIANT_BLOCK = 50_000

# In a distilled run's checkpoints: {"teachers": [{"path", "sha256"}, ...], "splits": what they learned from}.
CHECKPOINT_KEY = "distill"


@dataclass(frozen=True)
class TeacherFile:
    path: str
    sha256: str


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, read in blocks (a checkpoint is not read whole into memory): the
    project's one checksum, which export's sidecar records too."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def splits_seen(state: dict[str, Any]) -> list[tuple[int, int]]:
    """The (data.val_size, data.split_seed) of every training run whose images shaped the
    checkpoint `state`: its own, then its teachers', theirs, and so on (a distilled teacher carries
    what its own teachers saw)."""
    data = state.get("config", {}).get("data", {})
    own = (data["val_size"], data["split_seed"])
    inherited = [tuple(pair) for pair in state.get(CHECKPOINT_KEY, {}).get("splits", [])]
    return [own, *(pair for pair in inherited if pair != own)]


def check_unseen(teacher: dict[str, Any], student_data: dict[str, Any], path: str) -> None:
    """Refuse a teacher that saw images the student validates on (`teacher`: its checkpoint;
    `student_data`: the student's data config as plain values)."""
    if student_data["val_size"] == 0:
        return  # a final fit is judged on the test set, which no teacher trained on
    mine = (student_data["val_size"], student_data["split_seed"])
    for seen in splits_seen(teacher):
        if seen == mine:
            continue
        trained_on = (
            "all 60,000 training images (data.val_size=0)"
            if seen[0] == 0
            else f"another split (data.val_size={seen[0]}, data.split_seed={seen[1]})"
        )
        raise UserError(
            f"distill.teachers: {path} learned from {trained_on}, which includes images this run validates on "
            f"(data.val_size={mine[0]}, data.split_seed={mine[1]}): a teacher must never have seen what the "
            "student is judged on. Use teachers trained with this run's data.val_size and data.split_seed (and, "
            "if they were distilled themselves, teachers of theirs trained so too), or distil in a final fit "
            "(data.val_size=0), which is judged on the test set alone."
        )


class Teachers(nn.Module):
    """The teachers' networks (each with its evaluated weights: the moving average's when it kept
    one), in eval mode; `forward` gives their mean logits for normalised images."""

    def __init__(
        self, models: Sequence[nn.Module], files: Sequence[TeacherFile], splits: Sequence[tuple[int, int]]
    ) -> None:
        super().__init__()
        self.models = nn.ModuleList(models)
        self.files = list(files)
        self.splits = list(dict.fromkeys(splits))  # what the teachers saw, each split once
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> Teachers:
        return super().train(False)  # a teacher never drops out, whatever the caller sets

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.stack([model(inputs) for model in self.models]).mean(dim=0)

    def label(self, images: torch.Tensor, batch_size: int, workers: Workers | None = None) -> torch.Tensor:
        """Mean logits (N x 10) of uint8 `images` (N x 28 x 28), in batches of `batch_size`
        computed by `workers` (else by this thread)."""

        @torch.no_grad()  # not inference_mode: its tensors could not enter the student's autograd graph
        def logits(start: int) -> torch.Tensor:
            return self(normalise(images[start : start + batch_size]))

        starts = range(0, len(images), batch_size)
        return torch.cat(workers.map(logits, starts) if workers else [logits(start) for start in starts])

    def record(self) -> dict[str, Any]:
        """What the checkpoint keeps of the teachers."""
        return {
            "teachers": [{"path": f.path, "sha256": f.sha256} for f in self.files],
            "splits": [list(pair) for pair in self.splits],
        }


MISSING_TEACHER_HINT = (
    "a teacher is a checkpoint (best.pt or last.pt) that a training run of this toolkit wrote. Train the "
    "teachers first (experiment=best's with `python -m lenet_fmnist train -m experiment=best_wide_teachers`, "
    "those of +ablation=with_distillation with `python -m lenet_fmnist train -m experiment=best_teachers`), or "
    "give their paths."
)


def load(paths: Sequence[str], student_data: dict[str, Any], device: torch.device) -> Teachers | None:
    """The teachers of `distill.teachers`, checked and on `device`; None when there are none."""
    if not paths:
        return None
    models, files, splits = [], [], []
    for name in paths:
        path = user_path(name, "distill.teachers")
        state = checkpoint.load(path, key="distill.teachers", hint=MISSING_TEACHER_HINT)
        checkpoint.require(state, path, ("model", "config"))
        try:
            check_unseen(state, student_data, name)
        except (KeyError, TypeError, AttributeError, ValueError):
            raise UserError(
                f"{path} does not say which images its run trained on (config.data.val_size and split_seed), so it "
                "cannot teach a run that validates: a checkpoint damaged or edited."
            ) from None
        with torch.random.fork_rng(devices=[]):  # building a network draws initial weights: not from the run's RNG
            teacher = checkpoint.model_from(state, path)
        models.append(teacher.to(device, memory_format=CHANNELS_LAST))
        files.append(TeacherFile(str(path), sha256_of(path)))
        splits += splits_seen(state)
    return Teachers(models, files, splits)


@dataclass(frozen=True)
class Distillation:
    """What a distilled run's training step needs: the teachers and the loss's two settings."""

    teachers: Teachers
    alpha: float
    temperature: float
    label_batch: int  # images per teacher forward pass (eval_batch_size: no effect on results)

    def loss(self, hard: torch.Tensor, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return loss(hard, student, teacher, alpha=self.alpha, temperature=self.temperature)


class SoftTargets:
    """The teachers' mean logits for each epoch's augmented images (augment.Draw), in its order.

    A flipped and shifted image is one of `augmenter.variants` fixed copies of the training
    images (18 per image with a flip and a 1 px shift), which the epochs draw again and again.
    When labelling each of them once costs less than labelling every epoch's images (`labels_once`,
    decided by the config alone, so a resumed run labels as the uninterrupted one did), the
    teachers label them all at the start of the run and each epoch only its erased images, which
    are new. Either way an image's logits come from the teachers in eval mode: the two ways differ
    only by the rounding that batching makes, and a run always uses the same one.
    """

    def __init__(self, distillation: Distillation, augmenter: Augmenter, workers: Workers, *, once: bool) -> None:
        self.teachers, self.batch, self.workers = distillation.teachers, distillation.label_batch, workers
        self.variants = self._label_variants(augmenter) if once else None

    def __call__(self, draw: Draw) -> torch.Tensor:
        """The teachers' mean logits (B x 10) for `draw`'s images, in its order."""
        if self.variants is None:
            return self._label(draw.images)
        logits = self.variants[draw.variants]
        if draw.erased is not None and draw.erased.any():
            logits[draw.erased] = self._label(draw.images[draw.erased])
        return logits

    def _label(self, images: torch.Tensor) -> torch.Tensor:
        return self.teachers.label(images, self.batch, self.workers)

    def _label_variants(self, augmenter: Augmenter) -> torch.Tensor:
        started, count = time.perf_counter(), augmenter.variants
        device = augmenter.windows.device
        blocks = [
            self._label(augmenter.variant_images(torch.arange(start, min(start + VARIANT_BLOCK, count), device=device)))
            for start in range(0, count, VARIANT_BLOCK)
        ]
        log.info(
            "The teachers labelled the %d flipped and shifted copies of the training images once, in %.0f s",
            count, time.perf_counter() - started,
        )  # fmt: skip
        return torch.cat(blocks)


def labels_once(variants_per_image: int, epochs: int, erase_p: float) -> bool:
    """Whether labelling each flipped and shifted copy of an image once (then each epoch's erased
    images, a fraction `erase_p` of them) costs fewer teacher passes than labelling every image of
    every one of `epochs` epochs."""
    return variants_per_image + epochs * erase_p < epochs


def configured(
    cfg: DistillConfig, student_data: dict[str, Any], device: torch.device, label_batch: int
) -> Distillation | None:
    """The run's distillation from its `distill` config; None when it names no teachers."""
    teachers = load(cfg.teachers, student_data, device)
    if teachers is None:
        return None
    return Distillation(teachers, alpha=cfg.alpha, temperature=cfg.temperature, label_batch=label_batch)


def check_resume(saved: dict[str, Any] | None, distillation: Distillation | None) -> None:
    """Refuse to resume a distilled run whose teachers' files changed since it started (`saved`:
    its checkpoint's CHECKPOINT_KEY entry)."""
    before = [t["sha256"] for t in (saved or {}).get("teachers", [])]
    now = [f.sha256 for f in distillation.teachers.files] if distillation is not None else []
    if before != now:
        raise UserError(
            "The saved run was trained with teachers whose contents differ from the files now given in distill.teachers "
            "(compared by SHA-256): resuming would change what the run learns from. Restore the teachers' "
            "checkpoints, or start a new run."
        )


def loss(
    hard: torch.Tensor, student: torch.Tensor, teacher: torch.Tensor, *, alpha: float, temperature: float
) -> torch.Tensor:
    """(1 - alpha) * `hard` + alpha * T^2 * KL(teacher's softened distribution || student's)."""
    soft = F.kl_div(
        F.log_softmax(student / temperature, dim=1),
        F.log_softmax(teacher / temperature, dim=1),
        log_target=True,
        reduction="batchmean",
    )
    return (1 - alpha) * hard + alpha * temperature**2 * soft
