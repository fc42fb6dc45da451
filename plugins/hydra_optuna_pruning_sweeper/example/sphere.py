"""The smallest search: minimise x^2 + y^2, configured as upstream hydra-optuna-sweeper documents it
(conf/sphere.yaml). Run it with:

    python sphere.py -m
    python sphere.py -m hydra/sweeper/sampler=grid 'x=range(-1, 2)'   # every point of a grid, x from -1 to 2
    python sphere.py -m error=true                                    # a task that raises
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path="conf", config_name="sphere")
def sphere(cfg: DictConfig) -> float:
    if cfg.error:
        raise RuntimeError(f"asked to fail at x={cfg.x}, y={cfg.y}")
    return cfg.x**2 + cfg.y**2


if __name__ == "__main__":
    sphere()
