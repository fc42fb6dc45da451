"""`hydra/sweeper=optuna` from the hydra-optuna-pruning-sweeper distribution: config.py registers
the configs, optuna_pruning_sweeper.py holds the Sweeper, upstream_name.py makes it answer to
upstream's class name too; the search itself is the library `optuna_pruning_sweeper`."""

# Upstream's class name answers whenever this package is loaded, not only when Hydra's plugin scan
# imports upstream_name.py: a job process that unpickles its launcher's Hydra context (submitit)
# meets that name after this package's own.
from hydra_plugins.optuna_pruning_sweeper import upstream_name  # noqa: F401
