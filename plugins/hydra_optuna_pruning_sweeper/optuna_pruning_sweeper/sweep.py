"""The search loop: ask trials in batches, launch them through Hydra's launcher, tell each its
outcome, and resume after a crash (trials a dead search left running are marked failed and asked
again, and so are trials the machine stopped, e.g. on a full disk, which also stop the search).

The objective is what the task function returns (Hydra's convention): a number, or one per
objective. A task that raises fails its trial, with the exception's message kept in the study;
one that raises optuna.TrialPruned was pruned; one that raises StopSearch stops the search.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig
from optuna.trial import TrialState

from optuna_pruning_sweeper.errors import StopSearch, SweeperError
from optuna_pruning_sweeper.names import (
    ERROR_ATTR,
    OVERRIDES_ATTR,
    RESUME_OVERRIDE,
    RUN_DIR_ATTR,
    STOPPED_ATTR,
    TRIAL_ENV,
    key_of,
)
from optuna_pruning_sweeper.retries import ended, retry_abandoned
from optuna_pruning_sweeper.settings import Settings
from optuna_pruning_sweeper.space import Space, trial_overrides

log = logging.getLogger(__name__)

Launch = Callable[[list[list[str]], int], Sequence[JobReturn]]  # (overrides per job, first job number)
CustomSpace = Callable[[DictConfig, optuna.Trial], Mapping[str, Any] | None]


@dataclass(frozen=True)
class Sweep:
    """What the loop needs from the sweeper besides its settings."""

    space: Space
    launch: Launch
    config: DictConfig  # the sweep's, handed to the custom search space
    # Keys the app keeps out of its run directories' names (Hydra's exclude_keys), where those names
    # hold the job's number; None where they do not: there every override must stay in them, or two
    # trials could share a directory.
    unnamed: tuple[str, ...] | None
    custom: CustomSpace | None = None


@dataclass(frozen=True)
class Outcome:
    state: TrialState
    values: list[float] | None = None
    message: str = ""  # why it failed or was pruned
    stopped: bool = False  # its task raised StopSearch (a full disk): the search stops, resume asks it again


# ---- asking ----------------------------------------------------------------------------------


def _custom_values(sweep: Sweep, trial: optuna.Trial) -> dict[str, Any]:
    if sweep.custom is None:
        return {}
    try:
        extra = sweep.custom(sweep.config, trial)
    except SweeperError:
        raise
    except Exception as error:
        raise SweeperError(
            f"hydra.sweeper.custom_search_space={sweep.space.custom} raised {type(error).__name__} while configuring "
            f"trial {trial.number}: {error}"
        ) from None
    if extra is not None and not isinstance(extra, Mapping):
        raise SweeperError(
            f"hydra.sweeper.custom_search_space={sweep.space.custom} returned a {type(extra).__name__}; it must return "
            "None or a dict of further overrides (key: value)."
        )
    return dict(extra or {})


def _keep_fixed(trial: optuna.Trial, space: Space) -> None:
    """The fixed overrides' values in the trial's user attributes, by key, as upstream's sweeper keeps
    them (a custom search space may read them there)."""
    for override in space.fixed:
        key, equals, value = override.partition("=")
        if equals and not key.startswith("~"):
            trial.set_user_attr(key, value)


def ask(study: optuna.Study, sweep: Sweep) -> tuple[optuna.Trial, list[str]]:
    """A new trial and its overrides: the space's values, then the custom search space's."""
    trial = study.ask(sweep.space.distributions)
    try:
        _keep_fixed(trial, sweep.space)
        extra = _custom_values(sweep, trial)
        fixed = {key_of(o) for o in sweep.space.fixed}
        clash = sorted(fixed & {key_of(key) for key in [*trial.params, *extra]})
        if clash:
            raise SweeperError(
                f"hydra.sweeper.custom_search_space={sweep.space.custom} sets {', '.join(clash)}, which the search "
                "passes to every trial as a fixed value: drop one of the two."
            )
    except SweeperError:
        study.tell(trial, state=TrialState.FAIL)
        raise
    overrides = trial_overrides(sweep.space, trial.params, extra)
    trial.set_user_attr(OVERRIDES_ATTR, overrides)
    return trial, overrides


def _job_overrides(sweep: Sweep, trial: optuna.Trial, overrides: list[str]) -> list[str]:
    """The job's overrides: the trial's, and its number for the task (current_trial). Where the run
    directories' names hold the job's number (the trial's), they leave out the fixed values and
    the floats (full precision is the study's): the number keeps them apart."""
    job = [*overrides, f"++hydra.job.env_set.{TRIAL_ENV}={trial.number}"]
    if sweep.unnamed is None:
        return job
    floats = [key_of(key) for key, value in trial.params.items() if isinstance(value, float)]
    unnamed = ",".join([*sweep.unnamed, *(key_of(o) for o in sweep.space.fixed), *floats])
    return [*job, f"hydra.job.config.override_dirname.exclude_keys=[{unnamed}]"]


# ---- telling ---------------------------------------------------------------------------------


def _objective(value: Any, directions: Sequence[str]) -> list[float]:
    """The task's return value as one number per objective (several: any sequence of numbers, a
    list, a tuple, a numpy array, a ListConfig); a SweeperError when it is not that."""
    many = len(directions) > 1
    try:
        values = list(value) if many and not isinstance(value, str | bytes | Mapping) else [value]
        if len(values) == len(directions) and not any(isinstance(v, str | bytes | bool) or v is None for v in values):
            return [float(v) for v in values]
    except (TypeError, ValueError):
        pass
    wanted = f"a sequence of {len(directions)} numbers (a list, a tuple, an array)" if many else "a number"
    shown = f"[{', '.join(directions)}]" if many else directions[0]
    raise SweeperError(
        f"The task returned {value!r} ({type(value).__name__}); for hydra.sweeper.direction={shown} the "
        f"task function (the one decorated with @hydra.main) must return the objective: {wanted}."
    )


def _raised(job: JobReturn) -> Exception | None:
    """What a failed job's task raised: JobReturn.return_value raises it, after a line of its own
    on stderr ("Error executing job with overrides: ..."), which says less than the trial's
    message and is kept out of the user's stderr."""
    if job.status is not JobStatus.FAILED:
        return None
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            job.return_value  # noqa: B018  (the property raises the task's exception)
        except Exception as error:
            return error
    return None


def outcome(job: JobReturn, directions: Sequence[str]) -> Outcome:
    """How the trial ended. A bad return value raises SweeperError: the task needs fixing."""
    if job.status is JobStatus.COMPLETED:
        values = _objective(job.return_value, directions)
        if any(math.isnan(v) for v in values):
            return Outcome(TrialState.FAIL, message=f"the task returned {job.return_value!r}")
        return Outcome(TrialState.COMPLETE, values)
    error = _raised(job)
    if isinstance(error, optuna.TrialPruned):
        return Outcome(TrialState.PRUNED, message=str(error))
    if error is None:
        return Outcome(TrialState.FAIL, message=f"the job ended with status {job.status.name}")
    text = " ".join(str(error).split())
    if isinstance(error, StopSearch):
        return Outcome(TrialState.FAIL, message=text, stopped=True)
    return Outcome(TrialState.FAIL, message=f"{type(error).__name__}: {text}")


def _tell(study: optuna.Study, trial: optuna.Trial, result: Outcome) -> None:
    try:
        study.tell(trial, result.values, state=result.state)
    except RuntimeError as error:  # the grid sampler stops the study when its grid is done
        if "Study.stop" not in str(error):
            raise


def _report(trial: optuna.Trial, result: Outcome, done: str) -> None:
    if result.state is TrialState.COMPLETE:
        shown = ", ".join(f"{v:.6g}" for v in result.values or [])
        log.info("Trial %d: %s %s", trial.number, shown, done)
    elif result.state is TrialState.PRUNED:
        log.info("Trial %d pruned %s", trial.number, done)
    else:
        log.warning("Trial %d failed: %s %s", trial.number, result.message, done)


def _launch(sweep: Sweep, asked: list[tuple[optuna.Trial, list[str]]]) -> list[JobReturn | Exception]:
    """Run consecutive trials as one batch of jobs. Hydra numbers a batch's jobs from the first
    number it is given, so each run directory's name starts with its trial's number."""
    jobs = [_job_overrides(sweep, trial, overrides) for trial, overrides in asked]
    try:
        return list(sweep.launch(jobs, asked[0][0].number))
    except SweeperError:
        raise
    except Exception as error:  # e.g. a scheduler that lost the jobs: the batch failed, the search goes on
        return [error] * len(asked)


def _consecutive(asked: list[tuple[optuna.Trial, list[str]]]) -> list[list[tuple[optuna.Trial, list[str]]]]:
    """Trials in runs of consecutive numbers (a trial asked again after a crash has an older one)."""
    runs: list[list[tuple[optuna.Trial, list[str]]]] = []
    for pair in asked:
        if runs and pair[0].number == runs[-1][-1][0].number + 1:
            runs[-1].append(pair)
        else:
            runs.append([pair])
    return runs


def _record(study: optuna.Study, trial: optuna.Trial, job: JobReturn | Exception, settings: Settings) -> Outcome:
    """Tell the study how the trial's job ended; a task that returned no objective raises SweeperError
    once the trial is told."""
    if not isinstance(job, JobReturn):
        result = Outcome(TrialState.FAIL, message=f"the launcher failed: {job}")
    else:
        run_dir = None if job.hydra_cfg is None else Path(str(job.hydra_cfg.hydra.runtime.output_dir)).name
        if run_dir is not None and run_dir != str(trial.number):  # Hydra's default subdir: the summary knows it
            trial.set_user_attr(RUN_DIR_ATTR, run_dir)  # one write less per trial where it is not needed
        try:
            result = outcome(job, settings.directions)
        except SweeperError as error:
            trial.set_user_attr(ERROR_ATTR, str(error))
            _tell(study, trial, Outcome(TrialState.FAIL))
            raise
    if result.state is TrialState.FAIL:
        trial.set_user_attr(ERROR_ATTR, result.message)
    if result.stopped:
        trial.set_user_attr(STOPPED_ATTR, True)
    _tell(study, trial, result)
    return result


def run_batch(study: optuna.Study, sweep: Sweep, settings: Settings, size: int) -> list[tuple[int, Outcome]]:
    """Ask `size` trials, run them at once, tell each its outcome; the failed trials' numbers and
    outcomes. A task that returned no objective stops the search once the batch is told."""
    failures: list[tuple[int, Outcome]] = []
    bad_return = None
    done = ended(study)  # counted once a batch: counting every trial's would read them all each time
    asked = [ask(study, sweep) for _ in range(size)]
    total = asked[-1][0].number + 1
    for run in _consecutive(asked):
        for (trial, _), job in zip(run, _launch(sweep, run), strict=True):
            try:
                result = _record(study, trial, job, settings)
            except SweeperError as error:
                bad_return = bad_return or error
                continue
            done += 1
            _report(trial, result, f"({done} of {total} ended)")
            if result.state is TrialState.FAIL:
                failures.append((trial.number, result))
    if bad_return is not None:
        raise bad_return
    return failures


def search(settings: Settings, study: optuna.Study, sweep: Sweep, n_trials: int) -> int:
    """Run trials until `n_trials` have ended; return how many failed. Stops when more than
    max_failure_rate of a batch's trials failed (upstream's rule)."""
    retry_abandoned(study)
    failed = 0
    while (left := n_trials - ended(study)) > 0:
        size = min(settings.n_jobs, left)
        failures = run_batch(study, sweep, settings, size)
        failed += len(failures)
        said = "; ".join(f"trial {number}: {result.message.rstrip('.')}" for number, result in failures)
        if any(result.stopped for _, result in failures):
            raise SweeperError(
                f"A trial stopped the search: {said}. Once the machine lets the trials run again, the same command "
                f"with {RESUME_OVERRIDE} asks the stopped trials again; every other trial is kept."
            )
        if len(failures) / size > settings.max_failure_rate:
            raise SweeperError(
                f"{len(failures)} of the {size} trial(s) of the last batch failed, more than "
                f"hydra.sweeper.max_failure_rate={settings.max_failure_rate} allows; the search stops. The study "
                f"keeps every trial: fix the cause and run the same command with {RESUME_OVERRIDE} (or allow "
                "failures with a larger max_failure_rate). Why they failed:\n\n" + "\n\n".join(causes(failures))
            )
    return failed


def causes(failures: Sequence[tuple[int, Outcome]]) -> list[str]:
    """One paragraph per error the failed trials' tasks raised, naming the trials it failed."""
    trials: dict[str, list[str]] = {}
    for number, result in failures:
        trials.setdefault(result.message, []).append(str(number))
    return [f"{'trial' if len(n) == 1 else 'trials'} {', '.join(n)}: {message}" for message, n in trials.items()]
