"""LeNet's side of a hyperparameter search (hydra/sweeper=optuna, the hydra-optuna-pruning-sweeper
package): what `lenet_fmnist train` does as a search's trial, through the sweeper's public API
only (the task's return value, `current_trial()`, its exceptions and `hydra.sweeper.check_config`).

- `train` returns its best-epoch validation accuracy: the objective, to maximise;
- `epoch_reporter` reports each epoch's validation accuracy and raises Pruned when told;
- `as_search_error` tells the sweeper how a trial ended (pruned, or stopped by the machine);
- `check_search_config` is experiment=search's check_config: no search without validation.

The sweeper is the `search` extra's; without it, `current()` is None and nothing here imports it.
"""

from __future__ import annotations

import importlib.util
import warnings
from typing import TYPE_CHECKING

from lenet_fmnist.run.endings import TrialEnd, ending_of
from lenet_fmnist.run.errors import Pruned, UserError
from lenet_fmnist.run.validation import refuse_search_without_validation

if TYPE_CHECKING:
    import optuna
    from omegaconf import DictConfig

    from lenet_fmnist.config import TrainConfig
    from lenet_fmnist.run.metrics_file import EpochRecord
    from lenet_fmnist.training.trainer import EpochCallback

OBJECTIVE = "val_acc"  # what `train` returns, by this name in the study: its best-epoch validation accuracy


def current(steps: int | None = None) -> optuna.Trial | None:
    """The search's trial this job runs as; None outside a search or without the sweeper."""
    if importlib.util.find_spec("optuna_pruning_sweeper") is None:
        return None
    from optuna_pruning_sweeper import current_trial

    return current_trial(steps)


def as_search_error(error: BaseException) -> BaseException:
    """What the sweeper is told when a trial's task ended with `error`, as endings.ENDINGS says: a
    pruned trial, a search that stops and asks the trial again on resume (a full disk), or a
    failed trial with the error's message."""
    end = ending_of(error).trial
    if end is TrialEnd.pruned:
        import optuna

        return optuna.TrialPruned(str(error))
    if end is TrialEnd.stop_search:
        from optuna_pruning_sweeper import StopSearch

        return StopSearch(str(error))
    return error


def check_search_config(cfg: DictConfig) -> None:
    """hydra.sweeper.check_config of experiment=search: a trial's composed config must hold out
    validation images, which its objective and its pruner read."""
    refuse_search_without_validation([cfg.data.val_size])


def _refuse_other_directions(trial: optuna.Trial) -> None:
    directions = [d.name.lower() for d in trial.study.directions]
    if directions != ["maximize"]:
        raise UserError(
            "lenet_fmnist train returns its best-epoch validation accuracy, one number to maximise, but the search "
            f"asks to {', '.join(directions)}: set hydra.sweeper.direction=maximize (experiment=search does)."
        )


def epoch_reporter(cfg: TrainConfig) -> EpochCallback | None:
    """train.EpochCallback of the search's trial this job runs as (None outside a search): reports
    each epoch's validation accuracy to the study; raises Pruned when the pruner stops the trial
    (never after the last epoch, which completes the run anyway)."""
    trial = current(steps=cfg.epochs)
    if trial is None:
        return None
    # The sweeper's check_config refused data.val_size=0 before any trial where the search set it
    # (experiment=search); a plain search, or a custom search space, may still set it.
    refuse_search_without_validation([cfg.data.val_size])
    _refuse_other_directions(trial)
    if trial.study.metric_names is None:  # for the dashboard and search.md; every trial would write the same
        import optuna

        with warnings.catch_warnings():  # Optuna calls metric names experimental: no news to the user
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            trial.study.set_metric_names([OBJECTIVE])

    def report(record: EpochRecord) -> None:
        epoch, value = record.epoch, getattr(record, OBJECTIVE)
        trial.report(value, epoch)
        if epoch < cfg.epochs and trial.should_prune():
            raise Pruned(
                f"Trial {trial.number} pruned after epoch {epoch} of {cfg.epochs}: validation accuracy {value:.4f} "
                "is below what the pruner asks of other trials at this epoch."
            )

    return report
