"""What a training run carries from one epoch to the next, and what its checkpoints hold."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lenet_fmnist.config import TrainConfig
from lenet_fmnist.model import CHANNELS_LAST, LeNet5
from lenet_fmnist.run import validation
from lenet_fmnist.run.metrics_file import EpochRecord
from lenet_fmnist.training import averaging, distill, optim


class TrainingState:
    """Everything a run carries from one epoch to the next: model, weight average, optimizer,
    scheduler, random number generators, history and best epoch. `state_dict` is the checkpoint's
    schema, written here once, and `load_state_dict` resumes from one (the keys of every checkpoint
    written by this format). metrics.json summarises the same run (run.metrics_file.metrics_json)."""

    def __init__(
        self,
        cfg: TrainConfig,
        config: dict[str, Any],
        device: torch.device,
        train_images: int,
        distillation: distill.Distillation | None,
    ) -> None:
        """The state of a new run of `cfg` (`config`: the same as plain values) on `device` that
        learns from `train_images` images (and, with `distillation`, from its teachers)."""
        torch.manual_seed(cfg.seed)  # initial weights and dropout masks
        self.generator = torch.Generator(device=device).manual_seed(cfg.seed)  # shuffling and augmentation
        self.device, self.config, self.distillation = device, config, distillation
        self.model = LeNet5(cfg.activation.name.value, cfg.pool.name.value, cfg.dropout.p, cfg.model.width)
        self.model.to(device, memory_format=CHANNELS_LAST)
        self.average = averaging.build(self.model, cfg)  # None without ema.decay or swa.epochs
        self.optimizer = optim.build_optimizer(cfg.optimizer, self.model.parameters())
        self.steps_per_epoch = optim.steps_per_epoch(train_images, cfg.batch_size)
        self.scheduler = optim.build_scheduler(
            self.optimizer, cfg.optimizer, steps_per_epoch=self.steps_per_epoch, epochs=cfg.epochs
        )
        self.epoch = 0  # epochs completed and saved
        self.history: list[EpochRecord] = []  # one record per epoch, as in metrics.json
        self.best_epoch = 0
        self.best_val_acc: float | None = -1.0  # None in a run without validation, once it has an epoch
        self.warnings: list[str] = []  # what the user should know about this run (metrics.json)
        self.validated_on = validation.describe(cfg.data.val_size, train_images)  # metrics.json's `validation`

    @property
    def evaluated_model(self) -> nn.Module:
        """The model that validation runs: the weight average once it holds any weights."""
        return self.model if self.average is None or self.average.updates == 0 else self.average.model

    def complete_epoch(self, record: EpochRecord) -> bool:
        """Count the epoch whose record is last in the history; whether it is the best so far.
        Without validation (no val_acc) every epoch is, so the last one is tested."""
        self.epoch, val_acc = record.epoch, record.val_acc
        if val_acc is None or val_acc > self.best_val_acc:
            self.best_epoch, self.best_val_acc = self.epoch, val_acc
        return self.best_epoch == self.epoch

    def state_dict(self) -> dict[str, Any]:
        cuda = self.device.type == "cuda"
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "config": self.config,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(self.device) if cuda else None,
                "generator": self.generator.get_state(),
            },
            "history": [record.as_json() for record in self.history],
            "best_epoch": self.best_epoch,
            "best_val_acc": self.best_val_acc,
            "warnings": self.warnings,
        }
        if self.average is not None:  # only then: the checkpoints of runs without one keep their keys
            state[self.average.key] = self.average.state_dict()
        if self.distillation is not None:  # likewise
            state[distill.CHECKPOINT_KEY] = self.distillation.teachers.record()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint; its config (its weight average included) was already checked against this
        run's, and its teachers' files must be the same as when it started."""
        distill.check_resume(state.get(distill.CHECKPOINT_KEY), self.distillation)
        self.model.load_state_dict(state["model"])
        if self.average is not None:
            self.average.load_state_dict(state[self.average.key])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        if self.device.type == "cuda" and state["rng"]["cuda"] is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.generator.set_state(state["rng"]["generator"])
        self.epoch, self.history = state["epoch"], [EpochRecord.from_json(record) for record in state["history"]]
        self.best_epoch, self.best_val_acc = state["best_epoch"], state["best_val_acc"]
        self.warnings = state["warnings"]
