"""`hydra/sweeper=optuna` from the hydra-optuna-pruning-sweeper distribution: config.py registers
the configs, optuna_pruning_sweeper.py holds the Sweeper, upstream_name.py makes it answer to
upstream's class name too; the search itself is the library `optuna_pruning_sweeper`."""
