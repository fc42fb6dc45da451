"""A training run's bookkeeping in its run directory while it trains, behind one object: the
checkpoints, metrics.json and the TensorBoard log, so that the epoch loop only says what happened.

The rules are lenet_fmnist.run's (the files' names, metrics.json's schema, the statuses and how
an ending sets one); the recorder writes by them. It lives beside rundir because it imports torch
(checkpoints, TensorBoard), which rundir must not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import torch

from lenet_fmnist import data
from lenet_fmnist.run.endings import Status, ending_of
from lenet_fmnist.run.files import BEST_CHECKPOINT, LAST_CHECKPOINT
from lenet_fmnist.run.metrics_file import (
    Circumstances,
    EpochRecord,
    Progress,
    finish,
    machine_fault,
    metrics_json,
    write_metrics,
)
from lenet_fmnist.training import checkpoint
from lenet_fmnist.training.tensorboard_log import TensorBoardLog


class Saveable(Progress, Protocol):
    """A training state that a checkpoint holds (train.TrainingState)."""

    def state_dict(self) -> dict[str, Any]: ...


class Recorder:
    """Records the run in `run_dir`, whose plain `config` the TensorBoard log shows, from epoch
    `start_epoch` on (a resumed run's curves continue); `ran` is where and how it runs."""

    def __init__(self, run_dir: Path, config: dict[str, Any], *, start_epoch: int, ran: Circumstances) -> None:
        self.run_dir, self.ran = run_dir, ran
        self.last, self.best = run_dir / LAST_CHECKPOINT, run_dir / BEST_CHECKPOINT
        self.board = TensorBoardLog(run_dir, config, start_epoch=start_epoch)

    def samples(self, images: torch.Tensor) -> None:
        """What the model sees: a grid of augmented training images (uint8 B x H x W)."""
        self.board.samples(images)

    def epoch(self, record: EpochRecord, state: Saveable, *, is_best: bool) -> None:
        """A trained and validated epoch: its curves, then the checkpoints (best.pt when `is_best`),
        then metrics.json: a kill at any moment leaves the last completed epoch resumable."""
        self.board.epoch(record.epoch, record.as_json(), record.lr)
        saved = state.state_dict()
        if is_best:
            checkpoint.save(self.best, saved)
        checkpoint.save(self.last, saved)
        write_metrics(self.run_dir, metrics_json(Status.running, state, {}, self.ran))

    def best_checkpoint(self, device: torch.device) -> dict[str, Any]:
        """best.pt, the weights that are tested, on `device`."""
        return checkpoint.load(self.best, map_location=device)

    def test(self, epoch: int, *, accuracy: float, loss: float, confusion: torch.Tensor) -> None:
        self.board.test(epoch, accuracy, loss, confusion, data.CLASSES)

    @contextlib.contextmanager
    def ending_recorded(self, state: Progress) -> Iterator[None]:
        """However the training inside ends early, metrics.json says so (rundir.status_after) and
        the log is closed; a run that the machine stopped (a full disk, an unwritable directory)
        raises rundir's MachineFault paragraph instead of its error."""
        try:
            yield
        except BaseException as error:
            ended = metrics_json(ending_of(error).status, state, {}, self.ran)
            finish(self.run_dir, ended, self.board.close, failing=True)
            fault = machine_fault(error, self.run_dir, load=checkpoint.load)
            if fault is None:
                raise
            raise fault from None

    def finish(self, state: Progress, test: dict[str, float]) -> dict[str, Any]:
        """The completed run's metrics.json, written and returned; the log closed."""
        return finish(self.run_dir, metrics_json(Status.completed, state, test, self.ran), self.board.close)
