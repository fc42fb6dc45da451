"""Hyperparameter search with Optuna: what the `hydra/sweeper=optuna` plugin
(src/hydra_plugins/lenet_fmnist_optuna) does, for any Hydra app and for `lenet_fmnist train`.

- names: the search's names and keys, written once (no Optuna: the plugin loads it at start-up).
- space: the search space, from Hydra's override grammar (and the deprecated `search_space`).
- study: where the study is stored, and creating or continuing it.
- sweep: asking trials, launching them through Hydra's launcher, telling their outcomes.
- trial: the trial's side: `current_trial()` for a task to report and be pruned.

Only `names` may be imported without the `search` extra; the others import Optuna. None of them
imports torch.
"""
