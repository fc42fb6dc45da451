"""The sweeper's keys (hydra.sweeper.*) as a search reads them, each checked: a bad value stops
the search before anything is written."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from optuna_pruning_sweeper.errors import SweeperError
from optuna_pruning_sweeper.names import PrunerName

DIRECTIONS = ("minimize", "maximize")


@dataclass(frozen=True)
class Settings:
    """The sweeper's keys (hydra.sweeper.*), as the plugin received them."""

    n_trials: int
    n_jobs: int  # trials launched at once
    directions: tuple[str, ...]  # one per objective
    max_failure_rate: float
    pruner: PrunerName
    pruner_startup_trials: int
    pruner_warmup_epochs: int
    storage: str | None
    study_name: str | None
    sampler: dict[str, Any]  # the hydra/sweeper/sampler node: _target_ and its arguments

    def check(self) -> None:
        for key, value, least in (
            ("n_trials", self.n_trials, 1),
            ("n_jobs", self.n_jobs, 1),
            ("pruner_startup_trials", self.pruner_startup_trials, 0),
            ("pruner_warmup_epochs", self.pruner_warmup_epochs, 0),
        ):
            if value < least:
                raise SweeperError(f"hydra.sweeper.{key}={value} is not allowed: it must be an integer >= {least}.")
        if not 0.0 <= self.max_failure_rate <= 1.0:
            raise SweeperError(
                f"hydra.sweeper.max_failure_rate={self.max_failure_rate} is not allowed: it must be a number from 0 "
                "to 1, the share of a batch's trials that may fail before the search stops (0: none, 1: all)."
            )


def directions_of(direction: Any) -> tuple[str, ...]:
    """hydra.sweeper.direction: minimize or maximize, or a list of them (one per objective)."""
    given = [direction] if isinstance(direction, str) else list(direction) if direction is not None else []
    if not given or any(str(d) not in DIRECTIONS for d in given):
        raise SweeperError(
            f"hydra.sweeper.direction={direction} is not allowed: it must be minimize or maximize, or a list of "
            "them with one per objective, e.g. [minimize, maximize] for a task that returns two numbers."
        )
    return tuple(str(d) for d in given)
