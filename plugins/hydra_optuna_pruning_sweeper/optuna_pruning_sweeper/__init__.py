"""Hyperparameter search with Optuna for any Hydra 1.3 app: the library behind the Hydra plugin
`hydra/sweeper=optuna` (hydra_plugins.optuna_pruning_sweeper).

What a task uses (the rest is the sweeper's):

- `current_trial(steps=None)`: the job's optuna.Trial, or None outside a search; report
  intermediate values to it and raise optuna.TrialPruned when it says to stop;
- `StopSearch`: raise it when the machine stopped the trial (a full disk): the search stops and a
  resumed one asks the trial again;
- `SweeperError`: what the sweeper stops with (also what a `check_config` function may raise).

Modules: names (the search's names), settings (hydra.sweeper.* checked), space (the search space
from Hydra's override grammar), samplers and pruners (made from their configs), storage (where
the study is) and journal (its default file), study (creating or continuing the study), lease
(one search per study), hooks (the app's functions the sweeper calls), sweep (the loop), retries
(which trials count, which a resume asks again), trial (the trial's side), summary (search.md,
search.csv, optimization_results.yaml, figures), urls, files, compat (Hydra's private parts it
uses, wrapped once).
"""

from optuna_pruning_sweeper.errors import StopSearch, SweeperError
from optuna_pruning_sweeper.trial import current_trial

__all__ = ["StopSearch", "SweeperError", "current_trial"]
