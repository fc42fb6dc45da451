"""Two objectives at once, the form of upstream hydra-optuna-sweeper's multi-objective example
(conf/multi-objective.yaml): Binh and Korn's test problem, whose trade-offs the NSGA-II sampler
maps. The task returns one number per direction; the search ends with the Pareto set, the trials
that no other trial beats in both. Run it with:

    python multi-objective.py -m
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path="conf", config_name="multi-objective")
def binh_and_korn(cfg: DictConfig) -> tuple[float, float]:
    near_origin = 4 * (cfg.x**2 + cfg.y**2)
    near_five = (cfg.x - 5) ** 2 + (cfg.y - 5) ** 2
    return near_origin, near_five


if __name__ == "__main__":
    binh_and_korn()
