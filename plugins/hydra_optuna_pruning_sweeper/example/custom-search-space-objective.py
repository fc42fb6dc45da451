"""Part of the space in the config, part in Python, the form of upstream hydra-optuna-sweeper's
custom search space example (conf/custom-search-space.yaml): `configure` is called for each
trial once the config's parameters are drawn, and suggests more with Optuna's own calls. Run it
with:

    python custom-search-space-objective.py -m
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig
from optuna.trial import Trial


@hydra.main(version_base=None, config_path="conf", config_name="custom-search-space")
def sphere_in_four(cfg: DictConfig) -> float:
    return cfg.get("w", 0.0) ** 2 + cfg.x**2 + cfg.y**2 + cfg.z**2


def configure(cfg: DictConfig, trial: Trial) -> None:
    """hydra.sweeper.custom_search_space: z stays within max_z_difference_from_x of the drawn x;
    w is a key the config lacks, so its name carries Hydra's `+` (the trial adds it)."""
    reach = cfg.max_z_difference_from_x
    trial.suggest_float("z", trial.params["x"] - reach, trial.params["x"] + reach)
    trial.suggest_float("+w", 0.0, 1.0)


if __name__ == "__main__":
    sphere_in_four()
