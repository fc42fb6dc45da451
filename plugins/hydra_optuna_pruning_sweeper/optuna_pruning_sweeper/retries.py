"""Which trials of a study a search counts, and which a resumed search asks again: trials a dead
search left running (marked failed) and trials whose task raised StopSearch (the machine stopped
them, e.g. a full disk), each once; the trial asked in its place counts instead.
"""

from __future__ import annotations

import logging

import optuna
from optuna.trial import FrozenTrial, TrialState

from optuna_pruning_sweeper.names import RETRY_OF_ATTR, STOPPED_ATTR

log = logging.getLogger(__name__)

ENDED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
GRID_ATTRS = ("grid_id", "search_space")  # the grid sampler's system attributes of a trial


def _asked_again(trial: FrozenTrial) -> bool:
    """Whether a resumed search asks the trial's values again instead of counting it: a dead
    search left it running, or its task raised StopSearch."""
    return trial.state is TrialState.RUNNING or bool(trial.user_attrs.get(STOPPED_ATTR))


def _retried(trials: list[FrozenTrial]) -> set[int]:
    """The numbers of the trials whose values were asked again."""
    return {t.user_attrs[RETRY_OF_ATTR] for t in trials if RETRY_OF_ATTR in t.user_attrs}


def ended(study: optuna.Study) -> int:
    """Trials that count towards n_trials: complete, pruned or failed, but not those asked again
    (their new trials count)."""
    trials = study.get_trials(deepcopy=False)
    retried = _retried(trials)
    return sum(t.state in ENDED and not _asked_again(t) and t.number not in retried for t in trials)


def retry_abandoned(study: optuna.Study) -> None:
    """Ask again the values of the trials a dead search left running (marked failed) and of those
    whose task raised StopSearch (a full disk), once each."""
    trials = study.get_trials(deepcopy=False)
    retried = _retried(trials)
    for trial in trials:
        if not _asked_again(trial) or trial.number in retried:
            continue
        if trial.state is TrialState.RUNNING:
            log.warning("Trial %d was left running by an earlier search: marked failed, asked again.", trial.number)
            study.tell(trial.number, state=TrialState.FAIL)
        else:
            log.warning("Trial %d stopped an earlier search (StopSearch): asked again.", trial.number)
        _ask_again(study, trial)


def _ask_again(study: optuna.Study, trial: FrozenTrial) -> None:
    """Optuna's recipe for a retry (its RetryFailedTrialCallback's): a waiting trial with the same
    values, carrying the grid sampler's system attributes, by which it knows which point of its
    grid a trial runs (without them, looking for them when one point is left, it stops the search
    with a KeyError)."""
    grid = {key: value for key, value in trial.system_attrs.items() if key in GRID_ATTRS}
    retry = optuna.trial.create_trial(
        state=TrialState.WAITING,
        params=trial.params,
        distributions=trial.distributions,
        user_attrs={RETRY_OF_ATTR: trial.number},
        system_attrs=grid,
    )
    study.add_trial(retry)
