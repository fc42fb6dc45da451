"""The trial's side of a search, in the job's own process (wherever the launcher runs it).

`current_trial()` gives a task its optuna.Trial, to report intermediate values and ask whether to
stop; a task that raises optuna.TrialPruned is marked pruned by the sweeper. The job finds its
study as the sweeper did, from its own Hydra config (hydra.sweeper.storage and study_name, the
sweep directory, relative ones taken from where the search started, hydra.runtime.cwd: a job may
have changed directory), and its trial through the number the sweeper put in `hydra.job.env_set`
(names.TRIAL_ENV). Optuna is imported only inside a search: an app may import this module in
every run.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

from optuna_pruning_sweeper.names import PRUNER_ATTR, TRIAL_ENV
from optuna_pruning_sweeper.urls import absolute

if TYPE_CHECKING:
    import optuna

    from optuna_pruning_sweeper.storage import Location


@functools.cache
def open_trial(location: Location, sweep_dir: Path, number: int) -> optuna.Trial:
    """Trial `number` of the study at `location` (opened once per process)."""
    import optuna

    from optuna_pruning_sweeper.pruners import make_pruner

    storage = location.open(sweep_dir)
    with location.problems(sweep_dir):
        study = optuna.load_study(study_name=location.study_name, storage=storage)
        study.pruner = make_pruner(study.user_attrs[PRUNER_ATTR], None)
        study_id = storage.get_study_id_from_name(location.study_name)
        return optuna.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, number))


def current_trial(steps: int | None = None) -> optuna.Trial | None:
    """The optuna.Trial this Hydra job runs as, when it is a trial of a search (hydra/sweeper=optuna);
    None otherwise (a single run, another sweeper). Report with `trial.report(value, step)`; when
    `trial.should_prune()` is true, raise optuna.TrialPruned and the trial ends pruned. `steps`:
    how many steps the task reports at most (the hyperband pruner's budget; without it, Hyperband
    prunes nothing before a first trial completes)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    number = hydra_cfg.job.env_set.get(TRIAL_ENV)
    if number is None:
        return None
    from optuna_pruning_sweeper.pruners import make_pruner
    from optuna_pruning_sweeper.storage import Location

    started_in = Path(hydra_cfg.runtime.cwd)
    sweep_dir = started_in / str(hydra_cfg.sweep.dir)
    storage, study_name = hydra_cfg.sweeper.get("storage"), hydra_cfg.sweeper.get("study_name")
    location = Location(absolute(storage, started_in), study_name or sweep_dir.name)
    trial = open_trial(location, sweep_dir, int(number))
    if steps is not None:
        trial.study.pruner = make_pruner(trial.study.user_attrs[PRUNER_ATTR], steps)
    return trial
