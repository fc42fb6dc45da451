"""The trial's side of a search, in the job's own process (wherever the launcher runs it):

- `current_trial()`, for any Hydra app: the job's optuna.Trial, to report intermediate values
  and ask whether to stop; a task that raises optuna.TrialPruned is marked pruned by the sweeper.
- `trial_reporter()`, for `lenet_fmnist train`: reports each epoch's validation accuracy and
  raises Pruned when the pruner says so.

The job finds its study through search.json in the sweep directory, and its trial through the
number the sweeper put in `hydra.job.env_set` (vocabulary.SEARCH_TRIAL).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from lenet_fmnist.errors import Pruned, UserError
from lenet_fmnist.search.names import PRUNER_ATTR
from lenet_fmnist.search.study import make_pruner, read_location
from lenet_fmnist.vocabulary import SEARCH_FILE, SEARCH_TRIAL

LENET_OBJECTIVE = "val_acc"  # what `lenet_fmnist train` returns: its best-epoch validation accuracy


@functools.cache
def open_trial(sweep_dir: Path, number: int, steps: int | None = None) -> optuna.Trial:
    """Trial `number` of the search in `sweep_dir`, its pruner told the steps the task reports."""
    location = read_location(sweep_dir)
    if location is None:
        raise UserError(f"{sweep_dir} holds no {SEARCH_FILE}: trial {number} cannot find its search.")
    storage = location.open(sweep_dir)
    with location.problems(sweep_dir):
        study = optuna.load_study(study_name=location.study_name, storage=storage)
        study.pruner = make_pruner(study.user_attrs[PRUNER_ATTR], steps)
        study_id = storage.get_study_id_from_name(location.study_name)
        return optuna.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, number))


def current_trial(steps: int | None = None) -> optuna.Trial | None:
    """The optuna.Trial this Hydra job runs as, when it is a trial of a search (hydra/sweeper=optuna);
    None otherwise (a single run, a plain sweep). Report with `trial.report(value, step)`; when
    `trial.should_prune()` is true, raise optuna.TrialPruned and the trial ends pruned. `steps`:
    how many steps the task reports at most (the hyperband pruner's budget)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    number = hydra_cfg.job.env_set.get(SEARCH_TRIAL)
    return None if number is None else open_trial(Path(str(hydra_cfg.sweep.dir)), int(number), steps)


def trial_reporter(sweep_dir: Path, number: int, epochs: int) -> Callable[[dict[str, Any]], None]:
    """train.EpochCallback for trial `number` of the search in `sweep_dir`: reports each epoch's
    validation accuracy to the study; raises Pruned when the pruner stops the trial (never after
    the last epoch, which completes the run anyway)."""
    trial = open_trial(sweep_dir, number, epochs)
    study = trial.study
    if [d.name for d in study.directions] != ["MAXIMIZE"]:
        raise UserError(
            "lenet_fmnist train returns its best-epoch validation accuracy, one number to maximise, but the search "
            f"asks to {', '.join(d.name.lower() for d in study.directions)}: set hydra.sweeper.direction=maximize "
            "(experiment=search does)."
        )
    if study.metric_names is None:  # for the dashboard and search.md; every trial would write the same
        with warnings.catch_warnings():  # Optuna calls metric names experimental: no news to the user
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([LENET_OBJECTIVE])

    def report(record: dict[str, Any]) -> None:
        epoch, value = record["epoch"], record["val_acc"]
        trial.report(value, epoch)
        if epoch < epochs and trial.should_prune():
            raise Pruned(
                f"Trial {number} pruned after epoch {epoch} of {epochs}: validation accuracy {value:.4f} is "
                "below what the pruner asks of other trials at this epoch."
            )

    return report
