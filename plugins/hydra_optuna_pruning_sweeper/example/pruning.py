"""A task that reports as it goes and stops when the pruner says so: a made-up training curve
whose final loss is (lr - 0.01)^2-ish, reported at each of `epochs` steps. Run it with:

    python pruning.py -m
"""

from __future__ import annotations

import math

import hydra
import optuna
from omegaconf import DictConfig

from optuna_pruning_sweeper import current_trial


@hydra.main(version_base=None, config_path="conf", config_name="pruning")
def train(cfg: DictConfig) -> float:
    trial = current_trial(steps=cfg.epochs)  # None when run without -m: the task runs alone
    loss = 1.0
    for epoch in range(1, cfg.epochs + 1):
        loss = abs(math.log10(cfg.lr) + 2) + 1 / epoch
        if trial is not None:
            trial.report(loss, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"loss {loss:.3f} at epoch {epoch}")
    return loss


if __name__ == "__main__":
    train()
