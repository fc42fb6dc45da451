"""A small Hydra app of our own, run by tests/test_search_app.py through the installed sweeper
(`-m hydra/sweeper=optuna`) as any Hydra user's app would be. Its config's `task` says what the
task function computes; each config in conf/ is one kind of search.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import hydra
import optuna
from omegaconf import DictConfig

from optuna_pruning_sweeper import StopSearch, current_trial

NOT_A_FUNCTION = 3  # for the test of a custom_search_space that cannot be called


def quadratic(cfg: DictConfig) -> float:
    """Smallest, 0, at x = 2, y = -1."""
    return (cfg.x - 2) ** 2 + (cfg.y + 1) ** 2


def two_objectives(cfg: DictConfig) -> tuple[float, float]:
    """x^2 and (x - 2)^2: every x in [0, 2] is a best trade-off."""
    return cfg.x**2, (cfg.x - 2) ** 2


def conditional(cfg: DictConfig) -> float:
    """Reads what the custom search space set: a degree for the poly model, a scale derived from x."""
    return cfg.x * cfg.scale + cfg.degree


def configure(cfg: DictConfig, trial: optuna.Trial) -> dict[str, Any]:
    """hydra.sweeper.custom_search_space: a degree only where the model has one; a derived scale."""
    if trial.params["model"] == "poly":
        trial.suggest_int("degree", 2, 5)
    return {"scale": 2 * trial.params["x"]}


def failing(cfg: DictConfig) -> float:
    if cfg.x > 0:
        raise ValueError(f"x={cfg.x} is beyond what this app accepts (x <= 0)")
    return -cfg.x


def stopping(cfg: DictConfig) -> float:
    """As a task on a full disk: while the file `release` is missing, the machine stops the trial."""
    if not Path(cfg.release).exists():
        raise StopSearch(f"no space left on the device (x={cfg.x})")
    return quadratic(cfg)


def refuse_far_x(cfg: DictConfig) -> None:
    """hydra.sweeper.check_config: the app cannot run x beyond 4 in either direction."""
    if abs(cfg.x) > 4:
        raise ValueError(f"x={cfg.x} is beyond what this app can run (|x| <= 4)")


def reporting(cfg: DictConfig) -> float:
    """Reports a value per step and stops when pruned; trial 1 and later wait for `release` (a file)."""
    trial = current_trial(steps=cfg.steps)
    assert trial is not None, "not a trial of a search"
    if cfg.release and trial.number >= 1:
        while not Path(cfg.release).exists():
            time.sleep(0.05)
    value = 0.0
    for step in range(1, cfg.steps + 1):
        value = abs(cfg.x) * step
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step}")
    return value


def metrics(cfg: DictConfig) -> float:
    """As lightning-hydra-template's train task: the metric named by optimized_metric, here a
    made-up accuracy that is best at lr = 0.01 and a small batch."""
    import math

    measured = {"val/acc_best": 1 - abs(math.log10(cfg.model.lr) + 2) / 4 - cfg.data.batch_size / 1000}
    return measured[cfg.optimized_metric]


TASKS = {
    "metrics": metrics,
    "quadratic": quadratic,
    "two_objectives": two_objectives,
    "conditional": conditional,
    "failing": failing,
    "reporting": reporting,
    "stopping": stopping,
    "none": lambda cfg: None,
    "string": lambda cfg: "0.5",
}


@hydra.main(config_path="conf", config_name="quadratic", version_base="1.3")
def main(cfg: DictConfig) -> Any:
    return TASKS[cfg.task](cfg)


if __name__ == "__main__":
    main()
