"""The pruner of a search, kept in its study as a description (hydra.sweeper.pruner and its
numbers): the trials' processes make it from there, each with the steps its task reports."""

from __future__ import annotations

from typing import Any

import optuna

from optuna_pruning_sweeper.names import PRUNER_NAME, PRUNER_STARTUP, PRUNER_WARMUP, PrunerName
from optuna_pruning_sweeper.settings import Settings


def pruner_spec(settings: Settings) -> dict[str, Any]:
    # Optuna prunes single-objective studies only.
    name = settings.pruner if len(settings.directions) == 1 else PrunerName.none
    return {
        PRUNER_NAME: name.value,
        PRUNER_STARTUP: settings.pruner_startup_trials,
        PRUNER_WARMUP: settings.pruner_warmup_epochs,
    }


def make_pruner(spec: dict[str, Any], steps: int | None) -> optuna.pruners.BasePruner:
    """The pruner from its description in the study (the trials' processes build it from there).
    Hyperband is told the steps a trial reports where the task knows them: left to guess
    ("auto"), it prunes nothing before a trial completes."""
    name = PrunerName(spec[PRUNER_NAME])
    if name is PrunerName.median:
        return optuna.pruners.MedianPruner(n_startup_trials=spec[PRUNER_STARTUP], n_warmup_steps=spec[PRUNER_WARMUP])
    if name is PrunerName.hyperband:
        return optuna.pruners.HyperbandPruner(
            min_resource=max(1, spec[PRUNER_WARMUP]), max_resource="auto" if steps is None else steps
        )
    return optuna.pruners.NopPruner()
